"""Training recipes: the two papers' fine-tuning protocols as validated, frozen profiles.

Why profiles instead of keyword arguments: a recipe is the part of a methods section
that says *how* a model was trained (loss, optimiser, schedule, batch, augmentation,
stopping rule). Keeping each paper's recipe as one named, validated object makes a
run's protocol a single value that is written into every checkpoint, compared on
resume and reported next to the results; a typo or an impossible value fails before
the first step.

``finetune_sam`` -- Gu et al., "finetune-sam-18-configs", §4.1.1 "Implementation
details", and the authors' code (mazurowski-lab/finetune-SAM):
  Dice + cross-entropy with equal weights; AdamW, base learning rate 1e-4, weight decay
  0.1; a linear warm-up over the first 200 iterations, then (authors' code) polynomial
  decay ``(1 - t / T) ** 0.9`` over the remaining iterations of ``max_epochs``; batch 4;
  augmentation: histogram equalisation (torchvision ``RandomEqualize(p=0.1)``) and colour
  jitter (brightness 0.3, contrast 0.3 -- saturation and hue jitter do nothing on a grey
  image replicated to RGB, so they are not modelled); at most 200 epochs; stop after 20
  epochs without a better validation Dice; keep the best-validation-Dice model.

``litemedsam_refine`` -- the pelvic MedSAM study, §2.1 (loss) and §2.4 (refinement):
  ``L = L_Dice + L_BCE + L_IoU`` with the paper's squared-denominator soft Dice and soft
  IoU (``L_IoU = 1 - soft IoU``), plus, as LiteMedSAM's own training script does, a mean
  squared error between the IoU-prediction head and the true IoU of the thresholded
  mask (``train_iou_head``; box mode only); Adam with betas (0.9, 0.999), learning rate
  5e-5, weight decay 0.01 (the paper says "Adam"; LiteMedSAM's script uses AdamW with
  the same numbers -- ``optimizer="adamw"`` reproduces that); batch 4; random
  left-right / up-down flips; box prompts from the ground truth with a random 0-5 px
  outward shift of every side (LiteMedSAM's ``bbox_shift=5``, in the model's 256 px
  input frame); about 300 epochs; the checkpoint with the best validation *loss*.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Recipe(BaseModel):
    """One complete training protocol (frozen; derive variants with :meth:`with_overrides`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    loss: Literal["dice_ce", "dice_bce_iou"] = Field(
        description="dice_ce: Dice + (binary) cross-entropy, equal weights; dice_bce_iou: + (1 - soft IoU)")
    train_iou_head: bool = Field(False, description="MSE between the IoU head and the true IoU (box mode only)")
    optimizer: Literal["adamw", "adam"]
    lr: float = Field(gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(ge=0)
    warmup_iters: int = Field(0, ge=0, description="linear warm-up over this many optimiser steps")
    lr_decay: Literal["constant", "poly"] = Field("constant", description="after warm-up: constant or (1-t/T)^0.9")
    batch_size: int = Field(4, ge=1)
    accumulate: int = Field(1, ge=1, description="gradient accumulation: micro-batches per optimiser step")
    max_epochs: int = Field(ge=1)
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without a better score")
    select_on: Literal["val_dice", "val_loss"] = "val_dice"
    hist_eq_p: float = Field(0.0, ge=0, le=1, description="probability of histogram equalisation")
    jitter_brightness: float = Field(0.0, ge=0, lt=1)
    jitter_contrast: float = Field(0.0, ge=0, lt=1)
    flips: bool = Field(False, description="random left-right and up-down flips (p = 0.5 each)")
    box_shift_px: int = Field(0, ge=0, description="each box side moves outward by U{0..n} px (model input frame)")
    amp: bool = Field(True, description="mixed precision on CUDA (bf16 where supported, else fp16); ignored on CPU")

    @property
    def label(self) -> str:
        """The recipe as the results schema records it: name, epoch budget, and the learning rate and batch
        where they differ from the named recipe's, because two runs of one recipe with different epoch counts
        or step sizes are different conditions (few-shot's "full" point vs the grid; automatic vs box mode)."""
        base = RECIPES.get(self.name)
        changed = []
        if base is not None and self.lr != base.lr:
            changed.append(f"lr {self.lr:g}")
        if base is not None and self.batch_size != base.batch_size:
            changed.append(f"batch {self.batch_size}")
        return ", ".join([self.name, f"{self.max_epochs} epochs", *changed])

    @model_validator(mode="after")
    def _betas_in_range(self) -> "Recipe":
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        return self

    @property
    def pixel_augmentation(self) -> bool:
        """True if the recipe changes pixels (these cannot be applied to cached embeddings)."""
        return self.hist_eq_p > 0 or self.jitter_brightness > 0 or self.jitter_contrast > 0 or self.flips

    def with_overrides(self, **overrides: Any) -> "Recipe":
        """A validated copy with some fields changed; unknown or invalid fields raise ValueError."""
        if not overrides:
            return self
        try:
            return Recipe(**{**self.model_dump(), **overrides})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
            )
            raise ValueError(
                f"invalid override(s) of recipe {self.name!r}: {problems}; fields: {', '.join(Recipe.model_fields)}"
            ) from None


RECIPES: dict[str, Recipe] = {
    "finetune_sam": Recipe(
        name="finetune_sam",
        loss="dice_ce",
        optimizer="adamw",
        lr=1e-4,
        weight_decay=0.1,
        warmup_iters=200,
        lr_decay="poly",
        batch_size=4,
        max_epochs=200,
        patience=20,
        select_on="val_dice",
        hist_eq_p=0.1,
        jitter_brightness=0.3,
        jitter_contrast=0.3,
    ),
    "litemedsam_refine": Recipe(
        name="litemedsam_refine",
        loss="dice_bce_iou",
        train_iou_head=True,
        optimizer="adam",
        lr=5e-5,
        betas=(0.9, 0.999),
        weight_decay=0.01,
        batch_size=4,
        max_epochs=300,
        patience=None,
        select_on="val_loss",
        flips=True,
        box_shift_px=5,
    ),
}


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """The named recipe, optionally with validated overrides (e.g. ``max_epochs=4``)."""
    if name not in RECIPES:
        raise ValueError(f"unknown training recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name].with_overrides(**overrides)
