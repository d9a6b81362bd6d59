"""The fine-tuning grid's unit: one configuration (backbone x scope x method), and the model it builds.

Why below the notebook API: a configuration is what the training engine trains -- in the
notebook's process or, rebuilt from a job file, in every ``torchrun`` rank
(:mod:`samlab.finetune_job`). Both must build the *same* model (same weights, same PEFT
modules, same seeded initialisation of new modules), so the definition lives here, where
:mod:`samlab.finetune` and the job runner both import it and neither imports the other.

* :class:`GridConfig` -- one of the 18-configuration study's configurations, with the
  paper's Table-3 row it corresponds to;
* :func:`make_grid` -- the configurations to run, in order (LiteMedSAM is the CPU stand-in
  for the paper's ViT-T: the same TinyViT family, real weights, 256 px input);
* :func:`build_model` -- load weights, resize the decoder for automatic mode, apply PEFT.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..models import LoadedModel
from ..models.inits import load_with_init, parse_init
from ..peft import METHODS, SCOPES, apply_peft, resize_mask_decoder_outputs
from .data import TRAINING_MODES, class_values


#: Training modes: box-prompted, point-prompted (a click per piece of the structure), and prompt-free
#: (a class map per slice). ``mixed`` (box or point per item) is SupSAM's phase-1 mode only: a configuration is
#: scored with one prompt kind, so it is not a grid mode.
MODES: tuple[str, ...] = tuple(m for m in TRAINING_MODES if m != "mixed")

#: The paper's backbone (Table 3 row) each registry model corresponds to.
PAPER_BACKBONE: dict[str, str] = {
    "litemedsam": "vit_t",  # TinyViT at 256 px: the same encoder family as MobileSAM's ViT-T
    "vit_t": "vit_t",
    "sam_vit_b": "vit_b",
    "medsam_vit_b": "vit_b",
    "sam_vit_h": "vit_h",
}


@dataclass(frozen=True)
class GridConfig:
    """One fine-tuning configuration: backbone (a registry model name) x scope x method, from named weights.

    ``init`` names the starting weights (:mod:`samlab.models.inits`: ``litemedsam``, ``sam``,
    ``medsam``, ``sslsam:<path>``, ``supsam:<path>``, ``random``); ``None`` is the model's own
    registry weights, as before named inits existed (results say ``pretrained``). ``mode`` is
    ``box`` (one box-prompted mask per structure) or ``automatic`` (prompt-free, one class map
    per slice: the 18-configuration study's main setting); it changes the decoder, so it is part
    of the configuration, not a setting of the run.
    """

    model: str
    scope: str
    method: str
    init: str | None = None
    mode: str = "box"

    @property
    def init_label(self) -> str | None:
        """What the results' ``init`` column will say for a named init (``sslsam:<file stem>``), else None."""
        return None if self.init is None else parse_init(self.init).label

    @property
    def name(self) -> str:
        """``model-scope-method``, ``-automatic`` in automatic mode, ``@<init label>`` for a named init other than
        ``random``. Box-mode names carry no suffix: notebook 06 finds notebook 04's checkpoints by them."""
        base = f"{self.model}-{self.scope}-{self.method}" + ("" if self.mode == "box" else f"-{self.mode}")
        label = self.init_label
        return base if label in (None, "random") else f"{base}@{label}"

    @property
    def prompt(self) -> str:
        """The results' ``prompt`` for this configuration's test rows: ``box`` (ground-truth boxes), ``point``
        (ground-truth clicks) or ``none`` (automatic)."""
        return "none" if self.mode == "automatic" else self.mode

    @property
    def paper_name(self) -> str | None:
        """The Table-3 row of the paper this configuration corresponds to (None for ViT-L)."""
        backbone = PAPER_BACKBONE.get(self.model)
        return None if backbone is None else f"{backbone}-{self.scope}-{self.method}"


def make_grid(models: Sequence[str], scopes: Sequence[str], methods: Sequence[str],
              inits: Sequence[str] = (), modes: Sequence[str] = ("box",)) -> list[GridConfig]:
    """All combinations, in the given order, mode outermost (each configuration once per init and mode);
    unknown values raise ValueError.

    ``inits`` empty: one run per configuration from the model's own weights (``init=None``).
    """
    bad = [s for s in scopes if s not in SCOPES] + [m for m in methods if m not in METHODS] + \
        [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown scope/method/mode {bad}; scopes: {SCOPES}, methods: {METHODS}, modes: {MODES}")
    if not modes:
        raise ValueError("modes must name at least one of " + ", ".join(MODES))
    if not models or not scopes or not methods:
        raise ValueError("models, scopes and methods must each name at least one value")
    for init in inits:
        parse_init(init)  # an unknown name fails here, before anything is built
    starts: list[str | None] = list(inits) or [None]
    return [GridConfig(m, s, k, i, mode) for mode in modes for m in models for s in scopes for k in methods
            for i in starts]


def build_model(config: GridConfig, mode: str | None = None, structures: Mapping[str, Sequence[int]] | None = None, *,
                checkpoint: str | None = None, allow_random_init: bool = False, device: str | torch.device = "cpu",
                seed: int = 0, checkpoints: Mapping[str, str] | None = None, **peft_options: Any) -> LoadedModel:
    """Load ``config.model`` from ``config.init``'s weights, resize the decoder (automatic mode), apply PEFT.

    ``checkpoint`` is ``config.model``'s own file (``init=None``); a named init reads its files
    from ``checkpoints`` (model name -> path), see :func:`samlab.models.inits.load_with_init`.

    The seed fixes the initialisation of new modules (LoRA ``A``, adapters, resized decoder
    tokens), so a resumed run rebuilds exactly the model it checkpointed. ``mode`` defaults to
    ``config.mode``; a different one is an error (the decoder would not match the configuration's name).
    """
    mode = config.mode if mode is None else mode
    if mode != config.mode:
        raise ValueError(f"build_model: mode {mode!r} disagrees with configuration {config.name} (mode {config.mode!r})")
    torch.manual_seed(seed)
    files = dict(checkpoints or {})
    if checkpoint is not None:
        files[config.model] = checkpoint
    loaded = load_with_init(config.model, config.init, files, allow_random_init=allow_random_init, device="cpu")
    module = loaded.module
    if mode == "automatic":
        if structures is None:
            raise ValueError("automatic mode needs `structures` to size the decoder's class outputs")
        resize_mask_decoder_outputs(module, len(class_values(structures)) + 1)
    elif mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    apply_peft(module, config.method, config.scope, **peft_options)
    module.to(device)
    return dataclasses.replace(loaded, module=module)
