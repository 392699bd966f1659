"""Multi-process runs under torchrun: one process per device, set up from the environment.

`torchrun --nproc_per_node=N -m attncnn train ...` sets RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT; `setup()` reads them and joins the process group (NCCL on CUDA, gloo on
CPU). Without those variables the run is a plain single process.

A collective fails once a peer has died, and only after `timeout_s` when a peer hangs:
torch's defaults (30 minutes for gloo, 10 for NCCL) would keep the others waiting that long.
`Dist.naming_peer_failures()` turns such a failure, a backend traceback, into one line.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from attncnn.errors import AttncnnError

# How gloo words a collective that lost its peer (torch raises these as plain RuntimeErrors,
# NCCL's as DistBackendError): "[.../gloo/transport/tcp/pair.cc:553] Connection closed by
# peer ...", "Application timeout caused pair closure" (a peer silent past the timeout).
_GLOO_FAILURE = re.compile(r"gloo|by peer|pair closure")


class PeerFailedError(AttncnnError):
    """A collective failed: another rank died, raised, or hung past run.dist_timeout_s."""


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

    @contextlib.contextmanager
    def naming_peer_failures(self):
        """Re-raise a collective that failed for want of a peer as a one-line
        PeerFailedError (a rank that failed prints its own error)."""
        try:
            yield
        except RuntimeError as err:
            if not (self.enabled and (isinstance(err, dist.DistError)
                                      or _GLOO_FAILURE.search(str(err)))):
                raise
            raise PeerFailedError(
                f"rank {self.rank} of {self.world_size}: a peer rank failed, was killed or hung "
                f"past run.dist_timeout_s ({_backend_reason(err)}); see the other ranks' "
                f"output") from None

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
    try:
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except dist.DistError as err:  # e.g. a rank that never started, or a wrong MASTER_ADDR
        raise PeerFailedError(f"rank {rank} of {world_size}: could not join the other ranks "
                              f"within run.dist_timeout_s: {_backend_reason(err)}") from None
    return Dist(rank, world_size, local_rank, initialised_here=True)


def _backend_reason(err: Exception) -> str:
    """The gist of a backend error: its first sentence, without the source-file prefix."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip().splitlines()[0])
    return text.split(". ")[0][:200]
