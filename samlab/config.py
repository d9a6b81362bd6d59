"""Typed, validated parameters for every notebook and every profile.

Why: a profile is executed unattended for hours (papermill, a cluster); a typo in
a key or an impossible value must fail *before* the first notebook starts, with
an error naming the file, the notebook, the key and what is allowed. Each
notebook's ``parameters`` cell mirrors one schema below (a test keeps the two in
sync), so the schema is also the documentation of a notebook's knobs.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ModelName = Literal["litemedsam", "medsam_vit_b", "sam_vit_b", "sam_vit_l", "sam_vit_h", "vit_t"]
Device = Literal["auto", "cpu", "cuda"]


class ProfileError(ValueError):
    """A profile or a notebook parameter set is invalid; the message says where and why."""


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    run_dir: str = Field("runs/dev", description="run directory; relative paths are resolved from the project root")
    seed: int = Field(0, ge=0)


class CurationParams(_Params):
    """Notebook 01: where the data comes from and how it is split."""

    data_source: Literal["phantom", "nnunet_raw"] = "phantom"
    raw_dir: str | None = Field(None, description="an nnU-Net raw / MSD dataset folder when data_source=nnunet_raw")
    phantom_cases: int = Field(8, ge=3, le=500)
    phantom_shape: list[int] = Field(default_factory=lambda: [16, 96, 96], min_length=3, max_length=3)
    phantom_spacing: list[float] = Field(default_factory=lambda: [3.0, 1.6, 1.6], min_length=3, max_length=3)
    split_scheme: Literal["pelvic", "finetune_sam"] = "pelvic"
    min_object_px: int = Field(100, ge=0)

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
    allow_random_init: bool = False
    prompt_sources: list[Literal["oracle", "nnunet"]] = Field(default_factory=lambda: ["oracle", "nnunet"])
    box_modes: list[Literal["single", "per_component", "point"]] = Field(
        default_factory=lambda: ["single", "per_component", "point"]
    )
    expansions_px: list[int] = Field(default_factory=lambda: [0, 5])
    split: Literal["train", "val", "test", "all"] = "test"
    max_cases: int | None = Field(None, ge=1)
    nsd_tolerance_mm: float = Field(2.0, gt=0)
    device: Device = "auto"
    use_cache: bool = True

    @field_validator("expansions_px")
    @classmethod
    def _non_negative(cls, value: list[int]) -> list[int]:
        if any(v < 0 for v in value):
            raise ValueError(f"expansions_px must be >= 0 pixels, got {value}")
        return value


class NnUNetParams(_Params):
    """Notebook 03: the nnU-Net v2 baseline; a named profile of samlab.baselines.nnunet plus overrides."""

    profile: Literal["quick", "paper"] = "quick"
    configuration: Literal["2d", "3d_fullres", "3d_lowres"] | None = None
    num_epochs: int | None = Field(None, ge=1)
    num_iterations_per_epoch: int | None = Field(None, ge=1)
    dataset_id: int = Field(501, ge=1, le=999)
    device: Device = "auto"


class FinetuneParams(_Params):
    """Notebook 04: the fine-tuning grid (fields owned by samlab.train / samlab.peft)."""

    device: Device = "auto"


class FewShotParams(_Params):
    """Notebook 05: k-shot fine-tuning."""

    device: Device = "auto"


class InteractiveParams(_Params):
    """Notebook 06: interactive box/point prompting."""

    device: Device = "auto"


class StatisticsParams(_Params):
    """Notebook 07: paired statistics and every figure/table from tidy results."""


#: Notebook file stem -> its parameter schema (a notebook is registered once it exists;
#: tests/test_config.py checks each registered notebook's parameters cell against its schema).
NOTEBOOK_SCHEMAS: dict[str, type[_Params]] = {
    "01_data_curation": CurationParams,
    "02_zero_shot_probing": ZeroShotParams,
    "03_nnunet_baseline": NnUNetParams,
}


class NotebookStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notebook: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class Profile(BaseModel):
    """A named, complete study configuration: which notebooks run, with which parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    common: dict[str, Any] = Field(default_factory=dict, description="applied to every notebook that has the key")
    notebooks: list[NotebookStep] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"profile name {value!r} must be letters, digits, '_', '.', '-' (it names a folder)")
        return value


def _format_validation(error: ValidationError, where: str, schema: type[BaseModel]) -> str:
    lines = [f"invalid parameters in {where}:"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(schema.model_fields))
            lines.append(f"  - unknown key {key!r}; allowed keys: {allowed}")
        else:
            lines.append(f"  - {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def validate_notebook_parameters(notebook: str, parameters: dict[str, Any], where: str = "") -> _Params:
    """Validate one notebook's parameters against its schema; raise :class:`ProfileError` naming the key."""
    if notebook not in NOTEBOOK_SCHEMAS:
        raise ProfileError(
            f"unknown notebook {notebook!r} in {where or 'profile'}; available: {', '.join(NOTEBOOK_SCHEMAS)}"
        )
    schema = NOTEBOOK_SCHEMAS[notebook]
    try:
        return schema(**parameters)
    except ValidationError as exc:
        raise ProfileError(_format_validation(exc, where or notebook, schema)) from None


def load_profile(path: str | Path) -> tuple[Profile, list[tuple[str, _Params]]]:
    """Read and fully validate a profile YAML; return it with each notebook's resolved parameters."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"profile not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path} must be a mapping with keys name, notebooks, ...")
    try:
        profile = Profile(**raw)
    except ValidationError as exc:
        raise ProfileError(_format_validation(exc, str(path), Profile)) from None
    resolved = []
    for index, step in enumerate(profile.notebooks):
        if step.notebook not in NOTEBOOK_SCHEMAS:
            raise ProfileError(
                f"unknown notebook {step.notebook!r} in {path} (notebooks[{index}]); "
                f"available: {', '.join(NOTEBOOK_SCHEMAS)}"
            )
        fields = NOTEBOOK_SCHEMAS[step.notebook].model_fields
        merged = {k: v for k, v in profile.common.items() if k in fields}
        merged.update(step.parameters)
        where = f"{path} (notebook {step.notebook})"
        resolved.append((step.notebook, validate_notebook_parameters(step.notebook, merged, where)))
    unused = [k for k in profile.common if not any(k in NOTEBOOK_SCHEMAS[s.notebook].model_fields for s in profile.notebooks)]
    if unused:
        raise ProfileError(f"unknown key(s) {unused} in 'common' of {path}: no notebook of this profile takes them")
    return profile, resolved
