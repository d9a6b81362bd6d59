"""The sweep: expand, skip what is done, run the rest, merge (``samlab sweep GRID``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..config import ProfileError
from ..runner import run_profile
from .execute import JobOutcome, SweepTask, _run_local, _submit, _wait, default_workers
from .grid import ExecutorKind, SweepJob, expand_grid, is_done
from .merge import merge_sweep

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
