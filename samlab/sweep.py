"""Sweeps at scale: one profile × a grid of overrides → many papermill runs, resumable, locally or on SLURM.

Why a sweep layer on top of :func:`samlab.runner.run_profile`: the studies are grids
(seeds × models × prompt expansions × the 18 fine-tuning configurations × shots), and
each grid point is one ordinary, self-contained profile run. Expanding the grid into
profiles — instead of looping inside a notebook — keeps every grid point a complete,
re-executable record (its own executed notebooks and ``run.json``), lets a scheduler
spread the points over cores, GPUs or cluster nodes, and makes resuming trivial.

A **grid file** is a base profile plus a grid of overrides::

    name: sweep-quick
    base: quick.yaml                 # a profile file (next to this file, or in the project / params/) or inline
    notebooks: [01_data_curation, 02_zero_shot_probing]   # optional: a subset of the base's notebooks
    grid:                            # the cartesian product of these lists is the set of jobs
      seed: [0, 1]                   # a bare key: every notebook of the base profile that has the field
      02_zero_shot_probing.expansions_px: [[0], [5]]   # NOTEBOOK.key (or NN.key): that notebook only
    attempts: 2                      # runs per job before it is reported failed
    executor: local                  # local | slurm | submitit-local | debug
    workers: null                    # local: parallel jobs (default: one per two cores)
    slurm: {partition: gpu, gpus_per_job: 1, cpus_per_task: 8, time_min: 240, array_parallelism: 16}

Layout of a sweep (``runs/<grid name>/`` unless ``runs_root`` says otherwise)::

    profiles/<job>.yaml     the fully resolved profile of each job (what ran, readable)
    jobs/<job>/             each job's run directory (run.json, notebooks/, results/, figures/ ...)
    jobs/<job>/sweep-done.json   done-marker: the hash of the job's resolved parameters
    results.parquet         every job's tidy results + the job's override values (``sweep.*`` columns)
    index.json              job name -> run dir, overrides, hash, status (what notebook 07 reads)
    submitit/               submitit's pickles and per-job logs (cluster executors)

Resuming: a job is skipped when its done-marker holds the hash of its *fully
resolved* parameters (every notebook's validated parameters, defaults included).
Change any parameter — in the grid or in the base profile — and the hash changes, so
the job runs again (its old run directory is removed first, so no result computed
with other parameters survives). A job that was killed mid-way has no marker and
runs again; its run directory is kept, so caches (embeddings) and the training
checkpoints of nnU-Net / ``samlab.train`` let it continue rather than restart.

Executors (no home-made scheduler):

* ``local``: a :class:`concurrent.futures.ProcessPoolExecutor`. Default size is one
  worker per **two** cores (at most one per job), each job's BLAS/torch thread count
  set to ``cores // workers``. Why not one per core: every notebook already
  parallelises inside (torch intra-op threads, nnU-Net's data-loader processes), so
  one job per core oversubscribes the CPU and each job slows down; but a job also
  spends seconds single-threaded (kernel start-up, imports, NIfTI I/O, plotting), and a
  second concurrent job fills those gaps. On a 2-core laptop this means one job at a time.
* ``slurm``: :mod:`submitit` submits the jobs as one SLURM **array**
  (``executor.map_array``) with the partition, GPUs, CPUs, memory and time limit of
  the grid's ``slurm`` section; jobs are :class:`submitit.helpers.Checkpointable`, so
  a job that hits its time limit or is pre-empted is requeued by submitit and resumes.
* ``submitit-local`` / ``debug``: the same submitit code path on this machine
  (:class:`submitit.LocalExecutor` subprocesses, or in-process
  :class:`submitit.DebugExecutor`) — how the SLURM path is tested without a cluster.

Multi-GPU (large configurations: ViT-H / ViT-L, vanilla encoder + decoder fine-tuning):
a sweep job stays *one notebook run on one node*; the sweep job asks SLURM for
``gpus_per_job`` GPUs and the notebook hands the training to ``torchrun`` through
:mod:`samlab.train.launch` (re-exported here: :func:`torchrun_command`,
:func:`launch_torchrun`, :func:`torchrun_spec_from_slurm`).
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config import NOTEBOOK_SCHEMAS, ProfileError, check_folder_name, load_profile, read_yaml_mapping
from .io import InputFileError, atomic_path, read_json, write_json_atomic, write_text_atomic
from .results import read_results
from .runner import project_root, resolve_run_dir, run_profile

__all__ = [
    "DONE_MARKER",
    "ExecutorKind",
    "GridFile",
    "JobOutcome",
    "SlurmSettings",
    "SweepJob",
    "SweepReport",
    "SweepTask",
    "TorchrunSpec",
    "DistributedLaunchError",
    "default_workers",
    "describe_sweep",
    "expand_grid",
    "is_done",
    "launch_torchrun",
    "load_grid",
    "make_submitit_executor",
    "merge_existing",
    "merge_sweep",
    "parameter_hash",
    "read_sweep_index",
    "read_sweep_results",
    "run_sweep",
    "sweep_dir_for",
    "torchrun_command",
    "torchrun_spec_from_slurm",
]

#: The torchrun launcher's names, re-exported from :mod:`samlab.train.launch` for callers of ``samlab.sweep``.
_LAUNCHER = ("DistributedLaunchError", "TorchrunSpec", "launch_torchrun", "torchrun_command", "torchrun_spec_from_slurm")


def __getattr__(name: str) -> Any:
    """Resolve the launcher's names on first use: importing :mod:`samlab.train` loads torch, which
    ``samlab sweep --dry-run`` and the sweep's own process never need."""
    if name in _LAUNCHER:
        from .train import launch

        return getattr(launch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


# ---------------------------------------------------------------------------------------------
# Executing one job (the function every executor runs)
# ---------------------------------------------------------------------------------------------


@dataclass
class JobOutcome:
    """What happened to one job: ``done`` (ran now), ``skipped`` (already done) or ``failed``."""

    name: str
    status: Literal["done", "skipped", "failed"]
    attempts: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


@contextmanager
def _thread_env(threads: int | None) -> Iterator[None]:
    """Cap BLAS/OpenMP threads of this job (inherited by the papermill kernels it starts)."""
    if not threads:
        yield
        return
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: str(threads) for k in _THREAD_VARS})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


