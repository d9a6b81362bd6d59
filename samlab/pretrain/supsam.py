"""Phase 1, task-expansive (SupSAM): prompt-based supervised pre-training on several labelled structure sets at once.

The 18-configuration study (§2.3, §4.2.1) trains SAM on 13 MRI datasets together before task-specific
fine-tuning: prompts simulated from the masks, the prompt encoder frozen, the image encoder and the
mask decoder trained in the vanilla way (SAM's own supervised stage), early stopping after 5 epochs
without validation improvement. The result is **SupSAM**.

Why no loop here: the training is exactly :func:`samlab.train.train` in box mode on an
``encoder_decoder``/``vanilla`` configuration (:func:`samlab.peft.apply_peft` freezes the prompt
encoder in every scope), so this module only does what is specific to phase 1 -- merging several
labelled sets into one label space (:func:`merge_label_sets`: set ``i``'s label ``v`` becomes
``v + offset_i``, its structure ``s`` becomes ``<set>/<s>``, so one box per structure and slice is
simulated from its own mask) -- and saves the encoder and decoder as a phase-1 checkpoint
(``init: supsam:<path>``). Prompts: each structure on each slice gets a box *or* a point prompt with equal
probability, drawn anew every epoch (the loop's ``mixed`` mode), and, as in the paper, an image is one example:
each epoch prompts one structure of every slice, drawn anew (``structure_per_slice``), so a slice is encoded
once per epoch rather than once per structure it holds. The paper draws the box-or-point choice per
contiguous region; here a structure's point prompt holds a click per region, and its box covers all of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..models import LoadedModel
from ..models.inits import default_init, save_init_checkpoint
from ..peft import apply_peft
from ..train import Recipe, SliceRecord, TrainResult, get_recipe, train

#: The paper's phase-1 stopping rule (§4.2.1) on top of the 18-configuration recipe; batch 3 as in the paper.
SUPSAM_RECIPE_OVERRIDES: dict[str, Any] = {"patience": 5, "batch_size": 3}


@dataclass(frozen=True)
class LabelledSet:
    """One labelled dataset or structure set: its training and validation slices and its structures."""

    name: str
    train: Sequence[SliceRecord]
    val: Sequence[SliceRecord]
    structures: Mapping[str, Sequence[int]]


def _relabel(slices: Sequence[SliceRecord], values: Sequence[int], offset: int, prefix: str) -> list[SliceRecord]:
    out = []
    for s in slices:
        labels = np.asarray(s.labels)
        new = np.zeros(labels.shape, dtype=np.int32)
        for v in values:
            new[labels == v] = v + offset
        out.append(SliceRecord(f"{prefix}/{s.case_id}", s.z, s.image, new, s.spacing))
    return out


def merge_label_sets(sets: Sequence[LabelledSet]) -> tuple[list[SliceRecord], list[SliceRecord], dict[str, tuple]]:
    """Several labelled sets -> one (train, val, structures) with disjoint label values and ``<set>/<name>`` structures.

    Label values no structure of a set names become background: a set labels only what it labels.
    """
    if not sets:
        raise ValueError("supervised pre-training needs at least one labelled set")
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"labelled set names must be distinct: {names}")
    train_all, val_all, structures = [], [], {}
    offset = 0
    for labelled in sets:
        values = sorted({int(v) for vals in labelled.structures.values() for v in vals})
        if not values or min(values) < 1:
            raise ValueError(f"set {labelled.name!r}: structures must name label values >= 1, got {values}")
        train_all += _relabel(labelled.train, values, offset, labelled.name)
        val_all += _relabel(labelled.val, values, offset, labelled.name)
        for structure, vals in labelled.structures.items():
            structures[f"{labelled.name}/{structure}"] = tuple(int(v) + offset for v in vals)
        offset += max(values)
    return train_all, val_all, structures


def supsam_recipe(name: str = "finetune_sam", **overrides: Any) -> Recipe:
    """The phase-1 recipe: ``name`` with the paper's early stopping (5 epochs) and batch 3, then ``overrides``."""
    return get_recipe(name, **{**SUPSAM_RECIPE_OVERRIDES, **overrides})


def pretrain_supervised(loaded: LoadedModel, sets: Sequence[LabelledSet], recipe: Recipe, *,
                        out_dir: str | Path | None = None, device: Any = "cpu", seed: int = 0,
                        progress: bool = True, mode: str = "mixed"
                        ) -> tuple[LoadedModel, TrainResult, dict[str, tuple]]:
    """Train ``loaded`` (encoder + decoder, vanilla; prompt encoder frozen) on every set at once.

    ``mode``: ``mixed`` (the paper: a box or a point prompt per structure and slice), or ``box`` / ``point``.

    Returns the model holding the best weights on the merged validation slices, the training record
    and the merged structures. Checkpoints (resumable) go to ``out_dir`` as in any training run.
    """
    train_slices, val_slices, structures = merge_label_sets(sets)
    apply_peft(loaded.module, "vanilla", "encoder_decoder")
    result = train(loaded, train_slices, val_slices, structures, recipe, mode=mode, out_dir=out_dir,
                   device=device, seed=seed, use_cache=False, progress=progress, structure_per_slice=True)
    return loaded, result, structures


def save_supsam(path: str | Path, loaded: LoadedModel, result: TrainResult, structures: Mapping[str, Sequence[int]],
                data: Mapping[str, Any] | None = None) -> Path:
    """The trained image encoder and mask decoder as a phase-1 checkpoint (``init: supsam:<path>``)."""
    base = loaded.init if loaded.init_name is not None else default_init(loaded.spec.name)
    state = {k: v for k, v in loaded.module.state_dict().items() if k.startswith(("image_encoder.", "mask_decoder."))}
    prompts = {"mixed": "box or point prompts (equal probability)", "box": "box prompts",
               "point": "point prompts"}.get(result.mode, f"{result.mode} prompts")
    meta = {"objective": f"prompt-based supervised ({prompts} from masks, prompt encoder frozen, vanilla)",
            "prompt_mode": result.mode,
            "history": result.history, "best_epoch": result.best_epoch, "best_score": result.best_score,
            "select_on": result.select_on, "stopped_early": result.stopped_early,
            "structures": {k: list(v) for k, v in structures.items()}, "base_weights_sha256": loaded.sha256,
            "data": dict(data or {})}
    return save_init_checkpoint(path, "supsam", loaded.spec.name, base, state, meta)
