"""Typed, validated parameters for every notebook (reading a whole profile: :mod:`samlab.profiles`).

Why: a profile is executed unattended for hours (papermill, a cluster); a typo in
a key or an impossible value must fail *before* the first notebook starts, with
an error naming the file, the notebook, the key and what is allowed. Each
notebook's ``parameters`` cell mirrors one schema below (a test keeps the two in
sync), so the schema is also the documentation of a notebook's knobs.
"""
from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ModelName = Literal["litemedsam", "medsam_vit_b", "sam_vit_b", "sam_vit_l", "sam_vit_h", "vit_t"]
Device = Literal["auto", "cpu", "cuda"]


class ProfileError(ValueError):
    """A profile or a notebook parameter set is invalid; the message says where and why."""


def check_folder_name(value: str, what: str) -> str:
    """``value`` if it is safe as a folder name (profiles and sweeps name their run folders), else ValueError."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ValueError(f"{what} {value!r} must be letters, digits, '_', '.', '-' (it names a folder)")
    return value


def _registered_checkpoint_keys(value: dict[str, str]) -> dict[str, str]:
    """``checkpoints`` keys must name registered models: a typo (``sam_vit_typo``) would otherwise be ignored
    and the model run with other weights, or none."""
    valid = get_args(ModelName)
    unknown = [k for k in value if k not in valid]
    if unknown:
        raise ValueError(f"checkpoints name(s) {unknown} are not registered models; valid names: {', '.join(valid)}")
    return value


def _init_names(value: list[str]) -> list[str]:
    """Each ``inits`` entry must be a starting-weights name (samlab.models.inits), checked before a run starts."""
    from samlab.models.inits import parse_init

    for init in value:
        parse_init(init)  # InitError (a ValueError) names the bad entry and the valid names
    if len(set(value)) != len(value):
        raise ValueError(f"inits names a starting point twice: {value}")
    return value


_INITS_HELP = ("starting weights to compare for every configuration: litemedsam, sam, medsam, sslsam:<path>, "
               "supsam:<path>, random (shape/speed only); empty: each model's own weights (results say 'pretrained')")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    run_dir: str = Field("runs/dev", description="run directory; relative paths are resolved from the project root")
    seed: int = Field(0, ge=0)


class CurationParams(_Params):
    """Notebook 01: where the data comes from and how it is split."""

    data_source: Literal["phantom", "nnunet_raw"] = "phantom"
    raw_dir: str | None = Field(None, description="an nnU-Net raw / MSD dataset folder when data_source=nnunet_raw")
    phantom_cases: int = Field(6, ge=3, le=500)
    phantom_shape: list[int] = Field(default_factory=lambda: [12, 96, 96], min_length=3, max_length=3)
    phantom_spacing: list[float] = Field(default_factory=lambda: [3.0, 1.6, 1.6], min_length=3, max_length=3)
    split_scheme: Literal["pelvic", "finetune_sam"] = "pelvic"
    min_object_px: int = Field(100, ge=0)
    resample_labels: bool = Field(
        False, description="resample a label whose grid (origin, direction, spacing, shape) differs from its image "
                           "onto the image grid (nearest neighbour) instead of refusing the case")
    orientation: Literal["as_stored", "RAS", "LPS"] = Field(
        "as_stored", description="volume orientation before slicing: as_stored (SimpleITK array order, never "
                                 "canonicalised; MedSAM's own convention) or RAS / LPS (DICOMOrient of image and label)")
    intensity: Literal["percentile_nonzero", "percentile_foreground", "zscored", "ct_window"] = Field(
        "percentile_nonzero", description="volume clip before the model's min-max: 0.5/99.5 percentiles of non-zero "
                                          "voxels (MedSAM MR), of an Otsu foreground, of the body of a z-scored image, "
                                          "or a fixed CT window")
    ct_window: str | list[float] | None = Field(
        None, description="for intensity ct_window: soft_tissue, lung, brain, bone (MedSAM presets) or [low, high] HU")
    subject_pattern: str | None = Field(
        None, description="regex with one group that extracts the patient from a case id (scans of one patient "
                          "stay in one split)")
    subject_csv: str | None = Field(None, description="CSV with columns case_id, subject (alternative to subject_pattern)")

    @field_validator("ct_window")
    @classmethod
    def _window_known(cls, value: str | list[float] | None) -> str | list[float] | None:
        if value is not None:
            from samlab.data.preprocess import ct_window_range

            ct_window_range(value)  # raises naming the presets or the bad pair
        return value

    @field_validator("subject_pattern")
    @classmethod
    def _one_group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                groups = re.compile(value).groups
            except re.error as err:
                raise ValueError(f"subject_pattern {value!r} is not a valid regex: {err}") from err
            if groups != 1:
                raise ValueError(f"subject_pattern must have exactly one group (the patient), {value!r} has {groups}")
        return value

    @model_validator(mode="after")
    def _window_with_ct(self) -> "CurationParams":
        if self.intensity == "ct_window" and self.ct_window is None:
            raise ValueError("intensity 'ct_window' needs ct_window: soft_tissue, lung, brain, bone or [low, high]")
        if self.subject_pattern is not None and self.subject_csv is not None:
            raise ValueError("give subject_pattern or subject_csv, not both")
        return self

    @field_validator("phantom_shape")
    @classmethod
    def _shape_positive(cls, value: list[int]) -> list[int]:
        if min(value) < 8:
            raise ValueError(f"every phantom_shape size must be >= 8 voxels, got {value}")
        return value

    @field_validator("phantom_spacing")
    @classmethod
    def _spacing_positive(cls, value: list[float]) -> list[float]:
        if min(value) <= 0:
            raise ValueError(f"phantom_spacing must be positive millimetres, got {value}")
        return value


class ZeroShotParams(_Params):
    """Notebook 02: models x prompt sources x box modes x expansions."""

    models: list[ModelName] = Field(default_factory=lambda: ["litemedsam"], min_length=1)
    checkpoints: dict[str, str] = Field(default_factory=dict, description="model name -> checkpoint path")
    _checkpoint_keys = field_validator("checkpoints")(classmethod(lambda cls, v: _registered_checkpoint_keys(v)))
    allow_random_init: bool = False
    prompt_sources: list[Literal["oracle", "nnunet"]] = Field(default_factory=lambda: ["oracle", "nnunet"])
    box_modes: list[Literal["single", "per_component", "per_part", "point"]] = Field(
        default_factory=lambda: ["single", "per_component", "per_part", "point"]
    )
    expansions_px: list[int] = Field(default_factory=lambda: [0, 5])
    split: Literal["auto", "train", "val", "test", "all"] = Field(
        "auto", description="auto: every case (zero-shot needs no held-out cases), or the test split when nnU-Net "
                            "predictions are compared (they exist for held-out cases only)")
    max_cases: int | None = Field(None, ge=1)
    nsd_tolerance_mm: float = Field(2.0, gt=0)
    device: Device = "auto"
    use_cache: bool = True
    reference: str | None = Field(None, description="published results for this dataset to compare with (shown "
                                                    "in notebook 02); default: the pelvic paper for pelvic data, none else")
    orientation_sensitivity: bool = Field(True, description="notebook 02's last section: Dice of the same slices "
                                                            "under the 8 in-plane flips/rotations (one encoder pass "
                                                            "per slice and transform)")
    orientation_slices: int = Field(1, ge=1, description="slices of that section (x 8 encoder passes per model)")

    @field_validator("expansions_px")
    @classmethod
    def _non_negative(cls, value: list[int]) -> list[int]:
        if any(v < 0 for v in value):
            raise ValueError(f"expansions_px must be >= 0 pixels, got {value}")
        return value


class VolumePromptingParams(_Params):
    """Notebook 02b: prompt budgets per volume (one 3D box, one per component, every k-th slice, every slice).

    Boxes come from the ground truth (oracle). Propagation options are those of
    ``samlab.propagate.propagate_volume``; ``margin_frame`` says whether ``margin`` counts image pixels
    or pixels of the model's input frame (the official CVPR24 script: 3 px in its 256-px frame).
    """

    models: list[ModelName] = Field(default_factory=lambda: ["litemedsam"], min_length=1)
    checkpoints: dict[str, str] = Field(default_factory=dict, description="model name -> checkpoint path")
    _checkpoint_keys = field_validator("checkpoints")(classmethod(lambda cls, v: _registered_checkpoint_keys(v)))
    allow_random_init: bool = False
    split: Literal["train", "val", "test", "all"] = "test"
    max_cases: int | None = Field(None, ge=1)
    every_k: list[int] = Field(default_factory=lambda: [5, 10], description="keyframe budgets: a box every k slices")
    margin: float = Field(3.0, ge=0, description="growth of the previous slice's box during propagation (px)")
    margin_frame: Literal["image", "model"] = "model"
    mask_prompt: bool = False
    min_area_fraction: float = Field(0.1, ge=0, lt=1)
    nsd_tolerance_mm: float = Field(2.0, gt=0)
    profile_bins: int = Field(5, ge=2, le=20, description="bins of the slice position for the failure profile")
    failure_drop: float = Field(0.2, gt=0, le=1, description="Dice lost to the oracle that marks a failed slice")
    device: Device = "auto"
    use_cache: bool = True

    @field_validator("every_k")
    @classmethod
    def _positive_k(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"every_k must be >= 1 slice, got {value}")
        return value


class NnUNetParams(_Params):
    """Notebook 03: the nnU-Net v2 baseline; a named profile of samlab.baselines.nnunet plus overrides."""

    profile: Literal["smoke", "quick", "paper"] = "smoke"  # smoke: quick cut to 2 x 15 iterations
    configuration: Literal["2d", "3d_fullres", "3d_lowres"] | None = None
    num_epochs: int | None = Field(None, ge=1)
    num_iterations_per_epoch: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1, description="override nnU-Net's planned batch size")
    torch_threads: int | None = Field(None, ge=1, description="torch threads of nnU-Net's training process")
    oversample_foreground_percent: float | None = Field(
        None, ge=0.0, le=1.0, description="share of each batch forced to hold a foreground class (None: 0.33)")
    dataset_id: int = Field(501, ge=1, le=999)
    device: Device = "auto"


AUTOMATIC_OVERRIDES_HELP = (
    "recipe fields changed for automatic-mode (prompt-free) configurations only: their class tokens and IoU "
    "outputs start from random, so a CPU budget of tens of steps needs a higher learning rate and one slice per "
    "step (measured on the phantom, vanilla decoder: lr 5e-5, batch 4, 3 epochs left the validation Dice at 0; "
    "lr 1e-3, batch 1, 8 epochs reached 0.91); empty trains both modes with the same recipe")


def _automatic_defaults() -> dict[str, Any]:
    return {"lr": 1e-3, "batch_size": 1}


def _check_mode_overrides(recipe: str, *overrides: dict[str, Any]) -> None:
    """Validate override dicts against the named recipe now, so a typo fails at parameter time, naming the field."""
    from samlab.train.recipes import RECIPES

    merged: dict[str, Any] = {}
    for part in overrides:
        merged.update(part)
    RECIPES[recipe].with_overrides(**merged)


def _distinct_modes(value: list[str]) -> list[str]:
    """Each training mode once: a repeated mode would train (and report) the same grid twice."""
    if len(set(value)) != len(value):
        raise ValueError(f"modes {value} repeat a mode")
    return value


class FinetuneParams(_Params):
    """Notebook 04: the fine-tuning grid (models x scopes x methods) trained with one recipe of samlab.train.

    Defaults are the quick CPU run: LiteMedSAM (the CPU stand-in for ViT-T with real weights),
    decoder-only vanilla / LoRA / Adapter, box prompts, the pelvic study's recipe, a few epochs
    on a seeded subsample of training slices.
    """

    models: list[ModelName] = Field(default_factory=lambda: ["litemedsam"], min_length=1)
    checkpoints: dict[str, str] = Field(default_factory=dict, description="model name -> checkpoint path")
    _checkpoint_keys = field_validator("checkpoints")(classmethod(lambda cls, v: _registered_checkpoint_keys(v)))
    allow_random_init: bool = False
    scopes: list[Literal["decoder", "encoder_decoder"]] = Field(default_factory=lambda: ["decoder"], min_length=1)
    methods: list[Literal["vanilla", "lora", "adapter"]] = Field(
        default_factory=lambda: ["vanilla", "lora", "adapter"], min_length=1)
    inits: list[str] = Field(default_factory=list, description=_INITS_HELP)
    _init_names = field_validator("inits")(classmethod(lambda cls, v: _init_names(v)))
    modes: list[Literal["automatic", "box", "point"]] = Field(
        default_factory=lambda: ["box"], min_length=1,
        description="training modes, each a grid of its own: automatic (prompt-free, the 18-config study's main "
                    "setting), box (one box-prompted mask per structure) and/or point (the same with a click in each "
                    "piece of the structure: the paper's interactive variant)")
    recipe: Literal["litemedsam_refine", "finetune_sam"] = "litemedsam_refine"
    max_epochs: int | None = Field(2, ge=1, description="overrides the recipe's maximum epochs (None: the recipe's)")
    recipe_overrides: dict[str, Any] = Field(default_factory=dict, description="other recipe fields to change")
    automatic_overrides: dict[str, Any] = Field(default_factory=_automatic_defaults,
                                                description=AUTOMATIC_OVERRIDES_HELP)
    max_train_slices: int | None = Field(4, ge=1, description="seeded subsample of training slices (None: all)")
    max_val_slices: int | None = Field(2, ge=1)
    max_test_cases: int | None = Field(None, ge=1)
    min_object_px: int = Field(0, ge=0, description="drop training objects smaller than this (pixels)")
    use_cache: bool = True
    cache_flips: bool = False
    resume: bool = True
    nsd_tolerance_mm: float = Field(2.0, gt=0)
    device: Device = "auto"
    nproc_per_node: int = Field(1, ge=1, description="processes per configuration: > 1 trains each one under torchrun "
                                                     "with DDP, one process per GPU (gloo on the CPU)")

    @model_validator(mode="before")
    @classmethod
    def _legacy_mode(cls, data: Any) -> Any:
        """``mode: box`` (a single mode, as before ``modes`` existed) still reads as ``modes: [box]``."""
        if isinstance(data, dict) and "mode" in data:
            data = dict(data)
            mode = data.pop("mode")
            if "modes" in data and list(data["modes"]) != [mode]:
                raise ValueError(f"give either mode ({mode!r}) or modes ({data['modes']!r}), not both")
            data["modes"] = [mode]
        return data

    _distinct_modes = field_validator("modes")(classmethod(lambda cls, v: _distinct_modes(v)))

    @model_validator(mode="after")
    def _overrides_fit_the_recipe(self) -> "FinetuneParams":
        _check_mode_overrides(self.recipe, self.recipe_overrides)  # raises, naming the field
        _check_mode_overrides(self.recipe, self.recipe_overrides, self.automatic_overrides)
        return self

    def training_recipe(self, mode: str = "box"):
        """The validated :class:`samlab.train.Recipe` these parameters ask for, for one training mode
        (``automatic_overrides`` apply on top in automatic mode)."""
        from samlab.train import get_recipe

        overrides = dict(self.recipe_overrides)
        if self.max_epochs is not None:
            overrides.setdefault("max_epochs", self.max_epochs)
        if mode == "automatic":
            overrides.update(self.automatic_overrides)
        return get_recipe(self.recipe, **overrides)


class FewShotParams(_Params):
    """Notebook 05: k-shot fine-tuning, k slices from k distinct volumes, several seeds per k.

    Defaults are the quick CPU run (the phantom has 5 training volumes, so k <= 5);
    the paper's setting is shots [5, 10, 20], max_epochs 1000, batch_size 2, no early stopping.
    """

    models: list[ModelName] = Field(default_factory=lambda: ["litemedsam"], min_length=1)
    checkpoints: dict[str, str] = Field(default_factory=dict, description="model name -> checkpoint path")
    _checkpoint_keys = field_validator("checkpoints")(classmethod(lambda cls, v: _registered_checkpoint_keys(v)))
    allow_random_init: bool = False
    scopes: list[Literal["decoder", "encoder_decoder"]] = Field(default_factory=lambda: ["decoder"], min_length=1)
    methods: list[Literal["vanilla", "lora", "adapter"]] = Field(default_factory=lambda: ["lora"], min_length=1)
    inits: list[str] = Field(default_factory=list, description=_INITS_HELP)
    _init_names = field_validator("inits")(classmethod(lambda cls, v: _init_names(v)))
    modes: list[Literal["automatic", "box", "point"]] = Field(
        default_factory=lambda: ["box"], min_length=1,
        description="training modes: automatic (prompt-free, the paper's few-shot setting), box and/or point")
    _distinct_modes = field_validator("modes")(classmethod(lambda cls, v: _distinct_modes(v)))
    shots: list[int] = Field(default_factory=lambda: [1, 3], min_length=1)
    k_val: int | None = Field(1, ge=1, description="validation slices (None: same as k)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1,
                             description="sampling seeds: each draws its own k slices; several give a spread per k")
    recipe: Literal["finetune_sam", "litemedsam_refine"] = "finetune_sam"
    max_epochs: int = Field(6, ge=1, description="the paper's few-shot recipe runs up to 1000 epochs")
    batch_size: int = Field(2, ge=1)
    warmup_iters: int = Field(
        0, ge=0, description="linear warm-up steps; the recipe's 200 would never end in a few-step CPU run")
    automatic_overrides: dict[str, Any] = Field(default_factory=_automatic_defaults,
                                                description=AUTOMATIC_OVERRIDES_HELP)
    max_test_cases: int | None = Field(1, ge=1)
    use_cache: bool = True
    nsd_tolerance_mm: float = Field(2.0, gt=0)
    device: Device = "auto"

    @field_validator("shots")
    @classmethod
    def _positive_shots(cls, value: list[int]) -> list[int]:
        if min(value) < 1:
            raise ValueError(f"shots must be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _overrides_fit_the_recipe(self) -> "FewShotParams":
        _check_mode_overrides(self.recipe, self._base_overrides(), self.automatic_overrides)
        return self

    def _base_overrides(self) -> dict[str, Any]:
        return {"max_epochs": self.max_epochs, "batch_size": self.batch_size, "patience": None,
                "warmup_iters": self.warmup_iters}

    def training_recipe(self, mode: str = "box"):
        """The few-shot recipe for one training mode: no early stopping (the paper's), this run's epochs, batch and
        warm-up, and ``automatic_overrides`` on top in automatic mode."""
        from samlab.train import get_recipe

        overrides = self._base_overrides()
        if mode == "automatic":
            overrides.update(self.automatic_overrides)
        return get_recipe(self.recipe, **overrides)


class InteractiveParams(_Params):
    """Notebook 06: interactive box/point prompting with realistic prompt noise, and the widget viewer.

    Prompt simulation follows the 18-configuration study (§2.3): a box is the tight box of each
    connected component with Gaussian noise (sd = ``box_noise_fraction`` of the box side, capped at
    ``box_noise_cap_px``); a point is drawn among the pixels deeper than the median distance to the
    edge. ``n_draws`` independent draws (seeds ``seed``, ``seed + 1``, ...) per slice and structure.
    """

    models: list[ModelName] = Field(default_factory=lambda: ["litemedsam"], min_length=1)
    checkpoints: dict[str, str] = Field(default_factory=dict, description="model name -> checkpoint path")
    _checkpoint_keys = field_validator("checkpoints")(classmethod(lambda cls, v: _registered_checkpoint_keys(v)))
    allow_random_init: bool = False
    finetuned_checkpoints: dict[str, str] = Field(
        default_factory=dict,
        description="'<model>-<scope>-<method>' (e.g. litemedsam-decoder-lora) -> checkpoint of notebook 04",
    )
    prompt_kinds: list[Literal["box_noisy", "point_deep"]] = Field(
        default_factory=lambda: ["box_noisy", "point_deep"], min_length=1
    )
    selections: list[Literal["single", "confidence", "oracle"]] = Field(
        default_factory=lambda: ["single", "confidence", "oracle"], min_length=1
    )
    n_draws: int = Field(2, ge=1, le=100)
    box_noise_fraction: float = Field(0.1, ge=0, le=1)
    box_noise_cap_px: float = Field(20.0, ge=0)
    max_components: int = Field(4, ge=1, le=6)
    split: Literal["train", "val", "test", "all"] = "test"
    max_cases: int | None = Field(None, ge=1)
    slices_per_case: int | None = Field(2, ge=1)
    metrics: list[Literal["dice", "nsd", "hd95"]] = Field(default_factory=lambda: ["dice"], min_length=1)
    nsd_tolerance_mm: float = Field(2.0, gt=0)
    device: Device = "auto"
    use_cache: bool = True
    widgets: Literal["auto", "on", "off"] = "auto"
    demo_structure: str | None = None
    demo_slice: int | None = Field(None, ge=0)
    corrective3d: bool = Field(True, description="the 3D corrective loop and its clicks-to-target curve")
    corrective3d_budget: int = Field(4, ge=1, le=200, description="prompts per volume, the 3D box included")
    corrective3d_kinds: list[Literal["box", "point"]] = Field(default_factory=lambda: ["box", "point"], min_length=1)
    corrective3d_patience: int = Field(2, ge=1)
    corrective3d_margin_frame: Literal["image", "model"] = "model"


class PretrainParams(_Params):
    """Notebook 08: phase 1 (SSLSAM by masked-image modelling; optionally SupSAM) and a short phase-2 comparison.

    Defaults are a smoke run on 2 CPU cores (tens of MAE steps on a subset of the phantom's
    training slices); params/paper-pretraining.yaml holds the paper's settings for a GPU.
    """

    model: ModelName = "litemedsam"
    base_init: str = Field("litemedsam", description="starting weights of phase 1 (a plain init name)")
    checkpoints: dict[str, str] = Field(default_factory=dict, description="model name -> checkpoint path")
    _checkpoint_keys = field_validator("checkpoints")(classmethod(lambda cls, v: _registered_checkpoint_keys(v)))
    splits: list[Literal["train", "val", "test", "all"]] = Field(
        default_factory=lambda: ["train"], min_length=1,
        description="curated volumes whose images phase 1 reads (labels unused); the paper: training images only")
    extra_image_dirs: list[str] = Field(default_factory=list, description="image-only folders (PNG/JPEG/npy/NIfTI)")
    max_slices: int | None = Field(8, ge=1, description="seeded subset of the unlabelled slices (None: all)")
    mae_steps: int = Field(4, ge=1)
    mae_batch_size: int = Field(1, ge=1)
    mae_accumulate: int = Field(1, ge=1, description="micro-batches per optimiser step (the paper: 16)")
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    patch_size: int = Field(16, ge=1, description="masking unit in model-input pixels (MAE: 16)")
    mae_lr: float | None = Field(5e-4, gt=0, description="None: MAE rule 1.5e-4 x effective batch / 256")
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    norm_pix_loss: bool = Field(False, description="MAE per-patch normalised target (see samlab.pretrain.mae)")
    supsam_epochs: int = Field(0, ge=0, description="SupSAM phase-1 epochs on the training structures (0: skip)")
    supsam_max_slices: int | None = Field(8, ge=1)
    phase2_scope: Literal["decoder", "encoder_decoder"] = "decoder"
    phase2_method: Literal["vanilla", "lora", "adapter"] = "vanilla"
    phase2_modes: list[Literal["automatic", "box", "point"]] = Field(
        default_factory=lambda: ["box"], min_length=1,
        description="phase-2 training modes, each trained from every starting weight (as notebook 04's modes)")
    phase2_max_epochs: int = Field(2, ge=1)
    max_train_slices: int | None = Field(4, ge=1)
    max_val_slices: int | None = Field(2, ge=1)
    max_test_cases: int | None = Field(1, ge=1)
    device: Device = "auto"

    @field_validator("base_init")
    @classmethod
    def _plain_base(cls, value: str) -> str:
        from samlab.models.inits import PLAIN_INITS, parse_init

        if parse_init(value).kind not in PLAIN_INITS:
            raise ValueError(f"base_init must be a plain init ({', '.join(PLAIN_INITS)}), got {value!r}")
        return value


class StatisticsParams(_Params):
    """Notebook 07: paired statistics and every figure/table from tidy results (samlab.report).

    ``seed`` seeds the bootstrap. ``source_run_dir`` exists because the runner gives every
    profile its own run directory: a figures-only profile (params/figures.yaml) runs in
    runs/figures/ and reads the results of an existing run (e.g. runs/quick) from here.
    """

    source_run_dir: str | None = Field(
        None, description="read results from this run directory instead of run_dir (a figures-only profile)"
    )
    out_dir: str = Field("figures", description="folder (relative: to the project root) that receives <profile_name>/")
    profile_name: str | None = Field(
        None, description="sub-folder of out_dir; None: the source run's run.json profile, else its folder name"
    )
    test: Literal["ttest", "wilcoxon"] = Field("ttest", description="test behind stars and 'significant' (both are reported)")
    correction: Literal["holm", "fdr_bh"] = Field("holm", description="correction over structures behind the stars")
    alpha: float = Field(0.05, gt=0, lt=1)
    min_n: int = Field(5, ge=2, description="fewest pairs a paired test runs on; below: effect and CI only, no stars")
    n_resamples: int = Field(10000, ge=100, description="bootstrap resamples per confidence interval")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    metrics: list[str] = Field(default_factory=lambda: ["dice", "hd95", "nsd"], min_length=1)
    unmatched: Literal["skip", "intersect"] = Field(
        "skip", description="skip: refuse (and report) comparisons whose pairs do not match; intersect: keep matched keys"
    )
    parameter_table: bool = Field(True, description="Table 3: build the 18 configurations on the meta device")

    @field_validator("profile_name")
    @classmethod
    def _safe_profile_name(cls, value: str | None) -> str | None:
        return value if value is None else check_folder_name(value, "profile_name")


#: Notebook file stem -> its parameter schema (a notebook is registered once it exists;
#: tests/test_config.py checks each registered notebook's parameters cell against its schema).
NOTEBOOK_SCHEMAS: dict[str, type[_Params]] = {
    "01_data_curation": CurationParams,
    "02_zero_shot_probing": ZeroShotParams,
    "02b_volume_prompting": VolumePromptingParams,
    "03_nnunet_baseline": NnUNetParams,
    "04_finetuning_grid": FinetuneParams,
    "05_few_shot": FewShotParams,
    "06_interactive": InteractiveParams,
    "07_statistics": StatisticsParams,
    "08_pretraining": PretrainParams,
}
