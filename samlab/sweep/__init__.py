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

from typing import Any

# the package's layout, one job per file: grid (grid files, expansion, done-markers), execute (the task and the
# executors), merge (results.parquet and index.json), run (run_sweep and the CLI's helpers)
from .execute import JobOutcome, SweepTask, default_workers, make_submitit_executor
from .grid import (
    COLUMN_PREFIX,
    DONE_MARKER,
    JOB_MARKER,
    RUN_COLUMN,
    ExecutorKind,
    GridFile,
    SlurmSettings,
    SweepJob,
    expand_grid,
    is_done,
    load_grid,
    parameter_hash,
    sweep_dir_for,
)
from .merge import merge_sweep, read_sweep_index, read_sweep_results
from .run import SweepReport, describe_sweep, merge_existing, run_sweep

__all__ = [
    "COLUMN_PREFIX",
    "DONE_MARKER",
    "JOB_MARKER",
    "RUN_COLUMN",
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
        from ..train import launch

        return getattr(launch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
