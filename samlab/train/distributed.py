"""Data-parallel training under ``torchrun``: the process group, sharding and reductions.

Why this shape: ``torchrun`` starts one process per GPU and tells each its place through
``RANK``/``LOCAL_RANK``/``WORLD_SIZE``; everything here reads those and nothing else, so
the same code runs as a single process (world size 1, no process group, nothing
changes), under ``torchrun`` on GPUs (NCCL), and under ``torchrun`` or
``torch.multiprocessing`` on the CPU (gloo) -- the last is how the tests check that a
two-process run gives the weights of a one-process run with the same global batch.

Sharding follows :class:`torch.utils.data.DistributedSampler` (the same epoch order on
every rank, padded by repeating its first items to a multiple of the world size, rank
``r`` taking positions ``r, r + W, ...``) but draws the order from the training loop's own
generator, so a resumed run and a one-process run draw the same numbers. Unlike the
sampler, padded items do not count: the training loop gives them weight 0 and weights
each rank's loss by its share of the step's real items, so W processes take exactly the
steps one process takes, whatever the number of items.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

__all__ = ["DistContext", "all_reduce_sums", "barrier", "init_from_env", "padded_length", "shard", "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel run (world size 1 = an ordinary run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, results and logs; the others only compute."""
        return self.rank == 0

    @classmethod
    def current(cls) -> "DistContext":
        """The running process group's view (world size 1 when none is initialised)."""
        if dist.is_available() and dist.is_initialized():
            return cls(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        return cls()


def init_from_env(device: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group ``torchrun`` describes in the environment, and pick this rank's device.

    ``device``: ``"auto"`` (CUDA if available, else CPU), ``"cuda"`` or ``"cpu"``. With
    CUDA each rank takes GPU ``LOCAL_RANK`` and the NCCL backend; on the CPU, gloo.
    Without ``WORLD_SIZE > 1`` nothing is initialised and world size 1 is returned.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                               "are visible: start torchrun with --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world <= 1:
        return DistContext(), chosen
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world} but {missing} are not set: start the job with torchrun "
                               "(samlab.train.launch.launch_torchrun), which sets them")
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank), chosen


def shutdown() -> None:
    """Leave the process group (a no-op in a one-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(order: Sequence[int], ctx: DistContext) -> list[int]:
    """This rank's share of an epoch's item order: padded to a multiple of the world size, every W-th item.

    Every rank gets the same number of items, so every rank runs the same number of
    backward passes (DDP hangs otherwise). The padding repeats the first items, as
    ``DistributedSampler(drop_last=False)`` does.
    """
    order = list(order)
    if not ctx.enabled:
        return order
    if not order:
        raise ValueError("nothing to shard: the epoch has no items")
    padded = order + (order * ctx.world_size)[: (-len(order)) % ctx.world_size]
    return padded[ctx.rank::ctx.world_size]


def padded_length(n: int, ctx: DistContext) -> int:
    """How many items the padded epoch order of ``n`` items has (``n`` in a one-process run)."""
    return n + ((-n) % ctx.world_size if ctx.enabled else 0)


def all_reduce_sums(values: Sequence[float], ctx: DistContext) -> list[float]:
    """Element-wise sums over ranks (float64 on the CPU for gloo, on the rank's GPU for NCCL)."""
    if not ctx.enabled:
        return [float(v) for v in values]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint the others will read)."""
    if ctx.enabled:
        dist.barrier()