try:  # submitit is a declared dependency; the import guard only keeps `import samlab.sweep` light on failure
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object  # type: ignore[assignment,misc]


class SweepTask(_Checkpointable):  # type: ignore[misc,valid-type]
    """Run one job to completion: skip if done, else up to ``attempts`` papermill runs, then mark it done.

    A callable class (not a function) so that submitit can requeue it on a SLURM time
    limit or pre-emption (:class:`submitit.helpers.Checkpointable`); the requeued job
    re-enters here, finds no done-marker and resumes in the same run directory.
    ``runner`` has :func:`samlab.runner.run_profile`'s signature (tests inject failures).
    """

    def __init__(self, runner: Callable[..., Path] = run_profile) -> None:
        self.runner = runner

    def __call__(self, job: SweepJob, attempts: int = 1) -> JobOutcome:
        if is_done(job):
            return JobOutcome(job.name, "skipped")
        run_dir = job.run_dir
        started = _read_json(run_dir / JOB_MARKER)
        if started is not None and started.get("hash") != job.param_hash:
            shutil.rmtree(run_dir)  # computed with other parameters: nothing of it may leak into these results
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic({"hash": job.param_hash, "overrides": job.overrides, "profile": str(job.profile_path)},
                           run_dir / JOB_MARKER)
        outcome = JobOutcome(job.name, "failed")
        start = time.perf_counter()
        for attempt in range(1, attempts + 1):
            outcome.attempts = attempt
            (run_dir / DONE_MARKER).unlink(missing_ok=True)
            shutil.rmtree(run_dir / "results", ignore_errors=True)  # no rows from an interrupted attempt
            try:
                with _thread_env(job.threads):
                    self.runner(job.profile_path, runs_root=job.jobs_root, progress=False)
            except Exception as exc:  # a failing notebook, a crash in papermill, a full disk ...
                outcome.errors.append(f"attempt {attempt}: {type(exc).__name__}: {exc}")
                print(f"[samlab sweep] job {job.name} attempt {attempt}/{attempts} failed: {exc}", flush=True)
                continue
            outcome.status = "done"
            outcome.seconds = round(time.perf_counter() - start, 1)
            _write_json_atomic({
                "hash": job.param_hash, "overrides": job.overrides, "attempts": attempt, "seconds": outcome.seconds,
                "finished": datetime.now(timezone.utc).isoformat(), "profile": str(job.profile_path),
            }, run_dir / DONE_MARKER)
            return outcome
        outcome.seconds = round(time.perf_counter() - start, 1)
        return outcome


