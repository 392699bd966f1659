"""Multi-process runs under torchrun: one process per device, set up from the environment.

`torchrun --nproc_per_node=N -m attncnn train ...` sets RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT; `setup()` reads them and joins the process group (NCCL on CUDA, gloo on
CPU). Without those variables the run is a plain single process.

A collective fails once a peer has died, and only after `timeout_s` when a peer hangs:
torch's defaults (30 minutes for gloo, 10 for NCCL) would keep the others waiting that long.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from attncnn.errors import AttncnnError


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False   # we made the process group, so we tear it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_(self, tensors) -> None:
        """Sum `tensors` across ranks in place (no-op for one process)."""
        if self.enabled:
            for t in tensors:
                dist.all_reduce(t)

    def any(self, flag: bool, device) -> bool:
        """True on every rank if `flag` is true on any (a collective: all ranks must call)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def setup(device_type: str, timeout_s: float) -> Dist:
    """Join the process group torchrun describes in the environment, if any; a collective
    that waits longer than `timeout_s` for a peer fails."""
    if dist.is_available() and dist.is_initialized():  # set up by a caller (tests, notebooks)
        return Dist(dist.get_rank(), dist.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_available():
        raise AttncnnError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(rank, world_size, local_rank, initialised_here=True)
