"""The vector env's bank tables: a bank's arrays channels-last in memory on the device (or,
for a bank that does not fit, read from its memory-mapped files at each step), and numpy
views of the step state for the compiled loops."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from glimpse_gym.bank_arrays import HeadLogits, gather_cells, read_images
from glimpse_gym.envs.memory import large_empty
from glimpse_gym.shards import advise_random

if TYPE_CHECKING:
    from glimpse_gym.envs.source import GlimpseSource
    from glimpse_gym.envs.vector import GlimpseVectorEnv

CHUNK_BYTES = 64 * 2**20  # about this much of a bank array per block when loading it


def chunk(array: Any) -> int:
    """Images per block of a bank array ``[M, ...]``: about :data:`CHUNK_BYTES` (so a
    block's temporary copies stay small whatever the classes and the grid)."""
    per_image = math.prod(array.shape[1:]) * max(4, np.dtype(array.dtype).itemsize)
    return max(1, CHUNK_BYTES // max(per_image, 1))


class HostViews:
    """numpy views of a CPU vector env's step state (no copies: writes go to the tensors)."""

    def __init__(self, env: GlimpseVectorEnv) -> None:
        self.bases = env._bases.numpy()
        self.visited = env._visited.view(-1).numpy()
        self.unvisited = env._unvisited.view(-1).numpy()
        self.cells = env._cells.numpy()
        self.logit_sum = env._logit_sum.numpy()


def table_bytes(src: GlimpseSource, observation: str, bank_dtype: str) -> int:
    """Bytes :func:`bank_tables` holds in memory for ``src``."""
    m, cells, d, k = src.num_images, math.prod(src.grid), src.feature_dim, src.num_classes
    features = 0 if observation == "index" else d * (4 if bank_dtype == "float32" else 2)
    return m * cells * (features + 4 * k)


def available_memory() -> int | None:
    """Bytes of memory free for new data on this machine (Linux: MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new data where ``device``'s tables would live (the host's memory, or
    the GPU's), or None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory() if device.type == "cpu" else None


def fits_in_memory(need: int, in_memory: bool | None, device: torch.device,
                   what: str = "the bank's tables") -> bool:
    """Whether to hold ``need`` bytes of tables on ``device``: ``in_memory``, or by default
    when they take at most half its free memory; otherwise the rows are read from the bank's
    files on the host at each use. Asked to hold what does not fit: :class:`MemoryError`."""
    free = free_memory(device)
    fits = free is None or need <= free // 2
    if in_memory and not fits:
        raise MemoryError(f"in_memory=True: {what} take {need / 1e9:.1f} GB and "
                          f"{free / 1e9:.1f} GB of {device.type} memory are free; use "
                          "in_memory=False (read the memory-mapped bank at each step)")
    return fits if in_memory is None else bool(in_memory)


def hold_in_memory(src: GlimpseSource, observation: str, bank_dtype: str,
                   in_memory: bool | None, device: torch.device) -> bool:
    """:func:`fits_in_memory` for the vector env's tables of ``src``."""
    return fits_in_memory(table_bytes(src, observation, bank_dtype), in_memory, device)


class MappedRows:
    """The table of :func:`bank_tables` without the table: ``index_select(0, rows)`` reads
    rows ``image * H*W + cell`` (``[features | logits]``, or the logits alone) from the bank's
    memory-mapped arrays, float32 on ``device``."""

    def __init__(self, src: GlimpseSource, features: bool,
                 head: tuple[np.ndarray, np.ndarray] | None, device: torch.device) -> None:
        self.src, self.features, self.head, self.device = src, features, head, device
        self.grid = src.grid
        for array in (src.features, src.logits):  # each step reads cells at random
            advise_random(array)
        self.width = (src.feature_dim if features else 0) + src.num_classes

    def index_select(self, dim: int, rows: torch.Tensor) -> torch.Tensor:
        image, cell = np.divmod(rows.cpu().numpy(), math.prod(self.grid))
        i, j = np.divmod(cell, self.grid[1])
        head = self.head
        if head is None and isinstance(self.src.logits, HeadLogits) and self.features:
            head = (self.src.logits.weight, self.src.logits.bias)  # read the features once
        what = gather_cells(self.src.features, image, i, j) \
            if self.features or head is not None else None
        logits = gather_cells(self.src.logits, image, i, j) if head is None else \
            what @ head[0].T + head[1]
        out = np.concatenate([what, logits], axis=1) if self.features else logits
        return torch.from_numpy(np.ascontiguousarray(out, np.float32)).to(self.device)


class MappedGrids:
    """The full mode's ``[M, H*W, D]`` grids read from the bank per episode:
    ``select_into(images, out)`` fills ``out [N, H*W, D]``."""

    def __init__(self, src: GlimpseSource) -> None:
        self.src = src

    def select_into(self, images: torch.Tensor, out: torch.Tensor) -> None:
        grids = read_images(self.src.features, images.cpu().numpy())
        out.copy_(torch.from_numpy(grids).flatten(2).transpose(1, 2))


def mapped_tables(src: GlimpseSource, observation: str,
                  head: tuple[np.ndarray, np.ndarray] | None, device: torch.device
                  ) -> tuple[MappedGrids | None, MappedRows, int]:
    """:func:`bank_tables`' three, read from the memory-mapped bank at each step."""
    glimpse_features = observation in ("partial", "glimpses")
    grids = MappedGrids(src) if observation == "full" else None
    return grids, MappedRows(src, glimpse_features, head, device), \
        src.feature_dim if glimpse_features else 0


def bank_tables(src: GlimpseSource, observation: str, bank_dtype: str,
                head: tuple[np.ndarray, np.ndarray] | None, device: torch.device
                ) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """The bank in memory on ``device``, channels-last, one row per (image, cell), so that a
    glimpse is one row gather.

    The rows a glimpse reads form one table: ``[features | logits]`` in the partial and
    glimpses modes with a float32 bank (a cell's features and logits share cache lines),
    else the logits alone (the full mode reads the whole grid per episode instead). With a
    ``head`` (checked), the logits are the head applied to the features.

    Returns:
        ``features [M, H*W, D]`` (``bank_dtype``; None in the index mode), ``rows [M*H*W,
        width]`` float32 (what a glimpse gathers) and the column where the logits start in
        ``rows``.
    """
    if bank_dtype not in ("float32", "float16"):
        raise ValueError(f"bank_dtype must be 'float32' or 'float16', got {bank_dtype!r}")
    (h, w), d, k, m = src.grid, src.feature_dim, src.num_classes, src.num_images
    if observation in ("partial", "glimpses") and bank_dtype == "float32":
        table = channels_last(src.features, torch.float32, device, width=d + k)
        features, offset = table[..., :d], d
    else:  # the index mode observes no features: they stay in the (memory-mapped) bank
        features = None if observation == "index" else \
            channels_last(src.features, getattr(torch, bank_dtype), device)
        table, offset = large_empty((m, h * w, k), torch.float32, device), 0
    cell_logits = table[..., offset:offset + k]  # [M, H*W, K]
    if head is not None:
        weight, bias = (torch.as_tensor(a).to(device) for a in head)
        step = chunk(src.logits)
        for start in range(0, m, step):
            if features is None:
                block = torch.from_numpy(np.asarray(src.features[start:start + step],
                                                    np.float32)).to(device)
                block = block.flatten(2).transpose(1, 2)
            else:
                block = features[start:start + step]
            cell_logits[start:start + step] = torch.addmm(
                bias, block.flatten(0, 1).float(), weight.T).view(-1, h * w, k)
    else:
        load_channels_last(src.logits, cell_logits)
    return features, table.view(m * h * w, -1), offset


def channels_last(array: Any, dtype: torch.dtype, device: torch.device,
                  width: int | None = None) -> torch.Tensor:
    """A bank array ``[M, C, H, W]`` (memory-mapped) as an in-memory ``[M, H*W, width]``
    tensor (``width`` defaults to C; columns past C are left for the caller to fill),
    converted block by block (no second full copy; huge pages on the CPU)."""
    m, c = array.shape[:2]
    out = large_empty((m, math.prod(array.shape[2:]), c if width is None else width), dtype,
                      device)
    load_channels_last(array, out[..., :c])
    return out


def load_channels_last(array: Any, out: torch.Tensor) -> None:
    """Write a bank array ``[M, C, H, W]`` into ``out [M, H*W, C]`` (a view; any dtype and
    device) block by block."""
    step = chunk(array)
    for start in range(0, len(array), step):
        block = torch.from_numpy(np.array(array[start:start + step]))  # a writable copy
        out[start:start + step] = block.to(out.device).flatten(2).transpose(1, 2)


def wide(rows: torch.Tensor) -> torch.Tensor:
    """A float32 row table ``[R, C]`` viewed as ``[R, C/4] complex128`` when C is a multiple
    of 4 (else as it is): the same bytes, 16 to an element. torch's index_fill_ works element
    by element, and blanking the partial mode's revealed 128-byte rows through this view took
    about a third of the time here. (Gathers and scatters of 4096 rows stay float32: as
    wide elements they fall under torch's grain size for using both threads.)"""
    try:
        return rows.view(torch.complex128)
    except RuntimeError:
        return rows
