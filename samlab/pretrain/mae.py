"""Phase 1, task-agnostic (SSLSAM): masked-image pre-training of a SAM-family image encoder on unlabelled slices.

The 18-configuration study (§2.4, §4.3.1) pre-trains SAM's ViT-B encoder with MAE (He et al., 2022)
on unlabelled MRI slices, with MAE's mask ratio (75 %), its light reconstruction decoder (discarded
afterwards) and its schedule (AdamW, betas 0.9/0.95, weight decay 0.05, base lr 1.5e-4 x batch / 256,
linear warm-up then cosine decay), batch 2 x 16 accumulated steps per GPU. The encoder that comes out
(**SSLSAM**) replaces SAM's before task-specific fine-tuning.

Why SimMIM-style masking instead of MAE's token dropping: MAE *removes* the masked tokens and runs
the encoder on the visible ones only, which needs a plain ViT. LiteMedSAM's TinyViT (the CPU member
of the ViT-T family) is hierarchical, with convolutions (MBConv) and windowed attention on a fixed
grid, so tokens cannot be dropped. Following SimMIM (Xie et al., 2022), masked patches are kept but
their patch embeddings are replaced by one learnable mask token, right after the patch embedding;
the encoder then sees nothing of a masked patch. The same hook works on SAM's plain ViT (ViT-B/H),
where it is SimMIM-for-ViT. Everything else is MAE's: 16-px patches (in model-input pixels), 75 %
masked at random per image, the loss (MSE) on the masked patches only, and the schedule above. The target
is the raw input pixels by default: MAE's per-patch normalised target (``norm_pix_loss``, its best
ImageNet variant, +0.5 top-1 in its Table 1d) divides by each patch's standard deviation, and medical
slices are full of near-uniform patches (air, homogeneous organs, the phantom's smooth fields) whose
normalised "texture" is amplified noise: with it on, 10 steps on phantom slices left the loss at the
predict-the-mean value (1.000 -> 0.998). It stays a recipe option (the paper profile turns it on). The reconstruction head is light (a 3x3 and a 1x1
convolution and a pixel shuffle from the encoder's 256-channel neck output); SimMIM shows a head this
small suffices, and MAE's 8-block transformer decoder needs the visible-token sequence a
hierarchical encoder does not produce.

Encoder BatchNorm (TinyViT's ``Conv2d_BN``) keeps its running statistics: with batches of 2-4
masked images, updating them would re-estimate them from inputs that are 75 % mask token. Its
affine parameters train.

Resume: with ``out_dir``, every ``checkpoint_every`` steps (and the last) the whole state -- encoder, head and
mask token, optimiser, schedule, the batch generator's and torch's RNG states, the unvisited part of the epoch's
order and the loss history -- goes to ``out_dir/mae_last.pt`` (atomically, tensors and plain values only); a rerun
with the same arguments continues from there and produces the same steps as an uninterrupted run. A checkpoint
from different arguments (recipe, seed, images, base weights, process count) is refused, naming what differs.

Output: :func:`save_sslsam` writes the encoder's weights as a phase-1 checkpoint
(:mod:`samlab.models.inits`), which ``init: sslsam:<path>`` loads into any configuration of the same
model (decoder-only or encoder + decoder, vanilla / LoRA / Adapter).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import LoadedModel, prepare_image
from ..models.inits import default_init, save_init_checkpoint
from ..train import distributed as D
from ..train.checkpoint import CHECKPOINT_FORMAT, check_same_run, load_checkpoint, save_checkpoint

#: The MAE paper's pre-training settings (He et al., 2022, Table 8 / Appendix A.1), as the 18-config study uses.
MAE_PAPER = {"mask_ratio": 0.75, "patch_size": 16, "blr": 1.5e-4, "weight_decay": 0.05, "betas": (0.9, 0.95),
             "warmup": "40 of 800 epochs (5 %)", "schedule": "cosine", "norm_pix_loss": True}


@dataclass(frozen=True)
class MAERecipe:
    """How phase 1 trains; defaults are MAE's, except ``steps`` / ``batch_size`` (a run's budget)."""

    steps: int = 50
    batch_size: int = 4
    accumulate: int = 1
    mask_ratio: float = 0.75
    patch_size: int = 16
    blr: float = 1.5e-4
    lr: float | None = None  # absolute learning rate; None = blr * batch_size * accumulate * world / 256
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_fraction: float = 0.05
    norm_pix_loss: bool = False
    flips: bool = True
    head_hidden: int = 128
    amp: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.steps < 1 or self.batch_size < 1 or self.accumulate < 1 or self.patch_size < 1:
            raise ValueError("steps, batch_size, accumulate and patch_size must be >= 1")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    def learning_rate(self, world_size: int = 1) -> float:
        """MAE's linear scaling rule, unless an absolute ``lr`` is given."""
        if self.lr is not None:
            return float(self.lr)
        return self.blr * self.batch_size * self.accumulate * world_size / 256