# ---------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------


def default_workers(n_jobs: int, cpus: int | None = None) -> int:
    """One local worker per two cores, at least one, at most one per job (see the module docstring)."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(cpus // 2, n_jobs))


def _run_local(jobs: list[SweepJob], task: SweepTask, attempts: int, workers: int, progress: bool) -> list[JobOutcome]:
    from tqdm.auto import tqdm

    if workers <= 1:  # in-process: plain tracebacks, no pool start-up
        return [task(job, attempts) for job in tqdm(jobs, desc="sweep jobs", disable=not progress)]
    # spawn, not fork: the parent may hold threads (tqdm, pyzmq) that a forked child would inherit half-locked
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    outcomes: list[JobOutcome] = []
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM (kill, scheduler) stops the workers too
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        futures = {pool.submit(task, job, attempts): job for job in jobs}
        for future in tqdm(cf.as_completed(futures), total=len(futures), desc="sweep jobs", disable=not progress):
            job = futures[future]
            try:
                outcomes.append(future.result())
            except Exception as exc:  # the worker process died (killed, out of memory)
                outcomes.append(JobOutcome(job.name, "failed", errors=[f"worker died: {type(exc).__name__}: {exc}"]))
    except BaseException:
        # Ctrl-C / SIGTERM: stop the workers now (their notebook kernels exit with their parent)
        pool.shutdown(wait=False, cancel_futures=True)
        for child in mp.active_children():
            child.terminate()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    pool.shutdown()
    return outcomes


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def make_submitit_executor(kind: ExecutorKind, folder: Path, settings: SlurmSettings, job_name: str) -> Any:
    """A :class:`submitit.AutoExecutor` for ``slurm``, ``submitit-local`` or ``debug``, with the grid's resources.

    Generic parameters (time, GPUs, CPUs, memory) apply to every cluster; ``slurm_*``
    ones are checked by submitit against SLURM's parameter list even when running
    locally, so a typo in the grid file fails on a laptop, not on the cluster.
    """
    import submitit

    if kind not in _SUBMITIT_CLUSTER:
        raise ValueError(f"executor {kind!r} is not a submitit executor; choose one of {sorted(_SUBMITIT_CLUSTER)}")
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=_SUBMITIT_CLUSTER[kind],
                                     slurm_max_num_timeout=settings.max_requeues)
    params: dict[str, Any] = {
        "name": job_name,
        "timeout_min": settings.time_min,
        "gpus_per_node": settings.gpus_per_job,
        "cpus_per_task": settings.cpus_per_task,
        "nodes": 1,
        "tasks_per_node": 1,
        "slurm_array_parallelism": settings.array_parallelism,
    }
    if settings.mem_gb is not None:
        params["mem_gb"] = settings.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(settings, key) is not None:
            params[f"slurm_{key}"] = getattr(settings, key)
    if settings.setup:
        params["slurm_setup"] = list(settings.setup)
    if settings.additional:
        params["slurm_additional_parameters"] = dict(settings.additional)
    executor.update_parameters(**params)
    return executor


def _submit(jobs: list[SweepJob], task: SweepTask, attempts: int, kind: ExecutorKind, sweep_dir: Path,
            settings: SlurmSettings, job_name: str) -> list[Any]:
    executor = make_submitit_executor(kind, sweep_dir / "submitit", settings, job_name)
    return executor.map_array(task, jobs, [attempts] * len(jobs))  # one SLURM array; local: one process each


def _wait(submitted: list[Any], jobs: list[SweepJob], progress: bool, poll_s: float) -> list[JobOutcome]:
    from submitit.helpers import as_completed
    from tqdm.auto import tqdm

    by_id = {id(s): job for s, job in zip(submitted, jobs)}
    outcomes = []
    handles = as_completed(submitted, poll_frequency=poll_s)
    for handle in tqdm(handles, total=len(submitted), desc="sweep jobs", disable=not progress):
        job = by_id[id(handle)]
        try:
            outcomes.append(handle.result())
        except Exception as exc:  # cancelled, out of time after all requeues, node failure
            outcomes.append(JobOutcome(job.name, "failed", errors=[f"{type(exc).__name__}: {exc}"]))
    return outcomes


# ---------------------------------------------------------------------------------------------
# Merging
# ---------------------------------------------------------------------------------------------


def _column_value(values: list[Any]) -> list[Any]:
    """Scalars stay scalars (filterable in notebook 07); lists/dicts become canonical JSON strings."""
    if all(isinstance(v, (int, float, str, bool)) for v in values) and len({type(v) for v in values}) == 1:
        return values
    return [json.dumps(v, sort_keys=True, default=str) for v in values]


def merge_sweep(sweep_dir: Path, jobs: list[SweepJob], grid: GridFile | None = None,
                outcomes: Mapping[str, JobOutcome] | None = None, grid_file: str | None = None,
                submitted: Mapping[str, str] | None = None) -> tuple[Path, pd.DataFrame]:
    """Merge the tidy results of every *done* job into ``results.parquet`` and write ``index.json``.

    Rows keep the results schema (:mod:`samlab.results`) plus ``sweep.run`` (the job)
    and one ``sweep.<grid key>`` column per override. Jobs not done contribute no rows
    and are listed in the index with their status.
    """
    outcomes = outcomes or {}
    submitted = submitted or {}
    frames = []
    index_jobs: dict[str, Any] = {}
    for job in jobs:
        done = is_done(job)
        outcome = outcomes.get(job.name)
        status = "done" if done else ("failed" if outcome and outcome.status == "failed"
                                      else "submitted" if job.name in submitted else "pending")
        entry: dict[str, Any] = {"run_dir": str(job.run_dir.relative_to(sweep_dir)), "overrides": job.overrides,
                                 "hash": job.param_hash, "status": status}
        if outcome is not None:
            entry.update(attempts=outcome.attempts, errors=outcome.errors)
        if job.name in submitted:
            entry["submitit_job"] = submitted[job.name]
        index_jobs[job.name] = entry
        if not done:
            continue
        results_dir = job.run_dir / "results"
        frame = read_results(results_dir) if results_dir.is_dir() else read_results()
        frame.insert(0, RUN_COLUMN, job.name)
        for key, value in job.overrides.items():
            frame[COLUMN_PREFIX + key] = [value] * len(frame)
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True) if frames else read_results()
    if frames:
        for column in [c for c in merged.columns if c.startswith(COLUMN_PREFIX) and c != RUN_COLUMN]:
            merged[column] = _column_value(merged[column].tolist())
    results_path = sweep_dir / "results.parquet"
    with atomic_path(results_path) as tmp:
        merged.to_parquet(tmp, index=False)
    index = {
        "sweep": grid.name if grid else sweep_dir.name,
        "grid_file": grid_file,
        "keys": list(grid.grid) if grid else [],
        "updated": datetime.now(timezone.utc).isoformat(),
        "results": results_path.name,
        "rows": int(len(merged)),
        "counts": {s: sum(1 for e in index_jobs.values() if e["status"] == s) for s in ("done", "failed", "pending", "submitted")},
        "jobs": index_jobs,
    }
    _write_json_atomic(index, sweep_dir / "index.json")
    return results_path, merged


def read_sweep_index(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """The sweep's ``index.json``: job name -> run dir (relative to the sweep), overrides, hash, status."""
    path = Path(sweep_dir) / "index.json"
    data = _read_json(path)
    if data is None:
        raise FileNotFoundError(f"no readable sweep index at {path}; run `samlab sweep GRID.yaml` first")
    return data


