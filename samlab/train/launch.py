"""Multi-GPU: the ``torchrun`` launcher that spreads one training over the GPUs of a node (or several nodes).

Why it lives in ``train``: launching is how a training runs, not what a sweep is. A sweep
job stays *one notebook run on one node*; the notebook hands a large configuration
(ViT-H / ViT-L, encoder + decoder) to ``torchrun``, which starts one process per GPU
running ``python -m samlab.finetune_job --job`` under torch DDP with bf16 autocast
(notebook 04's ``nproc_per_node``). :func:`torchrun_command` / :func:`launch_torchrun`
build and run the launcher; :func:`torchrun_spec_from_slurm` fills in node count and
rendezvous for multi-node SLURM jobs. Nothing here knows about grids, notebooks or run
directories, so the training engine can use it without importing the layers above it.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["DistributedLaunchError", "TorchrunSpec", "launch_torchrun", "torchrun_command", "torchrun_spec_from_slurm"]




class DistributedLaunchError(RuntimeError):
    """torchrun exited with an error; the message holds the command and the end of its log."""


@dataclass(frozen=True)
class TorchrunSpec:
    """How ``torchrun`` spreads one training over GPUs and nodes.

    One node (the common case: a sweep job holding ``gpus_per_job`` GPUs) uses
    ``--standalone`` (a local rendezvous, no ports to agree on). Several nodes need a
    c10d rendezvous at ``rdzv_endpoint`` (``host:port`` of the first node), the same
    ``rdzv_id`` on every node, and one torchrun per node (a SLURM task per node).
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    rdzv_id: str = "samlab"
    max_restarts: int = 0

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ValueError(f"nproc_per_node and nnodes must be >= 1, got {self.nproc_per_node}, {self.nnodes}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes={self.nnodes} needs rdzv_endpoint='host:port' of the first node")
        if self.rdzv_endpoint and not re.fullmatch(r"[^:\s]+:\d+", self.rdzv_endpoint):
            raise ValueError(f"rdzv_endpoint must be 'host:port', got {self.rdzv_endpoint!r}")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")


def torchrun_command(
    target: str,
    args: Sequence[str] = (),
    spec: TorchrunSpec | None = None,
    module: bool = True,
    python: str | None = None,
) -> list[str]:
    """The argv that starts ``target`` (a module with ``module=True``, else a script path) under torchrun.

    ``python -m torch.distributed.run`` is ``torchrun`` run by *this* interpreter, so the
    workers get the same virtual environment as the notebook that launches them.
    """
    spec = spec or TorchrunSpec()
    command = [python or sys.executable, "-m", "torch.distributed.run"]
    if spec.nnodes == 1 and spec.rdzv_endpoint is None:
        command += ["--standalone", "--nnodes=1"]
    else:
        command += [f"--nnodes={spec.nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={spec.rdzv_endpoint}",
                    f"--rdzv_id={spec.rdzv_id}"]
    command += [f"--nproc_per_node={spec.nproc_per_node}", f"--max_restarts={spec.max_restarts}"]
    command += ["-m", target] if module else [str(target)]
    return command + [str(a) for a in args]


def torchrun_spec_from_slurm(nproc_per_node: int | None = None, port: int = 29500, max_restarts: int = 0) -> TorchrunSpec:
    """A spec for the current SLURM job (via :class:`submitit.JobEnvironment`): its nodes, first host, job id.

    ``nproc_per_node`` defaults to ``SLURM_GPUS_ON_NODE`` (the GPUs SLURM gave this
    node), else to the GPUs torch can see, else 1.
    """
    import submitit

    env = submitit.JobEnvironment()
    if nproc_per_node is None:
        gpus = os.environ.get("SLURM_GPUS_ON_NODE")
        if gpus and gpus.isdigit():
            nproc_per_node = int(gpus)
        else:
            import torch

            nproc_per_node = max(1, torch.cuda.device_count())
    nodes = env.num_nodes
    if nodes == 1:
        return TorchrunSpec(nproc_per_node=nproc_per_node, max_restarts=max_restarts)
    return TorchrunSpec(nproc_per_node=nproc_per_node, nnodes=nodes, rdzv_endpoint=f"{env.hostnames[0]}:{port}",
                        rdzv_id=str(env.job_id), max_restarts=max_restarts)


def launch_torchrun(
    target: str,
    args: Sequence[str] = (),
    spec: TorchrunSpec | None = None,
    module: bool = True,
    log_path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Path | None:
    """Run ``target`` under torchrun and wait; raise :class:`DistributedLaunchError` with the log's end on failure.

    This is how notebook 04 (``nproc_per_node > 1``) runs a configuration on all GPUs of its
    node, through :func:`samlab.finetune_job.run_job_distributed`::

        launch_torchrun("samlab.finetune_job", ["--job", "out/job.json"], TorchrunSpec(nproc_per_node=4),
                        log_path="out/torchrun.log")

    ``python -m samlab.finetune_job`` (:mod:`samlab.finetune_job`) joins the process group torchrun
    describes (NCCL on GPUs, gloo on the CPU), wraps the PEFT-adapted model in
    ``DistributedDataParallel`` (only trainable parameters are synchronised), splits the
    recipe's global batch over the ranks with exact one-process semantics, sums validation
    scores over ranks so every rank takes the same early-stopping decision, runs under bf16
    autocast on GPUs that support it, and lets rank 0 alone write checkpoints and
    ``result.json``. See :mod:`samlab.train.distributed`.
    """
    command = torchrun_command(target, args, spec, module=module)
    full_env = dict(os.environ if env is None else env)
    log = Path(log_path) if log_path else None
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    with (open(log, "w") if log else tempfile.TemporaryFile("w+")) as handle:
        handle.write("$ " + shlex.join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=full_env,
                              cwd=str(cwd) if cwd else None)
        if done.returncode != 0:
            handle.flush()
            if log:
                tail = log.read_text()[-4000:]
            else:
                handle.seek(0)
                tail = handle.read()[-4000:]
            where = f"\n  full log: {log}" if log else ""
            raise DistributedLaunchError(
                f"torchrun exited with status {done.returncode}: {shlex.join(command)}{where}\n--- log tail ---\n{tail}"
            )
    return log