def _patch_embed_layout(encoder: nn.Module) -> tuple[int, bool]:
    """(channels of the patch embedding, channels-last?) from one 32-px forward of ``encoder.patch_embed``."""
    embed = encoder.patch_embed
    was_training = embed.training
    embed.eval()
    param = next(encoder.parameters())
    with torch.no_grad():
        out = embed(torch.zeros(1, 3, 32, 32, device=param.device, dtype=param.dtype))
    embed.train(was_training)
    if out.ndim != 4:
        raise ValueError(f"unsupported patch embedding output of shape {tuple(out.shape)} (expected 4-D)")
    channels_last = out.shape[1] == out.shape[2] and out.shape[2] != out.shape[3]  # SAM's ViT: (B, H, W, C)
    return (int(out.shape[3]) if channels_last else int(out.shape[1])), channels_last


class MaskedImageModel(nn.Module):
    """Encoder + mask token (after the patch embedding) + light pixel head, for masked-image pre-training.

    ``forward(images, mask)``: images (B, C, S, S) in the model's input frame, mask (B, S/p, S/p)
    with 1 = masked patch. Returns (reconstruction (B, C, S, S), loss on the masked patches).
    """

    def __init__(self, encoder: nn.Module, image_size: int, feature_size: int, patch_size: int = 16,
                 in_chans: int = 3, neck_channels: int = 256, head_hidden: int = 128, norm_pix_loss: bool = True):
        super().__init__()
        if image_size % patch_size or image_size % feature_size:
            raise ValueError(f"image size {image_size} must be a multiple of patch size {patch_size} and of the "
                             f"feature grid {feature_size}")
        self.encoder = encoder
        self.image_size, self.patch_size, self.in_chans = image_size, patch_size, in_chans
        self.norm_pix_loss = norm_pix_loss
        dim, self.channels_last = _patch_embed_layout(encoder)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        stride = image_size // feature_size
        self.head = nn.Sequential(
            nn.Conv2d(neck_channels, head_hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(head_hidden, stride * stride * in_chans, 1), nn.PixelShuffle(stride))
        self._mask: torch.Tensor | None = None
        self._hook = encoder.patch_embed.register_forward_hook(self._replace_masked)

    def _replace_masked(self, module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
        if self._mask is None:
            return out
        grid = out.shape[1:3] if self.channels_last else out.shape[2:4]
        m = F.interpolate(self._mask[:, None].to(out.dtype), size=tuple(grid), mode="nearest")  # (B, 1, h, w)
        token = self.mask_token.to(out.dtype)
        if self.channels_last:
            m = m.permute(0, 2, 3, 1)
            return out * (1 - m) + token.view(1, 1, 1, -1) * m
        return out * (1 - m) + token.view(1, -1, 1, 1) * m

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, L, p*p*C)."""
        b, c, s, _ = images.shape
        p, g = self.patch_size, s // self.patch_size
        return images.reshape(b, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * c)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        b, n, _ = patches.shape
        p, g, c = self.patch_size, int(math.isqrt(n)), self.in_chans
        return patches.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._mask = mask
        try:
            features = self.encoder(images)
        finally:
            self._mask = None
        pred = self.head(features.float() if features.dtype != images.dtype else features)
        target = self.patchify(images.float())
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = (self.patchify(pred.float()) - target).pow(2).mean(-1)
        flat = mask.reshape(mask.shape[0], -1).float()
        loss = (per_patch * flat).sum() / flat.sum().clamp_min(1)
        return pred, loss

    def to_pixels(self, pred: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """A reconstruction in the input's intensities (undoes ``norm_pix_loss`` with each patch's own statistics,
        as MAE's visualisation does)."""
        if not self.norm_pix_loss:
            return pred
        target = self.patchify(images.float())
        mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return self.unpatchify(self.patchify(pred.float()) * std + mean)


def random_masks(batch: int, grid: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """(B, grid, grid) with exactly ``round(ratio * grid**2)`` ones per image, drawn uniformly (MAE's masking)."""
    n = grid * grid
    keep = n - int(round(ratio * n))
    order = torch.rand(batch, n, generator=generator).argsort(dim=1)
    mask = torch.ones(batch, n)
    mask.scatter_(1, order[:, :keep], 0.0)
    return mask.reshape(batch, grid, grid)


def _freeze_batchnorm_statistics(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """MAE's schedule: linear warm-up, then a half cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """MAE's rule: weight decay on weight matrices / kernels only (no biases, norms, mask token)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "attention_biases" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class MAEResult:
    """What phase 1 produced: the loss per optimiser step, and the model (its encoder pre-trained)."""

    history: list[dict] = field(default_factory=list)
    recipe: dict = field(default_factory=dict)
    n_images: int = 0
    seconds: float = 0.0
    model: MaskedImageModel | None = None
    #: steps already done when this call started (from ``out_dir/mae_last.pt``); None = started from step 0
    resumed_from_step: int | None = None

    def mean_loss(self, first: int | None = None, last: int | None = None) -> float:
        rows = self.history[:first] if first is not None else self.history[-(last or len(self.history)):]
        return float(np.mean([r["loss"] for r in rows]))


def build_masked_model(loaded: LoadedModel, recipe: MAERecipe) -> MaskedImageModel:
    """Wrap ``loaded.module.image_encoder`` (trained in place) for masked-image pre-training."""
    module = loaded.module
    feature = int(module.prompt_encoder.image_embedding_size[0])
    return MaskedImageModel(module.image_encoder, loaded.spec.image_size, feature, recipe.patch_size,
                            head_hidden=recipe.head_hidden, norm_pix_loss=recipe.norm_pix_loss)


def prepare_batch(loaded: LoadedModel, images: Sequence[np.ndarray], flips: Sequence[bool] = ()) -> torch.Tensor:
    """Slices -> the model's input tensors (its own preprocessing recipe), optionally flipped left-right."""
    tensors = []
    for i, image in enumerate(images):
        image = np.asarray(image, dtype=np.float32)
        if i < len(flips) and flips[i]:
            image = image[:, ::-1].copy()
        tensors.append(prepare_image(loaded.spec, image)[0])
    return torch.cat(tensors)


#: The resumable state of an MAE run inside its ``out_dir``.
MAE_CHECKPOINT = "mae_last.pt"


def _run_meta(loaded: LoadedModel, images: Sequence[np.ndarray], recipe: MAERecipe, seed: int,
              world_size: int) -> dict[str, Any]:
    """What makes two MAE runs the same run: a checkpoint resumes only a run with equal meta."""
    digest = hashlib.sha256()
    for image in images:
        array = np.ascontiguousarray(image, dtype=np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return {"model": loaded.spec.name, "base_weights_sha256": loaded.sha256,
            "recipe": json.loads(json.dumps(asdict(recipe))), "seed": int(seed), "n_images": len(images),
            "images_sha256": digest.hexdigest(), "world_size": world_size}


def pretrain_mae(loaded: LoadedModel, images: Sequence[np.ndarray], recipe: MAERecipe, *, seed: int = 0,
                 device: str | torch.device = "cpu", progress: bool = True,
                 on_step: Callable[[dict], None] | None = None,
                 distributed: D.DistContext | None = None, out_dir: str | Path | None = None,
                 resume: bool = True, checkpoint_every: int = 10) -> MAEResult:
    """Masked-image pre-training of ``loaded``'s image encoder on 2D ``images`` (labels never seen).

    Every random choice (batch order, flips, masks) comes from one generator seeded by ``seed``, so
    a run is reproducible. Under torchrun (``distributed``, or the initialised process group) each
    rank takes its share of every global batch of ``batch_size`` images and DDP averages the gradients.
    ``out_dir``: where ``mae_last.pt`` is written every ``checkpoint_every`` steps and after the last one;
    with ``resume`` a run continues from it (see the module docstring), otherwise it starts over.
    ``on_step`` is called with each step's row after that step's checkpoint is written.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    if not images:
        raise ValueError("no images to pre-train on: the unlabelled slice list is empty")
    ctx = distributed or D.DistContext.current()
    device = torch.device(device)
    if recipe.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {recipe.batch_size} is the global batch and must be divisible by the number "
                         f"of processes ({ctx.world_size})")
    torch.manual_seed(seed)
    model = build_masked_model(loaded, recipe).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    lr = recipe.learning_rate(ctx.world_size)
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=lr, betas=tuple(recipe.betas))
    warmup = int(round(recipe.warmup_fraction * recipe.steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, recipe.steps, warmup))
    generator = torch.Generator().manual_seed(int(seed))
    order: list[int] = []
    result = MAEResult(recipe=asdict(recipe), n_images=len(images))
    meta = _run_meta(loaded, images, recipe, seed, ctx.world_size)
    path = Path(out_dir) / MAE_CHECKPOINT if out_dir is not None else None
    first_step, earlier_seconds = 0, 0.0
    if path is not None and ctx.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path is not None and resume and path.is_file():
        ck = load_checkpoint(path)
        check_same_run(ck.get("meta"), meta, path, run="MAE run")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        generator.set_state(ck["rng"]["mae"])
        torch.set_rng_state(ck["rng"]["torch"])
        order, result.history = list(ck["order"]), list(ck["history"])
        first_step, earlier_seconds = int(ck["step"]), float(ck["seconds"])
        result.resumed_from_step = first_step
    model.train()
    _freeze_batchnorm_statistics(model.encoder)
    step_model: nn.Module = model
    if ctx.enabled:
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if recipe.amp and device.type == "cuda"
                else contextlib.nullcontext())
    grid = loaded.spec.image_size // recipe.patch_size
    start = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(range(first_step, recipe.steps), desc="MAE pre-training", initial=first_step, total=recipe.steps,
               disable=not (progress and ctx.is_main))
    for step in bar:
        total = 0.0
        for micro in range(recipe.accumulate):
            picks = []
            while len(picks) < recipe.batch_size:
                if not order:
                    order = torch.randperm(len(images), generator=generator).tolist()
                picks.append(order.pop())
            flips = (torch.rand(recipe.batch_size, generator=generator) < 0.5).tolist() if recipe.flips else []
            mask = random_masks(recipe.batch_size, grid, recipe.mask_ratio, generator)
            mine = list(range(ctx.rank, recipe.batch_size, ctx.world_size))
            batch = prepare_batch(loaded, [images[picks[i]] for i in mine], [flips[i] for i in mine] if flips else [])
            last = micro == recipe.accumulate - 1
            sync = contextlib.nullcontext() if (last or not ctx.enabled) else step_model.no_sync()
            with sync:
                with autocast:
                    _, loss = step_model(batch.to(device), mask[mine].to(device))
                (loss / recipe.accumulate).backward()
            total += float(loss.detach()) / recipe.accumulate
        if not math.isfinite(total):
            raise FloatingPointError(f"MAE loss became {total} at step {step}; lower the learning rate")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step + 1, "loss": D.all_reduce_sums([total], ctx)[0] / ctx.world_size,
               "lr": optimizer.param_groups[0]["lr"]}
        scheduler.step()
        result.history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        done = step + 1
        if path is not None and ctx.is_main and (done % checkpoint_every == 0 or done == recipe.steps):
            save_checkpoint({"format": CHECKPOINT_FORMAT, "meta": meta, "step": done, "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "rng": {"mae": generator.get_state(), "torch": torch.get_rng_state()},
                             "order": list(order), "history": result.history,
                             "seconds": earlier_seconds + time.perf_counter() - start}, path)
        if on_step is not None and ctx.is_main:
            on_step(row)
    model.eval()
    result.seconds = earlier_seconds + time.perf_counter() - start
    result.model = model
    return result


@torch.no_grad()
def reconstruct(loaded: LoadedModel, model: MaskedImageModel, images: Sequence[np.ndarray], mask_ratio: float = 0.75,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Masked input, reconstruction (visible patches pasted back, as MAE shows it) and original, first channel.

    Returns arrays (N, S, S) in the model's input frame: ``masked`` (masked patches at 0),
    ``reconstruction`` and ``original``, plus ``mask`` (N, S, S) with 1 = masked.
    """
    device = next(model.parameters()).device
    batch = prepare_batch(loaded, images).to(device)
    grid = loaded.spec.image_size // model.patch_size
    mask = random_masks(len(images), grid, mask_ratio, torch.Generator().manual_seed(seed)).to(device)
    model.eval()
    pred, _ = model(batch, mask)
    pixels = model.to_pixels(pred, batch)
    full = F.interpolate(mask[:, None], size=batch.shape[-2:], mode="nearest")
    pasted = batch * (1 - full) + pixels * full
    first = lambda t: t[:, 0].float().cpu().numpy()  # noqa: E731
    return {"masked": first(batch * (1 - full)), "reconstruction": first(pasted), "original": first(batch),
            "mask": first(full)}


def save_sslsam(path: str | Path, loaded: LoadedModel, result: MAEResult, data: dict[str, Any]) -> Path:
    """The pre-trained encoder as a phase-1 checkpoint (``init: sslsam:<path>``); the head and mask token are dropped.

    ``data`` describes the images (e.g. run directory, splits, slice count) and goes to ``meta``.
    """
    if result.model is None:
        raise ValueError("the MAE result holds no model (was pretrain_mae run in this process?)")
    base = loaded.init if loaded.init_name is not None else default_init(loaded.spec.name)
    state = {f"image_encoder.{k}": v for k, v in result.model.encoder.state_dict().items()}
    meta = {"objective": "masked image modelling (SimMIM-style mask token, MAE recipe)", "recipe": result.recipe,
            "steps": len(result.history), "history": result.history, "first_loss": result.history[0]["loss"],
            "last_loss": result.history[-1]["loss"], "n_images": result.n_images, "seconds": result.seconds,
            "base_weights_sha256": loaded.sha256, "data": data}
    return save_init_checkpoint(path, "sslsam", loaded.spec.name, base, state, meta)
