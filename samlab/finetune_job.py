"""Run one fine-tuning job file: ``python -m samlab.finetune_job --job JOB.json`` (under torchrun for DDP).

Why this sits above :mod:`samlab.train`: a job rebuilds its slices from the *run
directory* (:mod:`samlab.workspace`, the contract between notebooks), which the
training engine must not know about. The job's parameters are
:class:`samlab.train.job.TrainJob`, the configuration and model building
:mod:`samlab.train.configs`, the launcher :mod:`samlab.train.launch`; this module only
wires them to a run directory, so ``train`` never imports upwards and
:mod:`samlab.finetune` (notebook 04) calls :func:`run_job_distributed` when
``nproc_per_node > 1``.

Every rank rebuilds the same model (seeded) and the same slices; rank 0 writes the
checkpoints and ``result.json``; the notebook then loads ``best.pt`` and evaluates as
usual.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .io import read_json, write_json_atomic
from .models import LoadedModel
from .train.configs import GridConfig, build_model
from .train.job import RESULT_FILE, TrainJob
from .workspace import RunDir

__all__ = ["main", "run_job", "run_job_distributed"]

#: The module torchrun starts in every rank (``python -m samlab.finetune_job``).
JOB_MODULE = "samlab.finetune_job"


def _build(job: TrainJob, structures: Mapping[str, Sequence[int]]) -> tuple[GridConfig, LoadedModel]:
    """The job's one configuration, built on the CPU exactly as the notebook builds it (same seed)."""
    config = GridConfig(job.models[0], job.scopes[0], job.methods[0], job.inits[0] if job.inits else None, job.mode)
    loaded = build_model(config, structures=structures, checkpoint=job.checkpoints.get(config.model),
                         allow_random_init=job.allow_random_init, device="cpu", seed=job.seed,
                         checkpoints=job.checkpoints)
    return config, loaded


def run_job(job: TrainJob, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` in this process (which may be one rank of a torchrun group); return the result record."""
    import torch

    from .train import distributed as D
    from .train.data import sample_slices
    from .train.loop import train

    if not (job.device in ("auto", "cpu") or job.device.startswith("cuda")):
        raise ValueError(f"training jobs run on 'cpu' or 'cuda' (DDP backends gloo and NCCL), not {job.device!r}")
    ctx, device = D.init_from_env(job.device)
    try:
        run = RunDir.at(job.run_dir)
        structures = run.structures()
        train_slices = sample_slices(run.load_cases("train"), structures, job.max_train_slices, seed=job.seed)
        val_slices = sample_slices(run.load_cases("val"), structures, job.max_val_slices, seed=job.seed)
        config, loaded = _build(job, structures)
        start = time.perf_counter()
        result = train(loaded, train_slices, val_slices, structures, job.training_recipe(job.mode), mode=job.mode,
                       out_dir=job.out_dir, resume=job.resume, device=device, seed=job.seed,
                       use_cache=None if job.use_cache else False, cache=None, cache_flips=job.cache_flips,
                       min_object_px=job.min_object_px, progress=progress, distributed=ctx)
        fields = {k: v for k, v in dataclasses.asdict(result).items() if k != "checkpoint_dir"}
        record = {
            **fields, "configuration": config.name, "world_size": ctx.world_size, "device": str(device),
            "seconds": time.perf_counter() - start,
            "max_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None,
        }
        if ctx.is_main:
            write_json_atomic(Path(job.out_dir) / RESULT_FILE, record)
        return record
    finally:
        D.shutdown()


def run_job_distributed(job: TrainJob, nproc_per_node: int, log_path: str | os.PathLike | None = None,
                        loaded: LoadedModel | None = None) -> tuple[LoadedModel, dict[str, Any]]:
    """Train ``job`` under ``torchrun`` on ``nproc_per_node`` processes; return (model with best weights, record).

    The job file is written to ``out_dir/job.json``. ``loaded`` is the caller's copy of the
    configuration's model (built by :func:`samlab.train.configs.build_model` with the job's
    seed, so the same PEFT modules); without one it is built here. It is given ``best.pt``'s
    weights, ready for :func:`samlab.finetune.evaluate`. A failure raises
    :class:`samlab.train.launch.DistributedLaunchError` with the end of the log.
    """
    from .train.checkpoint import load_checkpoint, load_trainable_state
    from .train.launch import TorchrunSpec, launch_torchrun
    from .train.loop import BEST

    out = Path(job.out_dir)
    job_path = job.write(out / "job.json")
    launch_torchrun(JOB_MODULE, ["--job", str(job_path), "--no-progress"],
                    TorchrunSpec(nproc_per_node=nproc_per_node), log_path=log_path or out / "torchrun.log")
    record = read_json(out / RESULT_FILE, "training result of the torchrun job")
    if loaded is None:
        _, loaded = _build(job, RunDir.at(job.run_dir).structures())
    load_trainable_state(loaded.module, load_checkpoint(out / BEST)["model"], out / BEST)
    loaded.module.eval()
    return loaded, record


def main(argv: Sequence[str] | None = None) -> int:
    """The command line every torchrun rank runs; a bad job file is exit status 2 with the file named."""
    parser = argparse.ArgumentParser(prog=f"python -m {JOB_MODULE}",
                                     description="Train one fine-tuning configuration (under torchrun for DDP).")
    parser.add_argument("--job", required=True, help="job JSON written by samlab.train.job.TrainJob.write")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars (logs of batch jobs)")
    args = parser.parse_args(argv)
    try:
        job = TrainJob.read(args.job)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_job(job, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
