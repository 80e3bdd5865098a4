"""Running under ``torchrun``: the process group, this process's rank and device.

``torchrun --nproc-per-node=N`` starts N copies of a command with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_distributed` joins them
into one process group (gloo on CPUs, NCCL on CUDA) and gives each its device (``cuda:
LOCAL_RANK`` on a GPU machine). Without ``torchrun`` (``WORLD_SIZE`` unset or 1) it returns
None and the command runs as one process.

A rank that fails raises out of :func:`process_group` without another collective call, so it
exits at once and torchrun stops the others (which wait in a collective). Rank 0's work alone
(evaluation, checkpoints, hashing a bank) may keep the others waiting: collectives time out
after ``GLIMPSE_GYM_DIST_TIMEOUT`` minutes (default 120).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from glimpse_gym.errors import UsageError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the group."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def leader(self) -> bool:
        """Rank 0: the process that writes checkpoints, commits banks and prints."""
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        dist.barrier()


def rank_batches(order: torch.Tensor, batch_size: int, group: Distributed | None
                 ) -> tuple[torch.Tensor, int]:
    """This rank's share of an epoch: ``order`` (the images of the epoch, in order) cut into
    global batches of ``batch_size``, each split evenly over the ranks, so that the ranks
    together take the steps one process takes. Returns ``(indices, per_rank_batch)``:
    consecutive runs of ``per_rank_batch`` indices are this rank's part of each step; of a
    last, shorter global batch each rank takes the same number of images (up to
    ``world - 1`` images of the epoch are left out).

    >>> rank_batches(torch.arange(10), 4, None)
    (tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), 4)
    """
    if group is None:
        return order, batch_size
    if batch_size % group.world:
        raise UsageError(f"--batch-size {batch_size} is the batch of one step over all "
                         f"processes: make it a multiple of the {group.world} processes")
    b = batch_size // group.world
    full = len(order) // batch_size * batch_size
    steps = order[:full].view(-1, group.world, b)[:, group.rank].reshape(-1)
    rest = order[full:]
    share = len(rest) // group.world
    return torch.cat([steps, rest[group.rank * share:(group.rank + 1) * share]]), b


def all_sum(values: dict[str, float], group: Distributed | None) -> dict[str, float]:
    """``values`` summed over the ranks (as they are without a group)."""
    if group is None:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=group.device)
    dist.all_reduce(t)
    return dict(zip(values, t.cpu().tolist(), strict=True))


def world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when not under torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; run the "
                         "command under torchrun, which sets it, or unset it") from None


def init_distributed(device: torch.device) -> Distributed | None:
    """Join torchrun's process group (None when not under torchrun with more than one
    process); on CUDA each process takes ``cuda:LOCAL_RANK``."""
    world = world_size()
    if world <= 1:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local} but {torch.cuda.device_count()} CUDA "
                             "device(s) on this node: --nproc-per-node at most the GPU count")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        minutes = float(os.environ.get("GLIMPSE_GYM_DIST_TIMEOUT", "120"))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=minutes))
    return Distributed(dist.get_rank(), dist.get_world_size(), local, device)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Distributed | None]:
    """:func:`init_distributed` for the ``with`` block; after it succeeds, a last barrier and
    the group is left. When the block raises, nothing more is called on the group: the
    others wait in a collective, and torchrun stops them once this process has exited."""
    group = init_distributed(device)
    yield group
    if group is not None and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def in_group() -> bool:
    """Whether this process is in a torchrun process group (errors are then said by rank 0)."""
    return dist.is_available() and dist.is_initialized()


__all__ = ["Distributed", "all_sum", "in_group", "init_distributed", "process_group",
           "rank_batches", "world_size"]