def read_sweep_results(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """The merged results of a sweep (results schema + ``sweep.run`` + ``sweep.<key>`` columns)."""
    path = Path(sweep_dir) / "results.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no merged sweep results at {path}; run `samlab sweep GRID.yaml` first")
    return pd.read_parquet(path)


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What a call of :func:`run_sweep` did."""

    sweep_dir: Path
    jobs: list[SweepJob]
    skipped: list[str]
    executed: list[str]
    failed: list[str]
    submitted: dict[str, str]
    results_path: Path | None
    rows: int

    @property
    def complete(self) -> bool:
        return not self.failed and not self.submitted and len(self.skipped) + len(self.executed) == len(self.jobs)


def run_sweep(
    grid_path: str | os.PathLike,
    runs_root: str | os.PathLike | None = None,
    executor: ExecutorKind | None = None,
    workers: int | None = None,
    attempts: int | None = None,
    wait: bool = True,
    only: Sequence[str] | None = None,
    progress: bool = True,
    runner: Callable[..., Path] = run_profile,
) -> SweepReport:
    """Expand, skip what is done, run the rest, merge. Arguments override the grid file's settings.

    ``wait=False`` (cluster executors) submits and returns; run again later (or with
    :func:`merge_sweep`) to merge once the jobs are done. ``only`` restricts to named jobs.
    """
    grid, sweep_dir, all_jobs = expand_grid(grid_path, runs_root)
    jobs = all_jobs
    if only:
        unknown = sorted(set(only) - {j.name for j in all_jobs})
        if unknown:
            raise ProfileError(f"--only {unknown}: not jobs of {grid_path}; jobs: {[j.name for j in all_jobs]}")
        jobs = [j for j in all_jobs if j.name in set(only)]
    kind: ExecutorKind = executor or grid.executor
    attempts = attempts or grid.attempts
    done = [j for j in jobs if is_done(j)]
    todo = [j for j in jobs if not is_done(j)]
    print(f"[samlab sweep] {grid.name}: {len(jobs)} job(s), {len(done)} already done, {len(todo)} to run "
          f"({kind}) -> {sweep_dir}", flush=True)
    task = SweepTask(runner)
    outcomes: list[JobOutcome] = []
    submitted: dict[str, str] = {}
    if todo and kind == "local":
        n = workers or grid.workers or default_workers(len(todo))
        threads = max(1, (os.cpu_count() or 1) // n) if n > 1 else None
        todo = [SweepJob(j.name, j.overrides, j.profile_path, j.jobs_root, j.param_hash, threads) for j in todo]
        outcomes = _run_local(todo, task, attempts, n, progress)
    elif todo:
        slurm_threads = grid.slurm.cpus_per_task if kind == "slurm" else None
        todo = [SweepJob(j.name, j.overrides, j.profile_path, j.jobs_root, j.param_hash, slurm_threads) for j in todo]
        handles = _submit(todo, task, attempts, kind, sweep_dir, grid.slurm, f"samlab-{grid.name}")
        submitted = {job.name: str(h.job_id) for job, h in zip(todo, handles)}
        if wait:
            outcomes = _wait(handles, todo, progress, poll_s=30.0 if kind == "slurm" else 1.0)
            submitted = {}
        else:
            print(f"[samlab sweep] submitted {len(handles)} job(s): {sorted(set(submitted.values()))}", flush=True)
    by_name = {o.name: o for o in outcomes}
    # the merge and the index always cover the whole grid, also when `only` ran a subset
    results_path, merged = merge_sweep(sweep_dir, all_jobs, grid, by_name, str(Path(grid_path).resolve()), submitted)
    report = SweepReport(
        sweep_dir=sweep_dir, jobs=jobs, skipped=[j.name for j in done],
        executed=[o.name for o in outcomes if o.status == "done"],
        failed=[o.name for o in outcomes if o.status == "failed"],
        submitted=submitted, results_path=results_path, rows=len(merged),
    )
    for name in report.failed:
        print(f"[samlab sweep] FAILED {name}: {by_name[name].errors[-1] if by_name[name].errors else ''}", flush=True)
    return report


def _describe(jobs: list[SweepJob]) -> str:
    lines = []
    for job in jobs:
        state = "done" if is_done(job) else "todo"
        lines.append(f"  [{state}] {job.name}  {json.dumps(job.overrides, default=str)}")
    return "\n".join(lines)


def describe_sweep(grid_path: str | os.PathLike, runs_root: str | os.PathLike | None = None) -> str:
    """A listing of a sweep's jobs and whether each is done (``samlab sweep --dry-run``); runs nothing."""
    grid, sweep_dir, jobs = expand_grid(grid_path, runs_root, write_profiles=False)
    return f"sweep {grid.name} -> {sweep_dir} ({len(jobs)} job(s), executor {grid.executor})\n{_describe(jobs)}"


def merge_existing(grid_path: str | os.PathLike, runs_root: str | os.PathLike | None = None) -> tuple[Path, pd.DataFrame]:
    """Re-merge a sweep from the done-markers on disk (after ``wait=False`` cluster jobs finished); runs nothing."""
    grid, sweep_dir, jobs = expand_grid(grid_path, runs_root, write_profiles=False)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return merge_sweep(sweep_dir, jobs, grid, grid_file=str(Path(grid_path).resolve()))
