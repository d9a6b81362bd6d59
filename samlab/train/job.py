"""One fine-tuning configuration as a self-contained job: ``python -m samlab.train --job JOB.json``.

Why a job file: a configuration too large for one GPU (ViT-H, encoder + decoder) trains
under ``torchrun`` in processes of its own, one per GPU. Those processes cannot share
the notebook's objects, so everything they need -- the run directory (its split and
structures), the configuration, the recipe and the slice sampling -- is written to a
JSON file with the same fields and validation as notebook 04's parameters. Every rank
rebuilds the same model (seeded) and the same slices; rank 0 writes the checkpoints and
``result.json``; the notebook then loads ``best.pt`` and evaluates as usual
(:func:`run_job_distributed`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError, model_validator

from ..config import FinetuneParams
from ..io import write_json_atomic

RESULT_FILE = "result.json"


class TrainJob(FinetuneParams):
    """Notebook 04's parameters narrowed to one configuration, plus where its checkpoints go."""

    out_dir: str

    @model_validator(mode="after")
    def _one_configuration(self) -> "TrainJob":
        many = {k: v for k, v in (("models", self.models), ("scopes", self.scopes), ("methods", self.methods))
                if len(v) != 1}
        if many:
            raise ValueError(f"a training job is one configuration; these name several: {many}")
        return self

    @classmethod
    def read(cls, path: str | os.PathLike) -> "TrainJob":
        """Load and validate a job file; errors name the file and the bad field."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training job file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"training job file {path} is not valid JSON: {error}") from error
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ValueError(f"training job file {path} is invalid:\n{error}") from error

    def write(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.model_dump(mode="json"))


def run_job(job: TrainJob, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` in this process (which may be one rank of a torchrun group); return the result record."""
    import torch

    from ..finetune import GridConfig, build_model, sample_slices
    from ..workspace import RunDir
    from . import distributed as D
    from .loop import train

    if not (job.device in ("auto", "cpu") or job.device.startswith("cuda")):
        raise ValueError(f"training jobs run on 'cpu' or 'cuda' (DDP backends gloo and NCCL), not {job.device!r}")
    ctx, device = D.init_from_env(job.device)
    try:
        run = RunDir.at(job.run_dir)
        structures = run.structures()
        train_slices = sample_slices(run.load_cases("train"), structures, job.max_train_slices, seed=job.seed)
        val_slices = sample_slices(run.load_cases("val"), structures, job.max_val_slices, seed=job.seed)
        config = GridConfig(job.models[0], job.scopes[0], job.methods[0])
        loaded = build_model(config, job.mode, structures, checkpoint=job.checkpoints.get(config.model),
                             allow_random_init=job.allow_random_init, device="cpu", seed=job.seed)
        start = time.perf_counter()
        result = train(loaded, train_slices, val_slices, structures, job.training_recipe(), mode=job.mode,
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
                        loaded=None):
    """Train ``job`` under ``torchrun`` on ``nproc_per_node`` processes; return (model with best weights, record).

    The job file is written to ``out_dir/job.json``. ``loaded`` is the caller's copy of the
    configuration's model (built by :func:`samlab.finetune.build_model` with the job's seed,
    so the same PEFT modules); without one it is built here. It is given ``best.pt``'s
    weights, ready for :func:`samlab.finetune.evaluate`. A failure raises
    :class:`samlab.sweep.DistributedLaunchError` with the end of the log.
    """
    from ..finetune import GridConfig, build_model
    from ..sweep import TorchrunSpec, launch_torchrun
    from ..workspace import RunDir
    from .checkpoint import load_checkpoint, load_trainable_state
    from .loop import BEST

    out = Path(job.out_dir)
    job_path = job.write(out / "job.json")
    launch_torchrun("samlab.train", ["--job", str(job_path), "--no-progress"],
                    TorchrunSpec(nproc_per_node=nproc_per_node), log_path=log_path or out / "torchrun.log")
    record = json.loads((out / RESULT_FILE).read_text())
    if loaded is None:
        config = GridConfig(job.models[0], job.scopes[0], job.methods[0])
        loaded = build_model(config, job.mode, RunDir.at(job.run_dir).structures(),
                             checkpoint=job.checkpoints.get(config.model), allow_random_init=job.allow_random_init,
                             device="cpu", seed=job.seed)
    load_trainable_state(loaded.module, load_checkpoint(out / BEST)["model"], out / BEST)
    loaded.module.eval()
    return loaded, record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samlab.train",
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
