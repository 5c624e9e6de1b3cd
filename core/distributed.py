"""Device choice and DistributedDataParallel set-up for ``torchrun``.

``torchrun --nproc_per_node=N pretrain.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we then
join a process group (NCCL on GPUs, gloo on the CPU). A plain ``python pretrain.py`` runs as a
single process on the same code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when present, else CPU. ``cpu``/``cuda``/``cuda:N`` as given; a device this
    machine lacks (or a string torch cannot read) is a one-line UserError."""
    from core.errors import UserError

    if requested == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {requested!r} is not a device; pass auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {requested} asks for a GPU but CUDA is not available here; pass --device cpu "
                            f"(or auto)")
        if device.index >= count:
            raise UserError(f"--device {requested}: this machine has {count} CUDA device(s), cuda:0 to "
                            f"cuda:{count - 1}")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise UserError(f"--device {requested!r} is not supported; pass auto, cpu, cuda or cuda:N")
    return device


def init_distributed(requested_device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if world_size <= 1:
        return DistInfo(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few scalars over all processes (identity for one process)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
