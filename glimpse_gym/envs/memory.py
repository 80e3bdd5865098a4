"""Large CPU tensors on transparent huge pages, for the vector env's random-row gathers.

The vector env gathers rows from the in-memory feature bank at random (a glimpse reads 4096
cells of 128 B from a bank of up to a gigabyte; a reset in the ``full`` mode reads 4096 grids
of 15 kB). With 4 kB pages nearly every row costs a TLB miss; with 2 MB pages the page tables
of the whole bank fit in the TLB's reach far better. Linux serves 2 MB pages to a region that
asks for them with ``madvise(MADV_HUGEPAGE)`` when transparent huge pages are in ``always``
or ``madvise`` mode (``/sys/kernel/mm/transparent_hugepage/enabled``). Elsewhere (other
systems, THP off, CUDA) :func:`large_empty` is ``torch.empty``.
"""

from __future__ import annotations

import contextlib
import math
import mmap

import torch

HUGE_PAGE = 2 * 2**20


def large_empty(shape: tuple[int, ...], dtype: torch.dtype,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """An uninitialised contiguous tensor; on the CPU, in memory advised for huge pages.

    The tensor keeps its memory alive (``torch.frombuffer`` holds the mapping).
    """
    device = torch.device(device)
    numel = math.prod(shape)
    size = numel * torch.empty((), dtype=dtype).element_size()
    if device.type != "cpu" or size < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=dtype, device=device)
    buf = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # THP unsupported here: ordinary pages, still right
        buf.madvise(mmap.MADV_HUGEPAGE)
    probe = torch.frombuffer(buf, dtype=torch.uint8, count=1)
    offset = -probe.data_ptr() % HUGE_PAGE  # start on a 2 MB boundary
    return torch.frombuffer(buf, dtype=dtype, count=numel, offset=offset).view(shape)
