"""The vector env's in-memory tables: a bank's arrays channels-last on the device, and numpy
views of the step state for the compiled loops."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from glimpse_gym.envs.memory import large_empty

if TYPE_CHECKING:
    from glimpse_gym.envs.source import GlimpseSource
    from glimpse_gym.envs.vector import GlimpseVectorEnv

CHUNK = 1024  # images per block when loading the bank


class HostViews:
    """numpy views of a CPU vector env's step state (no copies: writes go to the tensors)."""

    def __init__(self, env: GlimpseVectorEnv) -> None:
        self.bases = env._bases.numpy()
        self.visited = env._visited.view(-1).numpy()
        self.unvisited = env._unvisited.view(-1).numpy()
        self.cells = env._cells.numpy()
        self.logit_sum = env._logit_sum.numpy()


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
        for start in range(0, m, CHUNK):
            if features is None:
                block = torch.from_numpy(np.asarray(src.features[start:start + CHUNK],
                                                    np.float32)).to(device)
                block = block.flatten(2).transpose(1, 2)
            else:
                block = features[start:start + CHUNK]
            cell_logits[start:start + CHUNK] = torch.addmm(
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
    for start in range(0, len(array), CHUNK):
        block = torch.from_numpy(np.array(array[start:start + CHUNK]))  # a writable copy
        out[start:start + CHUNK] = block.to(out.device).flatten(2).transpose(1, 2)


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
