"""The one training loop: box-, point- or mixed-prompted or automatic SAM fine-tuning with checkpoints and resume.

What it does, in order: validates once before training (epoch 0: the starting model's
validation Dice and loss, so "fine-tuning did not help" is visible and the pretrained
model can win model selection), then per epoch: shuffles the items, runs micro-batches
(gradient accumulation over ``recipe.accumulate`` of them per optimiser step), steps the
learning-rate schedule per optimiser step (linear warm-up, then constant or polynomial
decay), validates, keeps the best model on the validation score of the recipe, writes
``last.pt`` (and ``best.pt`` when the score improved) atomically, and stops early after
``recipe.patience`` epochs without improvement.

Why this design:

* **Resume gives the same result as an uninterrupted run.** All randomness (shuffling,
  flips, box shifts, jitter) comes from one ``torch.Generator`` whose state is saved at
  every epoch end together with the model, optimiser, scheduler, grad-scaler and global
  torch RNG states and the history; a killed run restarts from the last finished epoch
  and draws exactly the numbers the uninterrupted run drew (``tests/test_train.py``
  checks bit-identical weights and history on the CPU). A kill mid-epoch loses that
  epoch's partial work only.
* **Decoder-only scopes train on cached image embeddings.** With a frozen encoder the
  embedding of a slice never changes, so each slice is encoded once (through
  :class:`samlab.models.Predictor`, keyed like it, so notebook 02's cached test
  embeddings are reused) instead of once per item and epoch -- the encoder is ~20x the
  decoder. The price, stated plainly: augmentations that change pixels cannot be applied
  to a cached embedding. With the cache, histogram equalisation and colour jitter are
  *off*; flips are applied only if ``cache_flips=True``, which encodes the three flipped
  copies of every training slice too (exact, 4x the one-off encoder cost); otherwise they
  are off as well. Box shifts act on the prompt, not the pixels, and always apply.
  :attr:`TrainResult.augmentations` records what was actually applied.
* **Frozen BatchNorm stays in eval mode.** TinyViT (LiteMedSAM, ViT-T) has BatchNorm;
  ``model.train()`` would update the running statistics of a frozen encoder and silently
  change it. :func:`set_train_mode` puts every BatchNorm without trainable parameters,
  and every fully frozen component, in eval mode.
* **Data parallel under torchrun, same numbers as one process.** In a process group
  (:mod:`samlab.train.distributed`) every rank draws the same epoch order and the same
  augmentations from the shared generator, trains on every W-th item through a
  ``DistributedDataParallel`` wrapper of the PEFT-adapted model (so only trainable
  parameters are synchronised), validates a share of the validation slices and sums the
  scores over ranks; rank 0 alone writes checkpoints. ``recipe.batch_size`` stays the
  global batch (the paper's 4), each rank taking B / W items per step; because both
  losses are per-image means, that steps exactly like one process with batch B
  (``tests/test_distributed.py`` checks the weights with two gloo processes on the CPU).
* **AMP only where it pays.** On CUDA the forward runs under autocast (bf16 where the
  GPU supports it, else fp16 with a gradient scaler); on the CPU it runs in fp32, so
  GPU settings never break a CPU run.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..metrics import dice as dice_score
from ..models import EmbeddingCache, LoadedModel, Predictor, prepare_image
from ..models.predictor import _geometry
from ..prompts import prompt_rng
from . import distributed as D
from .forward import _autocast, _TrainStep, encoder_is_trainable, set_train_mode, to_original
from .checkpoint import (
    CHECKPOINT_FORMAT,
    check_same_run,
    load_checkpoint,
    load_trainable_state,
    save_checkpoint,
    trainable_state,
)
from .data import (
    FLIPS,
    MIXED_BOX_PROBABILITY,
    SliceRecord,
    TrainItem,
    box_in_input_frame,
    class_values,
    classes_to_labels,
    clicks_in_input_frame,
    data_fingerprint,
    equalize,
    flip,
    jitter,
    labels_to_classes,
    make_items,
    stack_clicks,
    to_decoder_frame,
)
from .losses import segmentation_loss
from .recipes import Recipe

LAST, BEST = "last.pt", "best.pt"


@dataclass
class TrainResult:
    """What a training run produced (the model itself is left holding the best weights)."""

    history: list[dict]  # one row per epoch; epoch 0 = the model before training
    best_epoch: int
    best_score: float
    select_on: str
    stopped_early: bool
    augmentations: list[str]
    n_train_items: int
    n_val_items: int
    encoder_passes: int
    checkpoint_dir: Path | None
    resumed_from_epoch: int | None
    epoch_seconds: list[float] = field(default_factory=list)  # epochs run in this call
    mode: str = "box"  # the training mode (box, point, mixed, automatic)


# ----------------------------------------------------------------------------------- optimisation
def _lr_factor(warmup: int, decay: str, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if decay == "poly":
            return max(0.0, 1.0 - (step - warmup) / max(total_steps, 1)) ** 0.9
        return 1.0

    return factor


def _make_optimizer(params: list[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=recipe.lr, betas=tuple(recipe.betas), weight_decay=recipe.weight_decay)


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


# ----------------------------------------------------------------------------------- inputs
class _SliceInputs:
    """The image side of the slices: cached embeddings per (slice, flip), or prepared pixels."""

    def __init__(self, predictor: Predictor, slices: Sequence[SliceRecord], cached: bool, flips: Sequence[int],
                 progress: bool, desc: str):
        self.predictor, self.slices, self.cached = predictor, list(slices), cached
        spec = predictor.spec
        self.geometry = [_geometry(spec, *sl.image.shape) for sl in self.slices]
        self.features: dict[tuple[int, int], torch.Tensor] = {}
        if cached:
            todo = [(i, f) for i in range(len(self.slices)) for f in flips]
            for i, f in tqdm(todo, desc=desc, disable=not progress, leave=False):
                self.features[(i, f)] = predictor.embed(flip(self.slices[i].image, f)).features

    def pixels(self, index: int, flip_code: int, equalise: bool) -> torch.Tensor:
        image = flip(np.asarray(self.slices[index].image, dtype=np.float32), flip_code)
        if equalise:
            image = equalize(image)
        return prepare_image(self.predictor.spec, image)[0]


# ----------------------------------------------------------------------------------- the loop
class _Run:
    """State of one training run (kept out of :func:`train`'s signature for readability)."""

    def __init__(self, loaded: LoadedModel, train_slices, val_slices, structures, recipe: Recipe, mode: str,
                 device: torch.device, seed: int, use_cache: bool | None, cache: EmbeddingCache | None,
                 cache_flips: bool, min_object_px: int, progress: bool, ctx: D.DistContext,
                 structure_per_slice: bool = False):
        self.model = loaded.module
        self.ctx = ctx
        self.spec = loaded.spec
        self.recipe, self.mode, self.device, self.seed, self.progress = recipe, mode, device, seed, progress
        self.structures = {k: tuple(int(v) for v in vals) for k, vals in structures.items()}
        self.values = class_values(self.structures)
        self.train_items = make_items(train_slices, self.structures, mode, min_object_px)
        self.val_items = make_items(val_slices, self.structures, mode, min_object_px=0)
        if not self.train_items:
            raise ValueError("no training items: no structure of `structures` occurs in the training slices")
        if not self.val_items:
            raise ValueError("no validation items: no structure of `structures` occurs in the validation slices")
        # SupSAM's phase 1 (§2.3) trains one prompt per image: each epoch draws one structure of every slice.
        self.slice_groups: list[list[int]] | None = None
        if structure_per_slice:
            if mode == "automatic":
                raise ValueError("structure_per_slice draws a structure to prompt; automatic mode has no prompt")
            groups: dict[int, list[int]] = {}
            for k, item in enumerate(self.train_items):
                groups.setdefault(item.slice_index, []).append(k)
            self.slice_groups = list(groups.values())
        self.epoch_items = len(self.slice_groups) if self.slice_groups is not None else len(self.train_items)
        self.multimask = mode == "automatic"
        n_out = self.model.mask_decoder.num_multimask_outputs
        if self.multimask and n_out != len(self.values) + 1:
            raise ValueError(
                f"automatic mode predicts {len(self.values) + 1} classes (background + label values {self.values}) "
                f"but the mask decoder has {n_out} multimask outputs; call "
                f"samlab.peft.resize_mask_decoder_outputs(model, {len(self.values) + 1}) before apply_peft"
            )
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameters: apply samlab.peft.apply_peft first")
        self.encoder_trainable = encoder_is_trainable(self.model)
        if use_cache and self.encoder_trainable:
            raise ValueError("use_cache=True needs a frozen image encoder (a decoder-only scope); "
                             "this model trains encoder parameters")
        self.cached = (not self.encoder_trainable) if use_cache is None else bool(use_cache)
        self.augmentations = self._augmentations(cache_flips)
        flips = FLIPS if (self.cached and cache_flips and recipe.flips) else (0,)
        self.model.to(device)
        if cache is None and self.cached:
            cache = EmbeddingCache(max_items_in_memory=(len(train_slices) * len(flips) + len(val_slices)) + 8)
        self.predictor = Predictor(loaded, device=device, cache=cache if self.cached else None)
        calls = self.predictor.encoder_calls
        self.train_in = _SliceInputs(self.predictor, train_slices, self.cached, flips, progress, "embed train slices")
        self.val_in = _SliceInputs(self.predictor, val_slices, self.cached, (0,), progress, "embed val slices")
        self.encoder_passes = self.predictor.encoder_calls - calls
        self.low_res = 4 * int(self.model.prompt_encoder.image_embedding_size[0])
        self.optimizer = _make_optimizer(trainable, recipe)
        if recipe.batch_size % ctx.world_size:
            raise ValueError(f"recipe {recipe.name!r}: batch_size {recipe.batch_size} is the global batch and must be "
                             f"divisible by the number of processes ({ctx.world_size})")
        self.rank_batch = recipe.batch_size // ctx.world_size
        self.items_per_rank = D.padded_length(self.epoch_items, ctx) // ctx.world_size
        self.batches_per_epoch = math.ceil(self.items_per_rank / self.rank_batch)
        steps_per_epoch = math.ceil(self.batches_per_epoch / recipe.accumulate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_factor(recipe.warmup_iters, recipe.lr_decay, recipe.max_epochs * steps_per_epoch))
        self.autocast, amp_dtype = _autocast(device, recipe.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.step = _TrainStep(self.model, self.cached, self.encoder_trainable, self.multimask)
        self.train_step: nn.Module = self.step  # validation calls the plain module: no gradient to synchronise
        if ctx.enabled:
            # Frozen BatchNorm buffers never change (set_train_mode), so they need no broadcast; parameters
            # outside the loss (e.g. the IoU head when it is not trained) are legitimately unused.
            self.train_step = nn.parallel.DistributedDataParallel(
                self.step, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False, find_unused_parameters=True)
        self.meta = _jsonable({
            "model": self.spec.name,
            "weights_sha256": loaded.sha256,
            "init": loaded.init,
            "peft": asdict(self.model.samlab_peft) if getattr(self.model, "samlab_peft", None) else None,
            "mode": mode,
            "recipe": recipe.model_dump(mode="json"),
            "seed": seed,
            "cached": self.cached,
            "augmentations": self.augmentations,
            "structures": self.structures,
            "min_object_px": min_object_px,
            **({"structure_per_slice": True} if structure_per_slice else {}),
            "world_size": ctx.world_size,
            "train_data": data_fingerprint(train_slices, self.train_items),
            "val_data": data_fingerprint(val_slices, self.val_items),
        })

    def _augmentations(self, cache_flips: bool) -> list[str]:
        r = self.recipe
        applied, dropped = [], []
        if r.flips:
            (applied if (not self.cached or cache_flips) else dropped).append("flips")
        if r.hist_eq_p > 0:
            (dropped if self.cached else applied).append(f"hist_eq(p={r.hist_eq_p})")
        if r.jitter_brightness > 0 or r.jitter_contrast > 0:
            (dropped if self.cached else applied).append(
                f"jitter(brightness={r.jitter_brightness}, contrast={r.jitter_contrast})")
        if r.box_shift_px > 0 and self.mode in ("box", "mixed"):
            applied.append(f"box_shift(0..{r.box_shift_px}px)")
        if dropped:
            warnings.warn(
                f"training on cached embeddings: pixel augmentation(s) {dropped} of recipe {r.name!r} are not "
                "applied (set cache_flips=True for exact flips, or use_cache=False for all of them)",
                stacklevel=3,
            )
        return applied

    # ------------------------------------------------------------------ batches
    def _draw(self) -> tuple[int, bool, float, float, torch.Tensor | None, int | None]:
        r, g = self.recipe, self.generator
        flip_code = int(torch.randint(0, 4, (1,), generator=g)) if "flips" in self.augmentations else 0
        equalise = bool(torch.rand(1, generator=g) < r.hist_eq_p) if (r.hist_eq_p > 0 and not self.cached) else False
        b = c = 1.0
        if not self.cached and (r.jitter_brightness > 0 or r.jitter_contrast > 0):
            u = torch.rand(2, generator=g)
            b = 1.0 + (2 * float(u[0]) - 1) * r.jitter_brightness
            c = 1.0 + (2 * float(u[1]) - 1) * r.jitter_contrast
        shift = click_seed = None
        kind = self.mode
        if kind == "mixed":  # a box or a point, with equal probability (SupSAM's phase 1)
            kind = "box" if float(torch.rand(1, generator=g)) < MIXED_BOX_PROBABILITY else "point"
        if kind == "box" and r.box_shift_px > 0:
            shift = torch.randint(0, r.box_shift_px + 1, (4,), generator=g)
        if kind == "point":  # the click's own numpy generator, seeded from the run's (so resume redraws it)
            click_seed = int(torch.randint(0, 2**62, (1,), generator=g))
        return flip_code, equalise, b, c, shift, click_seed

    def _batch(self, items: Sequence[TrainItem], draws: Sequence[tuple]):
        """Inputs, targets and prompts of a micro-batch; an item with a click seed gets a point prompt, else a box."""
        images, targets, boxes, clicks, is_box = [], [], [], [], []
        for item, (flip_code, equalise, b, c, shift, click_seed) in zip(items, draws):
            sl = self.train_in.slices[item.slice_index]
            geometry = self.train_in.geometry[item.slice_index]
            if self.cached:
                images.append(self.train_in.features[(item.slice_index, flip_code)])
            else:
                pixels = self.train_in.pixels(item.slice_index, flip_code, equalise)
                if b != 1.0 or c != 1.0:
                    pixels = jitter(pixels, self.spec, geometry, b, c)
                images.append(pixels)
            labels = flip(np.asarray(sl.labels), flip_code)
            if self.mode == "automatic":
                targets.append(to_decoder_frame(labels_to_classes(labels, self.values), geometry, self.low_res,
                                                integer=True))
                continue
            mask = np.isin(labels, item.values)
            is_box.append(click_seed is None)
            if click_seed is None:
                boxes.append(box_in_input_frame(mask, geometry, shift))
            else:
                clicks.append(clicks_in_input_frame(mask, geometry, np.random.default_rng(click_seed)))
            targets.append(to_decoder_frame(mask, geometry, self.low_res))
        return (torch.cat(images).to(self.device), torch.stack(targets).to(self.device),
                self._prompts(boxes, clicks, is_box))

    def _prompts(self, boxes: list[np.ndarray], clicks: list[np.ndarray], is_box: Sequence[bool] = ()
                 ) -> dict[str, Any]:
        """The decoder's prompt arguments of a batch: ``boxes`` (box mode), ``points`` (point mode), both and
        ``is_box`` (a mixed batch: which rows have the boxes, in order) or none (automatic mode)."""
        prompts: dict[str, Any] = {}
        if boxes:
            prompts["boxes"] = torch.from_numpy(np.stack(boxes)).to(self.device)
        if clicks:
            coords, labels = stack_clicks(clicks)
            prompts["points"] = (torch.from_numpy(coords).to(self.device), torch.from_numpy(labels).to(self.device))
        if boxes and clicks:
            prompts["is_box"] = torch.tensor(list(is_box), dtype=torch.bool, device=self.device)
        return prompts

    def _forward(self, inputs: torch.Tensor, prompts: dict[str, Any], train: bool):
        with self.autocast:
            return (self.train_step if train else self.step)(inputs, prompts.get("boxes"), prompts.get("points"),
                                                             prompts.get("is_box"))

    # ------------------------------------------------------------------ epochs
    def _epoch_order(self) -> list[int]:
        """Indices into the training items, shuffled: every item, or one drawn structure per slice."""
        g = self.generator
        if self.slice_groups is None:
            return torch.randperm(len(self.train_items), generator=g).tolist()
        picks = [group[int(torch.randint(0, len(group), (1,), generator=g))] for group in self.slice_groups]
        return [picks[i] for i in torch.randperm(len(picks), generator=g).tolist()]

    def train_epoch(self, epoch: int) -> float:
        r = self.recipe
        set_train_mode(self.model)
        order = self._epoch_order()
        n, world = len(order), self.ctx.world_size
        # Every rank draws the augmentations of every item, as one process does, so all generators stay in step.
        draws = [self._draw() for _ in range(n)]
        mine = D.shard(range(D.padded_length(n, self.ctx)), self.ctx)  # positions; those >= n are padding
        total, count, pending = 0.0, 0, 0
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(range(self.batches_per_epoch), desc=f"epoch {epoch}", leave=False,
                   disable=not (self.progress and self.ctx.is_main))
        for b in bar:
            positions = mine[b * self.rank_batch:(b + 1) * self.rank_batch]
            real = [p for p in positions if p < n]
            # The global step covers positions [b B, (b + 1) B); DDP averages the ranks' gradients, so a rank's
            # batch-mean loss is weighted by W x (its real items) / (the step's real items): the step then equals
            # one process's batch mean exactly, and padding (weight 0) only keeps the ranks' backward counts equal.
            step_items = min((b + 1) * r.batch_size, n) - b * r.batch_size
            weight = world * len(real) / step_items
            used = real or positions[:1]
            items = [self.train_items[order[p % n]] for p in used]
            inputs, targets, prompts = self._batch(items, [draws[p % n] for p in used])
            last_micro = pending + 1 == r.accumulate or b == self.batches_per_epoch - 1
            sync = contextlib.nullcontext() if (last_micro or not self.ctx.enabled) else self.train_step.no_sync()
            with sync:
                logits, iou = self._forward(inputs, prompts, train=True)
                loss, _ = segmentation_loss(r.loss, logits, targets, iou, r.train_iou_head and self.mode != "automatic")
                self.scaler.scale(loss * (weight / r.accumulate)).backward()
            pending += 1
            if last_micro:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                pending = 0
            value = float(loss.detach())
            if not math.isfinite(value):
                where = [(self.train_in.slices[i.slice_index].case_id, self.train_in.slices[i.slice_index].z,
                          i.structure) for i in items]
                raise FloatingPointError(
                    f"training loss became {value} in epoch {epoch}, batch {b} (items {where}); lower the learning "
                    "rate or disable AMP (recipe amp=False); the last checkpoint is intact"
                )
            total += value * len(real)
            count += len(real)
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
        total, count = D.all_reduce_sums([total, count], self.ctx)
        return total / count

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """(mean validation loss over items, mean 2D Dice at the original slice size)."""
        r = self.recipe
        self.model.eval()
        by_slice: dict[int, list[TrainItem]] = {}
        for item in self.val_items:
            by_slice.setdefault(item.slice_index, []).append(item)
        loss_sum, n_loss, dices = 0.0, 0, []
        mine = sorted(by_slice)[self.ctx.rank::self.ctx.world_size]  # every slice on exactly one rank
        for index in mine:
            items = by_slice[index]
            sl, geometry = self.val_in.slices[index], self.val_in.geometry[index]
            labels = np.asarray(sl.labels)
            inputs = self.val_in.features[(index, 0)] if self.cached else self.val_in.pixels(index, 0, False)
            if self.mode != "automatic":
                masks = [np.isin(labels, it.values) for it in items]
                prompts = self._val_prompts(sl, geometry, items, masks)
                targets = torch.stack([to_decoder_frame(m, geometry, self.low_res) for m in masks]).to(self.device)
                logits, iou = self._forward(inputs.to(self.device), prompts, train=False)
                loss, _ = segmentation_loss(r.loss, logits, targets, iou, r.train_iou_head)
                pred = (to_original(logits, geometry)[:, 0] > 0).cpu().numpy()
                dices += [dice_score(p, m) for p, m in zip(pred, masks)]
            else:
                target = to_decoder_frame(labels_to_classes(labels, self.values), geometry, self.low_res, integer=True)
                logits, _ = self._forward(inputs.to(self.device), {}, train=False)
                loss, _ = segmentation_loss(r.loss, logits, target[None].to(self.device))
                predicted = classes_to_labels(to_original(logits, geometry)[0].argmax(0).cpu().numpy(), self.values)
                for values in self.structures.values():
                    gt = np.isin(labels, values)
                    if gt.any():
                        dices.append(dice_score(np.isin(predicted, values), gt))
            loss_sum += float(loss) * len(items)
            n_loss += len(items)
        if not self.ctx.enabled:
            return loss_sum / n_loss, float(np.mean(dices))
        loss_sum, n_loss, dice_sum, n_dice = D.all_reduce_sums([loss_sum, n_loss, float(np.sum(dices)), len(dices)],
                                                               self.ctx)
        return loss_sum / n_loss, dice_sum / n_dice

    def _val_prompts(self, sl: SliceRecord, geometry, items: Sequence[TrainItem], masks: Sequence[np.ndarray]
                     ) -> dict[str, Any]:
        """The same prompts every epoch: clicks (and a mixed run's box-or-point choice) come from a generator keyed
        by the slice and structure, not from the run's."""
        boxes, clicks, is_box = [], [], []
        for mask, item in zip(masks, items):
            kind, rng = self.mode, None
            if kind == "mixed":
                rng = prompt_rng(self.seed, sl.case_id, sl.z, item.structure, "mixed")
                kind = "box" if rng.random() < MIXED_BOX_PROBABILITY else "point"
            elif kind == "point":
                rng = prompt_rng(self.seed, sl.case_id, sl.z, item.structure, "point_deep")
            is_box.append(kind == "box")
            if kind == "box":
                boxes.append(box_in_input_frame(mask, geometry))
            else:
                clicks.append(clicks_in_input_frame(mask, geometry, rng))
        return self._prompts(boxes, clicks, is_box)

    # ------------------------------------------------------------------ checkpoints
    def payload(self, epoch: int, history, best_epoch, best_score, finished: bool, stopped: bool) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "meta": self.meta,
            "epoch": epoch,
            "model": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"train": self.generator.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "history": history,
            "best_epoch": best_epoch,
            "best_score": best_score,
            "finished": finished,
            "stopped_early": stopped,
        }

    def restore(self, ck: dict, path: Path) -> None:
        check_same_run(ck["meta"], self.meta, path)
        load_trainable_state(self.model, ck["model"], path)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.generator.set_state(ck["rng"]["train"])
        torch.set_rng_state(ck["rng"]["torch"])
        if ck["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])


def _resume_message(path: Path, epoch: int, max_epochs: int, finished: bool, run: "_Run") -> str:
    """One line saying a run resumed, from which checkpoint and epoch, and whether the embeddings were reused.

    Why printed (not only returned in :class:`TrainResult`): a resumed run looks like a fresh one in
    the notebook's output otherwise, and a user comparing timings or losses must know it continued.
    """
    if not run.cached:
        embeddings = "no embedding cache (training on pixels)"
    elif run.encoder_passes == 0:
        embeddings = "embedding cache reused (0 encoder passes)"
    else:
        embeddings = f"embedding cache: {run.encoder_passes} slice(s) encoded anew, the rest reused"
    todo = "already finished, nothing to train" if finished else f"continuing at epoch {epoch + 1} of {max_epochs}"
    return f"resuming training from epoch {epoch} (checkpoint {path}): {todo}; {embeddings}"


def train(
    loaded: LoadedModel,
    train_slices: Sequence[SliceRecord],
    val_slices: Sequence[SliceRecord],
    structures: Mapping[str, Sequence[int]],
    recipe: Recipe,
    *,
    mode: str = "box",
    out_dir: str | Path | None = None,
    resume: bool = True,
    device: str | torch.device = "cpu",
    seed: int = 0,
    use_cache: bool | None = None,
    cache: EmbeddingCache | None = None,
    cache_flips: bool = False,
    min_object_px: int = 0,
    progress: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
    distributed: D.DistContext | None = None,
    structure_per_slice: bool = False,
) -> TrainResult:
    """Fine-tune ``loaded.module`` (already adapted with :func:`samlab.peft.apply_peft`) and return its history.

    Args:
        loaded: the model (``load_model`` + ``apply_peft``, keeping ``spec`` and ``sha256``).
        train_slices, val_slices: 2D slices (see :func:`samlab.train.data.slices_from_volume`).
        structures: structure name -> label values. Box mode trains one model on every structure
            (one item per structure and slice, a box from its ground truth); point mode likewise with a
            click per connected piece of the structure; automatic mode predicts every label value as a class.
        recipe: :data:`samlab.train.RECIPES` entry (possibly with overrides).
        mode: ``"box"`` (box-prompted), ``"point"`` (click-prompted), ``"mixed"`` (a box or a click per item
            with equal probability, drawn anew every epoch: SupSAM's phase 1) or ``"automatic"`` (prompt
            encoder called with no prompt).
        out_dir: where ``last.pt`` / ``best.pt`` go; ``None`` keeps everything in memory.
        resume: continue from ``out_dir/last.pt`` if it exists (it must come from the same run:
            model, weights, PEFT, mode, recipe, seed, data -- otherwise an error says what differs).
        use_cache: train on cached embeddings; ``None`` = whenever the encoder is frozen.
        cache: an :class:`~samlab.models.EmbeddingCache` to share (e.g. the run directory's).
        cache_flips: with the cache, also encode flipped slices so that flips stay exact.
        min_object_px: drop box- and point-mode training items with fewer foreground pixels.
        structure_per_slice: an epoch visits every training slice once, prompting one of its structures drawn
            anew each epoch (SupSAM's phase 1: one prompt per image), instead of every (slice, structure) item.
        on_epoch_end: called with each epoch's history row after its checkpoint is written (rank 0 only).
        distributed: this process's place in a data-parallel run; ``None`` = the initialised
            process group's (see :func:`samlab.train.distributed.init_from_env`), or a plain
            one-process run. ``recipe.batch_size`` is the global batch, split over the W ranks.

    The model ends in eval mode holding the best weights on the validation score
    (``recipe.select_on``; epoch 0, the untrained model, competes too).
    """
    ctx = distributed or D.DistContext.current()
    device = torch.device(device)
    if ctx.enabled and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)
    if ctx.enabled and not ctx.is_main:
        cache = None  # one writer for an on-disk cache; the other ranks keep their embeddings in memory
    run = _Run(loaded, train_slices, val_slices, structures, recipe, mode, device, seed, use_cache, cache,
               cache_flips, min_object_px, progress and ctx.is_main, ctx, structure_per_slice)
    select = recipe.select_on
    better = (lambda a, b: a > b) if select == "val_dice" else (lambda a, b: a < b)
    out = Path(out_dir) if out_dir is not None else None
    save = out is not None and ctx.is_main  # only rank 0 writes; every rank reads on resume
    history: list[dict] = []
    resumed_from, finished, stopped = None, False, False
    resuming = out is not None and resume and (out / LAST).is_file()
    D.barrier(ctx)  # every rank has decided before rank 0 writes a first checkpoint
    if resuming:
        ck = load_checkpoint(out / LAST)
        run.restore(ck, out / LAST)
        history, best_epoch, best_score = list(ck["history"]), ck["best_epoch"], ck["best_score"]
        finished, stopped = ck["finished"], ck["stopped_early"]
        best_state = load_checkpoint(out / BEST)["model"]
        resumed_from = ck["epoch"]
        if ctx.is_main:
            print(_resume_message(out / LAST, resumed_from, recipe.max_epochs, finished, run), flush=True)
    else:
        val_loss, val_dice = run.validate()
        history.append({"epoch": 0, "train_loss": None, "val_loss": val_loss, "val_dice": val_dice,
                        "lr": run.optimizer.param_groups[0]["lr"], "steps": 0})
        best_epoch, best_score, best_state = 0, history[0][select], trainable_state(run.model)
        if save:
            save_checkpoint({"format": CHECKPOINT_FORMAT, "meta": run.meta, "epoch": 0, "score": best_score,
                             "model": best_state}, out / BEST)
            save_checkpoint(run.payload(0, history, best_epoch, best_score, False, False), out / LAST)
    start = history[-1]["epoch"] + 1
    seconds: list[float] = []
    epochs = range(start, recipe.max_epochs + 1) if not finished else range(0)
    bar = tqdm(epochs, desc=f"train {run.spec.name} ({mode})", disable=not (progress and ctx.is_main))
    for epoch in bar:
        tick = time.perf_counter()
        train_loss = run.train_epoch(epoch)
        val_loss, val_dice = run.validate()
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
               "lr": run.optimizer.param_groups[0]["lr"], "steps": int(run.scheduler.last_epoch)}
        history.append(row)
        if better(row[select], best_score):
            best_epoch, best_score, best_state = epoch, row[select], trainable_state(run.model)
            if save:
                save_checkpoint({"format": CHECKPOINT_FORMAT, "meta": run.meta, "epoch": epoch, "score": best_score,
                                 "model": best_state}, out / BEST)
        stopped = recipe.patience is not None and epoch - best_epoch >= recipe.patience
        finished = stopped or epoch == recipe.max_epochs
        if save:
            save_checkpoint(run.payload(epoch, history, best_epoch, best_score, finished, stopped), out / LAST)
        seconds.append(time.perf_counter() - tick)
        bar.set_postfix(val_dice=f"{val_dice:.3f}", best=f"{best_epoch}")
        if on_epoch_end is not None and ctx.is_main:
            on_epoch_end(row)
        if stopped:
            break
    D.barrier(ctx)  # the last checkpoint is on disk before any rank returns (and perhaps exits)
    load_trainable_state(run.model, best_state, "best state")
    run.model.eval()
    return TrainResult(
        history=history, best_epoch=best_epoch, best_score=float(best_score), select_on=select,
        stopped_early=stopped, augmentations=run.augmentations, n_train_items=len(run.train_items),
        n_val_items=len(run.val_items), encoder_passes=run.encoder_passes, checkpoint_dir=out,
        resumed_from_epoch=resumed_from, epoch_seconds=seconds, mode=run.mode,
    )
