"""Grid files and their expansion into jobs: what a sweep *is*, before anything runs.

Why apart from the executors: expanding and validating a grid (every job's profile,
before any job starts) and deciding whether a job is done are pure functions of files;
``samlab sweep --dry-run`` needs only this, and the executors and the merge build on it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import NOTEBOOK_SCHEMAS, ProfileError, check_folder_name
from ..profiles import load_profile, read_yaml_mapping
from ..io import InputFileError, read_json, write_json_atomic, write_text_atomic
from ..paths import project_root, resolve_run_dir

#: File in a job's run directory that marks it complete; holds the parameter hash.
DONE_MARKER = "sweep-done.json"
#: File written when a job starts; a different hash there means the run dir is stale.
JOB_MARKER = "sweep-job.json"
#: Prefix of the override columns in the merged results table.
COLUMN_PREFIX = "sweep."
#: Column naming the job (= run directory name) in the merged results table.
RUN_COLUMN = "sweep.run"

ExecutorKind = Literal["local", "slurm", "submitit-local", "debug"]
_SUBMITIT_CLUSTER = {"slurm": "slurm", "submitit-local": "local", "debug": "debug"}
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


# ---------------------------------------------------------------------------------------------
# Grid files
# ---------------------------------------------------------------------------------------------


class SlurmSettings(BaseModel):
    """Resources of one sweep job on SLURM (one array task = one job = one node)."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    gpus_per_job: int = Field(1, ge=0, description="GPUs per job; a notebook may run torchrun over all of them")
    cpus_per_task: int = Field(8, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    time_min: int = Field(240, ge=1, description="time limit per job; on timeout submitit requeues the job")
    array_parallelism: int = Field(16, ge=1, description="array tasks running at once")
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = Field(default_factory=list, description="shell lines before the job, e.g. module load cuda")
    additional: dict[str, Any] = Field(default_factory=dict, description="extra #SBATCH flags, e.g. {mail-type: END}")
    max_requeues: int = Field(3, ge=0, description="requeues after timeout / pre-emption")


class GridFile(BaseModel):
    """A sweep: a base profile, a grid of overrides, and how to run the jobs."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    base: str | dict[str, Any] = Field(description="a profile file (relative to the grid file) or an inline profile")
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    notebooks: list[str] | None = Field(None, description="run only these notebooks of the base (default: all)")
    attempts: int = Field(2, ge=1, description="runs per job before it is reported failed")
    executor: ExecutorKind = "local"
    workers: int | None = Field(None, ge=1, description="local executor: jobs at once (default: cores // 2)")
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_folder_name(value, "sweep name")

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, v in value.items() if not v]
        if empty:
            raise ValueError(f"grid key(s) {empty} have no values; give each key a non-empty list of alternatives")
        return value


def _format_errors(error: ValidationError, where: str) -> str:
    lines = [f"invalid grid file {where}:"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - unknown key {key!r}; allowed: {', '.join(GridFile.model_fields)}")
        elif item["type"] == "list_type":
            lines.append(f"  - {key}: grid values must be a list of alternatives, e.g. [0, 1] (got {item.get('input')!r})")
        else:
            lines.append(f"  - {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_grid(path: str | os.PathLike) -> tuple[GridFile, dict[str, Any], Path]:
    """Read a grid file; return it, the base profile as a raw mapping, and where the base came from.

    Nothing is expanded or run here; :func:`expand_grid` validates every job's profile.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "grid file", "name, base, grid, ...")
    try:
        grid = GridFile(**raw)
    except ValidationError as exc:
        raise ProfileError(_format_errors(exc, str(path))) from None
    if isinstance(grid.base, dict):
        base = {"name": grid.name, **grid.base}
        _validate_raw(base, f"inline base profile of grid file {path}")  # its own errors first, before any override
        return grid, base, path
    candidates = [path.parent / grid.base, project_root() / grid.base, project_root() / "params" / grid.base]
    base_path = next((c for c in candidates if c.is_file()), None)
    if base_path is None:
        raise ProfileError(f"base profile {grid.base!r} of grid file {path} not found (looked in {[str(c) for c in candidates]})")
    load_profile(base_path)  # the base alone must be valid: its errors are then reported against its own file
    base = read_yaml_mapping(base_path, "base profile", "name, notebooks")
    return grid, base, base_path


# ---------------------------------------------------------------------------------------------
# Expansion into jobs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepJob:
    """One grid point: a resolved profile file and the run directory it executes into."""

    name: str
    overrides: dict[str, Any]
    profile_path: Path
    jobs_root: Path
    param_hash: str
    threads: int | None = None

    @property
    def run_dir(self) -> Path:
        return self.jobs_root / self.name


def parameter_hash(steps: Sequence[tuple[str, Any]]) -> str:
    """SHA-256 of a profile's fully resolved parameters (run_dir excluded: it names *where*, not *what*)."""
    payload = []
    for notebook, params in steps:
        values = params.model_dump() if hasattr(params, "model_dump") else dict(params)
        values.pop("run_dir", None)
        payload.append([notebook, values])
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _target(key: str, notebooks: list[str], where: str) -> tuple[list[str], str]:
    """Which notebooks of the base profile a grid key addresses, and the field name."""
    if "." in key:
        prefix, field_name = key.split(".", 1)
        matches = [n for n in notebooks if n == prefix or n.split("_", 1)[0] == prefix]
        if len(matches) != 1:
            raise ProfileError(
                f"grid key {key!r} in {where}: {prefix!r} names {'no' if not matches else 'several'} notebook(s) "
                f"of the base profile; its notebooks: {notebooks}"
            )
        schema = NOTEBOOK_SCHEMAS[matches[0]]
        if field_name == "run_dir":
            raise ProfileError(f"grid key {key!r} in {where}: the sweep decides run directories")
        if field_name not in schema.model_fields:
            raise ProfileError(
                f"grid key {key!r} in {where}: notebook {matches[0]} has no parameter {field_name!r}; "
                f"allowed: {', '.join(sorted(schema.model_fields))}"
            )
        return matches, field_name
    if key == "run_dir":
        raise ProfileError(f"grid key 'run_dir' in {where}: the sweep decides run directories")
    matches = [n for n in notebooks if key in NOTEBOOK_SCHEMAS[n].model_fields]
    if not matches:
        allowed = sorted({f for n in notebooks for f in NOTEBOOK_SCHEMAS[n].model_fields} - {"run_dir"})
        raise ProfileError(f"grid key {key!r} in {where}: no notebook of the base profile takes it; allowed: {allowed}")
    return matches, key


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "-".join(_format_value(v) for v in value) or "empty"
    if isinstance(value, dict):
        return "h" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
    return str(value)


def _key_labels(keys: list[str]) -> dict[str, str]:
    """Short labels for job names: the field name, or ``NN.field`` where two keys share a field name."""
    short = {k: k.split(".")[-1] for k in keys}
    labels = {}
    for key in keys:
        if list(short.values()).count(short[key]) > 1 and "." in key:
            labels[key] = f"{key.split('.', 1)[0].split('_', 1)[0]}.{short[key]}"
        else:
            labels[key] = short[key]
    return labels


def _job_name(overrides: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    if not overrides:
        return "base"
    name = "__".join(f"{labels[k]}-{_format_value(v)}" for k, v in overrides.items())
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if not name[0].isalnum():
        name = "j" + name
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name


def _apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    raw = json.loads(json.dumps(base, default=str))  # a deep copy that is also plain YAML-able
    steps = raw.get("notebooks") or []
    notebooks = [s.get("notebook") for s in steps]
    for key, value in overrides.items():
        targets, field_name = _target(key, notebooks, where)
        for step in steps:
            if step["notebook"] in targets:
                step.setdefault("parameters", {})
                step["parameters"] = dict(step["parameters"] or {}, **{field_name: value})
    raw["name"] = name
    raw["description"] = f"sweep job {name}: {json.dumps(dict(overrides), default=str)}. {raw.get('description', '')}".strip()
    return raw


def _validate_raw(raw: dict[str, Any], where: str) -> list[tuple[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="samlab-sweep-") as tmp:
        path = Path(tmp) / f"{raw['name']}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        try:
            _, steps = load_profile(path)
        except ProfileError as exc:  # the temporary file means nothing to the reader: name the job instead
            message = str(exc).replace(str(path), f"profile {raw['name']!r}")
            raise ProfileError(f"{where}: {message}") from None
    return steps


def _write_json_atomic(data: Any, path: Path) -> None:
    write_json_atomic(path, data, default=str)


def sweep_dir_for(grid: GridFile, runs_root: str | os.PathLike | None = None) -> Path:
    """``<runs_root>/<grid name>`` (default ``runs/<grid name>`` under the project root)."""
    return Path(runs_root).resolve() / grid.name if runs_root else resolve_run_dir(Path("runs") / grid.name)


def expand_grid(
    grid_path: str | os.PathLike, runs_root: str | os.PathLike | None = None, write_profiles: bool = True
) -> tuple[GridFile, Path, list[SweepJob]]:
    """Expand a grid file into jobs, validating every job's profile before anything runs.

    Jobs come in grid order (the cartesian product of the grid's lists, first key
    slowest). Each job's resolved profile is written to ``profiles/<job>.yaml``.
    """
    grid, base, base_origin = load_grid(grid_path)
    where = f"grid file {grid_path}"
    if grid.notebooks is not None:  # e.g. skip a base's zero-shot step in every job of a fine-tuning sweep
        present = [step.get("notebook") for step in base.get("notebooks") or []]
        unknown = [n for n in grid.notebooks if n not in present]
        if unknown or not grid.notebooks:
            raise ProfileError(f"{where}: notebooks {unknown or '[]'} not in the base profile; it runs {present}")
        base = {**base, "notebooks": [s for s in base["notebooks"] if s.get("notebook") in grid.notebooks]}
    keys = list(grid.grid)
    labels = _key_labels(keys)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid.grid[k] for k in keys))]
    sweep_dir = sweep_dir_for(grid, runs_root)
    names: dict[str, int] = {}
    planned = []
    for overrides in combos:
        name = _job_name(overrides, labels)
        if name in names:  # two value sets that format alike (e.g. "a b" and "a_b"): disambiguate by hash
            name = f"{name}-{hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]}"
        names[name] = 1
        raw = _apply_overrides(base, overrides, name, where)
        steps = _validate_raw(raw, f"{where}, job {name} (overrides {overrides}, base {base_origin})")
        planned.append((name, overrides, steps))
    jobs = []
    for name, overrides, steps in planned:
        resolved = {
            "name": name,
            "description": f"sweep {grid.name}, job {name}; overrides: {json.dumps(overrides, default=str)}",
            "notebooks": [
                {"notebook": nb, "parameters": {k: v for k, v in p.model_dump().items() if k != "run_dir"}}
                for nb, p in steps
            ],
        }
        profile_path = sweep_dir / "profiles" / f"{name}.yaml"
        if write_profiles:
            write_text_atomic(profile_path, yaml.safe_dump(resolved, sort_keys=False))
        jobs.append(SweepJob(name, overrides, profile_path, sweep_dir / "jobs", parameter_hash(steps)))
    return grid, sweep_dir, jobs


def _read_json(path: Path) -> dict[str, Any] | None:
    """A marker or index file as a mapping, or None when it is missing, unreadable or not a mapping.

    A half-written or foreign marker must mean "not done" (the job runs again), not a crash.
    """
    try:
        data = read_json(path, "sweep marker")
    except InputFileError:
        return None
    return data if isinstance(data, dict) else None


def is_done(job: SweepJob) -> bool:
    """True when the job's done-marker holds the hash of its current parameters."""
    marker = _read_json(job.run_dir / DONE_MARKER)
    return bool(marker) and marker.get("hash") == job.param_hash
