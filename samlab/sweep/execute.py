"""Running sweep jobs: the task every executor runs, a local process pool, and submitit (SLURM).

Why apart from the grid: how jobs are spread (in-process, a spawn pool sized to the
cores, a SLURM array that requeues on time-outs) is a choice independent of what the
jobs are; see the package docstring for the sizing rule.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from ..runner import run_profile
from .grid import (
    _SUBMITIT_CLUSTER,
    _THREAD_VARS,
    DONE_MARKER,
    JOB_MARKER,
    ExecutorKind,
    SlurmSettings,
    SweepJob,
    _read_json,
    _write_json_atomic,
    is_done,
)

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
