"""Training checkpoints: tensors and plain values only, written atomically.

Why only the trainable part of the model: for decoder-only fine-tuning of ViT-H the
frozen encoder is 2.5 GB that never changes, and it already lives in the base
checkpoint (whose SHA-256 the training checkpoint records). A checkpoint therefore
holds the parameters that require gradients plus every buffer (BatchNorm running
statistics), and is loaded onto a model rebuilt the same way (same base weights, same
PEFT configuration); anything else in the file, or any trainable parameter missing from
it, is an error naming the file.

Everything is ``torch.load(..., weights_only=True)``-loadable: state dicts, ints,
floats, strings, lists, dicts and the RNG state tensors -- never pickled objects. A file
is written to a temporary name in the same folder and renamed, so a kill mid-write
leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import atomic_path

#: Bumped when the layout of the checkpoint dict changes.
CHECKPOINT_FORMAT = 1


class TrainCheckpointError(RuntimeError):
    """A training checkpoint is unreadable or does not belong to this model/run."""


def _trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that require gradients plus all persistent buffers (as in ``state_dict``), detached CPU copies."""
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    trainable = _trainable_names(model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in trainable or k not in params}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike = "state") -> None:
    """Load :func:`trainable_state` output; refuses unknown keys and missing trainable parameters."""
    full = model.state_dict()
    unknown = sorted(set(state) - set(full))
    if unknown:
        raise TrainCheckpointError(
            f"{source} holds {len(unknown)} tensor(s) this model does not have (first: {unknown[:3]}); "
            "it was saved from a different configuration"
        )
    trainable = _trainable_names(model)
    missing = sorted(trainable - set(state))
    if missing:
        raise TrainCheckpointError(
            f"{source} lacks {len(missing)} trainable parameter(s) of this model (first: {missing[:3]}); "
            "it was saved from a different configuration"
        )
    shapes = [k for k, v in state.items() if tuple(full[k].shape) != tuple(v.shape)]
    if shapes:
        raise TrainCheckpointError(f"{source}: tensor shape mismatch for {shapes[:3]}")
    model.load_state_dict(state, strict=False)


def check_same_run(saved_meta: dict[str, Any] | None, meta: dict[str, Any], path: str | os.PathLike,
                   run: str = "run") -> None:
    """Refuse to resume from ``path`` unless its meta equals this run's; the error names every differing field."""
    saved = saved_meta or {}
    if saved == meta:
        return
    diff = sorted(k for k in set(saved) | set(meta) if saved.get(k) != meta.get(k))
    raise TrainCheckpointError(f"{path} belongs to a different {run} (differs in: {', '.join(diff)}); use another "
                               "out_dir, delete it, or pass resume=False to start over")


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`samlab.io.atomic_path`: a kill mid-write leaves the previous checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True``; clear errors for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise TrainCheckpointError(f"training checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise TrainCheckpointError(f"cannot read training checkpoint {path}: corrupt or not a weights-only "
                                   f"PyTorch file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainCheckpointError(f"{path} is not a samlab training checkpoint (format {CHECKPOINT_FORMAT})")
    return payload
