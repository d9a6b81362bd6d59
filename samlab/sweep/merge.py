"""Merging a sweep: every done job's tidy results into one table, and the index notebook 07 reads.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..io import atomic_path
from ..results import read_results
from .execute import JobOutcome
from .grid import COLUMN_PREFIX, RUN_COLUMN, GridFile, SweepJob, _read_json, _write_json_atomic, is_done

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
