"""Process groups for ``torchrun``: which rank this process is, how many there are, which device it uses.

``torchrun --nproc-per-node N -m glico evaluate ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in their environment. :func:`init_from_env` joins them into
one process group (NCCL on CUDA, gloo on the CPU) and pins each rank's GPU; a plain ``python -m glico``
has none of these variables and stays a world of one, so every caller can use :func:`current` and
:func:`barrier` without asking whether it was launched by torchrun.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Ranks", "current", "launched", "init_from_env", "barrier", "broadcast_object", "broadcast_module_",
           "shutdown", "GRID_TIMEOUT"]

#: How long a collective waits for the slowest rank. A grid's ranks meet only between phases (after the
#: fits, at the end), and one rank's share can take hours more than another's, so the default is long.
GRID_TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world`` processes, ``local_rank`` on its host."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes what all ranks share (headers, merged results)."""
        return self.rank == 0


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() else None


def current() -> Ranks:
    """The ranks of the joined process group, or a world of one when there is none."""
    dist = _dist()
    if dist is None or not dist.is_initialized():
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets ``WORLD_SIZE``, ``RANK``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_from_env(device: str = "cpu", timeout: datetime.timedelta = GRID_TIMEOUT) -> tuple[Ranks, str]:
    """Join the process group torchrun describes in the environment (once; later calls reuse it) and
    return this rank's place and the device it should use.

    ``device`` is the command line's: ``cpu`` (every rank on the CPU, gloo), or ``cuda`` (rank on
    ``cuda:LOCAL_RANK``, pinned with ``torch.cuda.set_device``; NCCL). Without torchrun it is returned
    unchanged with a world of one.

    Raises:
        ValueError: ``cuda:N`` with more than one rank on a host (each rank takes its own GPU: give
            ``cuda``), or fewer GPUs than ranks on this host.
    """
    if not launched():
        return current(), device
    dist = _dist()
    if dist is None:
        raise RuntimeError("this PyTorch build has no torch.distributed; run without torchrun")
    local = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is not None and local_world > 1:
            raise ValueError(f"--device {device} under torchrun with {local_world} ranks on this host: each rank uses "
                             f"its own GPU (cuda:LOCAL_RANK); give --device cuda")
        if dev.index is None:
            if local >= torch.cuda.device_count():
                raise ValueError(f"rank {os.environ['RANK']} has LOCAL_RANK {local}, but this host has "
                                 f"{torch.cuda.device_count()} GPU(s); start at most that many ranks per host")
            dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        device = str(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timeout)
    return current(), device


def barrier() -> None:
    """Wait until every rank is here (nothing in a world of one)."""
    dist = _dist()
    if dist is not None and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable; ``obj`` itself in a world of one)."""
    dist = _dist()
    if dist is None or not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module_(module: "torch.nn.Module", src: int = 0) -> "torch.nn.Module":
    """Give every rank rank ``src``'s parameters and buffers of ``module`` (in place; nothing in a world of one)."""
    dist = _dist()
    if dist is not None and dist.is_initialized() and dist.get_world_size() > 1:
        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=src)
    return module


def shutdown() -> None:
    """Leave the process group (if joined)."""
    dist = _dist()
    if dist is not None and dist.is_initialized():
        dist.destroy_process_group()
