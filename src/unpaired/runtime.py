"""Where this process runs: the device, and (under torchrun) its place in the process group.

``torchrun`` sets RANK, LOCAL_RANK and WORLD_SIZE; ``Runtime.from_environment`` reads them, joins
the process group (NCCL on GPUs, gloo on CPUs) and pins each process to its local GPU. Without
torchrun it is a single process of world size 1 and every collective is a no-op, so the training
loop has one code path.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; refuse CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but no CUDA device is available (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, grids and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device: str) -> Runtime:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(resolve_device(device))
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        chosen = resolve_device(device)
        if chosen.type == "cuda":
            chosen = torch.device("cuda", local_rank)
            torch.cuda.set_device(chosen)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(minutes=30))
        return cls(chosen, rank, world_size)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average a tensor over all processes (identity for a single process)."""
        if self.distributed:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world_size
        return values

    def shutdown(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
