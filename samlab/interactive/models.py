"""The models an interactive evaluation prompts: registry models with released or given weights, and
notebook 04's fine-tuned checkpoints rebuilt for prompting (checkpoint lookup, loading, and
embedding sharing when only the decoder was tuned)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..models import EmbeddingCache, LoadedModel, Predictor, load_model
from ..models.registry import CheckpointError, file_sha256, list_models

__all__ = ["ModelEntry", "parse_finetuned_key", "find_finetuned_checkpoints", "load_finetuned",
           "build_model_entries", "same_encoder"]


@dataclass
class ModelEntry:
    """A predictor plus the results columns that name it (backbone, scope, peft, init)."""

    label: str
    predictor: Predictor
    context: dict[str, str]


class _SharedEncoderPredictor(Predictor):
    """A predictor whose embeddings are cached under another model's namespace.

    For a decoder-only fine-tuned model the image encoder is the base model's, bit for bit, so
    its embeddings are the base's and need not be computed twice.
    """

    def __init__(self, model: LoadedModel, namespace: str, device: str | torch.device = "cpu",
                 cache: EmbeddingCache | None = None):
        super().__init__(model, device=device, cache=cache)
        self._namespace = namespace

    @property
    def cache_namespace(self) -> str:
        return self._namespace


_CONFIG_RE = re.compile(r"^(?P<model>[a-z0-9_]+)-(?P<scope>decoder|encoder_decoder)-(?P<method>vanilla|adapter|lora)$")


def parse_finetuned_key(key: str) -> tuple[str, str, str]:
    """``"litemedsam-decoder-lora"`` -> ``("litemedsam", "decoder", "lora")``, with a clear error."""
    match = _CONFIG_RE.match(key)
    if not match or match["model"] not in list_models():
        raise ValueError(
            f"fine-tuned checkpoint key {key!r} must be '<model>-<scope>-<method>' with model in "
            f"{list_models()}, scope decoder|encoder_decoder, method vanilla|adapter|lora "
            "(e.g. 'litemedsam-decoder-lora')"
        )
    return match["model"], match["scope"], match["method"]


_RUN_FOLDER_RE = re.compile(r"^(?P<key>.+)-[0-9a-f]{10}$")


def find_finetuned_checkpoints(run_root: str | os.PathLike) -> dict[str, str]:
    """Notebook 04's selected models in a run directory, keyed ``<model>-<scope>-<method>``.

    Notebook 04 trains each configuration into ``checkpoints/finetune/<config>-<settings hash>/``
    (:func:`samlab.finetune.checkpoint_dir`) and keeps the validation-selected model as
    ``best.pt``. When one configuration was trained with several settings, the newest ``best.pt``
    wins. Returns ``{}`` when there are none (the notebook then prints a note and goes on).
    """
    folder = Path(run_root) / "checkpoints" / "finetune"
    found: dict[str, Path] = {}
    if folder.is_dir():
        for best in folder.glob("*/best.pt"):
            match = _RUN_FOLDER_RE.match(best.parent.name)
            if not match:
                continue
            try:
                parse_finetuned_key(match["key"])
            except ValueError:
                continue
            key = match["key"]
            if key not in found or best.stat().st_mtime > found[key].stat().st_mtime:
                found[key] = best
    return {k: str(v) for k, v in sorted(found.items())}


def load_finetuned(key: str, checkpoint: str | os.PathLike, device: str | torch.device = "cpu",
                   base_checkpoint: str | os.PathLike | None = None) -> LoadedModel:
    """Rebuild a notebook-04 model for prompting: base weights, the recorded PEFT, the trained tensors.

    ``checkpoint`` is a samlab training checkpoint (``best.pt``; it holds only the trained
    tensors, see :mod:`samlab.train.checkpoint`). The model is rebuilt with
    :func:`samlab.finetune.build_model` and the PEFT options recorded in the checkpoint; the
    base weights must be those it was trained from (SHA-256 check). A prompt-free (automatic
    mode) checkpoint is refused: its decoder no longer answers prompts.
    """
    from ..finetune import GridConfig, build_model
    from ..train.checkpoint import load_checkpoint, load_trainable_state

    name, scope, method = parse_finetuned_key(key)
    path = Path(checkpoint).expanduser()
    payload = load_checkpoint(path)
    meta = payload.get("meta") or {}
    if meta.get("mode", "box") != "box":
        raise CheckpointError(f"{path} was trained in {meta.get('mode')!r} mode (prompt-free); "
                              "interactive prompting needs a box-mode model")
    recorded = meta.get("peft") or {}
    if recorded and (recorded.get("method"), recorded.get("scope")) != (method, scope):
        raise CheckpointError(f"{path} holds a {recorded.get('scope')}/{recorded.get('method')} model, "
                              f"not {key}")
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in recorded.items()
               if k in ("rank", "lora_alpha", "adapter_ratio", "adapter_scale", "adapter_blocks",
                        "lora_train_decoder_heads") and v is not None}
    loaded = build_model(GridConfig(name, scope, method), "box", checkpoint=base_checkpoint, device="cpu",
                         seed=int(meta.get("seed", 0)), **options)
    expected = meta.get("weights_sha256")
    if expected and loaded.sha256 != expected:
        raise CheckpointError(f"{path} was trained from base weights {expected[:12]}…, but the base model "
                              f"loaded here has {str(loaded.sha256)[:12]}… (pass the same base checkpoint)")
    load_trainable_state(loaded.module, payload["model"], path)
    loaded.module.eval().to(device)
    return LoadedModel(spec=loaded.spec, module=loaded.module, weights=f"finetuned:{path}", sha256=file_sha256(path))


def build_model_entries(
    models: Sequence[str],
    checkpoints: Mapping[str, str] | None = None,
    allow_random_init: bool = False,
    finetuned: Mapping[str, str] | None = None,
    device: str | torch.device = "cpu",
    cache: EmbeddingCache | None = None,
) -> list[ModelEntry]:
    """Registry models (released or given weights) followed by notebook-04 fine-tuned checkpoints."""
    checkpoints, entries = dict(checkpoints or {}), []
    bases: dict[str, Predictor] = {}
    for name in models:
        loaded = load_model(name, checkpoint=checkpoints.get(name), allow_random_init=allow_random_init, device=device)
        bases[name] = predictor = Predictor(loaded, device=device, cache=cache)
        entries.append(ModelEntry(name, predictor, {"backbone": name, "init": loaded.init}))
    for key, path in dict(finetuned or {}).items():
        name, scope, method = parse_finetuned_key(key)
        loaded = load_finetuned(key, path, device=device, base_checkpoint=checkpoints.get(name))
        base = bases.get(name) or Predictor(load_model(name, checkpoint=checkpoints.get(name)), device="cpu")
        if same_encoder(loaded.module, base.module):  # decoder-only tuning: reuse the base's embeddings
            predictor: Predictor = _SharedEncoderPredictor(loaded, base.cache_namespace, device=device, cache=cache)
        else:
            predictor = Predictor(loaded, device=device, cache=cache)
        entries.append(ModelEntry(key, predictor, {"backbone": name, "scope": scope, "peft": method,
                                                   "init": base.model.init}))
    return entries


def same_encoder(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two models' image encoders hold identical tensors (so their embeddings are identical)."""
    sa, sb = a.image_encoder.state_dict(), b.image_encoder.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)

