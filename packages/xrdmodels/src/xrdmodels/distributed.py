"""Where a training process runs, and the few collectives the training loop needs (DDP under torchrun).

Every helper is a no-op with one process (world_size 1), so the loop reads the same with and without DDP. The
collectives must be called by every rank at the same point, or the ranks wait for each other forever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    """Where this process trains: its device and its place among the DDP ranks (world_size 1 without DDP)."""

    device: torch.device
    rank: int
    world_size: int
    local_rank: int
    owns_process_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str) -> Runtime:
    """Single process, or DDP when launched by torchrun (environment WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but this PyTorch sees no CUDA GPU; use device=cpu or auto")
        # Plain "cuda" means this rank's GPU (LOCAL_RANK under torchrun); "cuda:N" pins one GPU.
        dev = torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return Runtime(dev, rank, world_size, local_rank, owns)


def gather(obj: Any, rt: Runtime) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if rt.world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * rt.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast(obj: Any, rt: Runtime) -> Any:
    """Rank 0's obj on every rank."""
    if rt.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flags: tuple[bool, ...], rt: Runtime) -> tuple[bool, ...]:
    """Each flag OR-ed over the ranks (one collective for all), so that every rank takes the same branch."""
    if rt.world_size == 1:
        return flags
    t = torch.tensor([int(f) for f in flags], device=rt.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def mean_over_ranks(values: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """The element-wise mean of `values` over the ranks (a copy; `values` itself is left as it is)."""
    if rt.world_size > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= rt.world_size
    return values
