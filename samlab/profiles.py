"""Reading a study profile: a YAML file naming notebooks and their parameters, validated before anything runs.

Why apart from :mod:`samlab.config`: the schemas say what one notebook accepts; this module reads
files (YAML), merges a profile's ``common`` keys into each step and turns pydantic's errors into one
message that names the file, the notebook and the key. ``samlab run``, ``samlab validate``,
``samlab estimate`` and the sweeps all read profiles through :func:`load_profile`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config import NOTEBOOK_SCHEMAS, ProfileError, _Params, check_folder_name

__all__ = ["NotebookStep", "Profile", "load_profile", "read_yaml_mapping", "validate_notebook_parameters"]


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
        return check_folder_name(value, "profile name")


def _format_validation(error: ValidationError, where: str, schema: type[BaseModel]) -> str:
    """First line: the file and the first bad key with its problem; then every problem, one per line."""
    problems = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(schema.model_fields))
            problems.append(f"unknown key {key!r}; allowed keys: {allowed}")
        else:
            problems.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    lines = [f"{where}: invalid parameter {problems[0]}"]
    if len(problems) > 1:
        lines.append(f"  all {len(problems)} invalid parameters in {where}:")
        lines += [f"  - {p}" for p in problems]
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


def read_yaml_mapping(path: str | Path, what: str, keys: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file and what it should be."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"{path}: {what} not found -- check the path")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: {what} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: {what} must be a mapping with keys {keys}")
    return raw


def load_profile(path: str | Path) -> tuple[Profile, list[tuple[str, _Params]]]:
    """Read and fully validate a profile YAML; return it with each notebook's resolved parameters."""
    path = Path(path)
    raw = read_yaml_mapping(path, "profile", "name, notebooks, ...")
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
