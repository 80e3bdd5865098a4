"""MultiScale-v0's vector env on banks it does not copy: rows read from the levels' files.

:class:`~glimpse_gym.envs.MultiScaleVectorEnv` holds its banks as tables in memory (the
action cells' features and logits, level 0's grid and vote). With ``in_memory=False``, or by
default when those tables would take more than half the free memory, it reads them from the
multi-scale bank's memory-mapped files instead: these classes answer the same
``index_select(0, rows)`` with the rows read at each call.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from glimpse_gym.bank_arrays import gather_cells, read_images
from glimpse_gym.envs.tables import fits_in_memory
from glimpse_gym.shards import advise_random

if TYPE_CHECKING:
    from glimpse_gym.envs.multiscale_env import MultiScaleEnv


def memory_tables(spec: MultiScaleEnv, dev: torch.device, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bank as tables on ``dev``: the action cells' features ``[M*A, D]`` (``dtype``) and
    logits ``[M*A, K]``, level 0's flat grids ``[M, H0*W0*D]`` and vote ``[M, K]`` float64."""
    coarse, *levels = spec.bank.levels
    m, a, d = spec.bank.num_images, spec.num_actions, spec.feature_dim
    k = coarse.bank.num_classes
    features = torch.empty((m, a, d), dtype=dtype)
    logits = torch.empty((m, a, k), dtype=torch.float32)
    for level, off in zip(levels, spec.offsets[:-1], strict=True):
        cells = level.num_cells
        for start in range(0, m, 4096):  # channels-last, a block of images at a time
            f = torch.from_numpy(np.array(level.bank.features[start:start + 4096]))
            g = torch.from_numpy(np.array(level.bank.logits[start:start + 4096]))
            stop = start + len(f)
            features[start:stop, off:off + cells] = f.flatten(2).transpose(1, 2)
            logits[start:stop, off:off + cells] = g.flatten(2).transpose(1, 2)
    cf = torch.from_numpy(np.array(coarse.bank.features))  # [M, D, H0, W0]
    flat = cf.flatten(2).transpose(1, 2).reshape(m, -1).contiguous().to(dev)
    prior = torch.from_numpy(np.array(coarse.bank.logits)).flatten(2).double().mean(2)
    return features.view(m * a, d).to(dev), logits.view(m * a, k).to(dev), flat, prior.to(dev)


def multiscale_table_bytes(spec: MultiScaleEnv, bank_dtype: str) -> int:
    """Bytes the vector env's in-memory tables take for ``spec``'s bank."""
    coarse = spec.bank.levels[0]
    m, a, d = spec.bank.num_images, spec.num_actions, spec.feature_dim
    k = coarse.bank.num_classes
    per_image = a * (d * (4 if bank_dtype == "float32" else 2) + 4 * k) \
        + coarse.num_cells * d * 4 + k * 8
    return m * per_image


def hold_multiscale_in_memory(spec: MultiScaleEnv, bank_dtype: str, in_memory: bool | None,
                              device: torch.device) -> bool:
    """As :func:`glimpse_gym.envs.tables.hold_in_memory`, for a multi-scale bank."""
    return fits_in_memory(multiscale_table_bytes(spec, bank_dtype), in_memory, device,
                          "the multi-scale bank's tables")


class ActionRows:
    """``index_select(0, rows)``: rows ``image * A + action`` of the action cells'
    ``features`` ``[B, D]`` or ``logits`` ``[B, K]``, float32, read from the levels' banks."""

    def __init__(self, spec: MultiScaleEnv, array: str, device: torch.device) -> None:
        self.levels = spec.bank.levels[1:]
        self.level = spec.action_level - 1  # index into self.levels
        self.cell = spec.action_cell
        self.num_actions, self.array, self.device = spec.num_actions, array, device
        first = getattr(self.levels[0].bank, array)
        self.width = first.shape[1]
        for level in self.levels:
            advise_random(getattr(level.bank, array))

    def index_select(self, dim: int, rows: torch.Tensor) -> torch.Tensor:
        image, action = np.divmod(rows.cpu().numpy(), self.num_actions)
        level, cell = self.level[action], self.cell[action]
        out = np.empty((len(rows), self.width), np.float32)
        for li in np.unique(level):
            sel = np.flatnonzero(level == li)
            bank = self.levels[li].bank
            i, j = np.divmod(cell[sel], bank.grid[1])
            out[sel] = gather_cells(getattr(bank, self.array), image[sel], i, j)
        return torch.from_numpy(out).to(self.device)


class CoarseRows:
    """``index_select(0, images)``: level 0's grids channels-last and flat, ``[B, H0*W0*D]``
    float32, and :meth:`prior`, its vote (the mean of its cells' logits), ``[B, K]`` float64,
    read per episode."""

    def __init__(self, spec: MultiScaleEnv, device: torch.device) -> None:
        self.bank, self.device = spec.bank.levels[0].bank, device
        self.shape = (spec.bank.num_images, math.prod(self.bank.grid) * self.bank.features.shape[1])

    def index_select(self, dim: int, images: torch.Tensor) -> torch.Tensor:
        grids = read_images(self.bank.features, images.cpu().numpy())
        flat = torch.from_numpy(grids).flatten(2).transpose(1, 2).reshape(len(images), -1)
        return flat.to(self.device)

    def prior(self, images: torch.Tensor) -> torch.Tensor:
        logits = read_images(self.bank.logits, images.cpu().numpy(), np.float64)
        return torch.from_numpy(logits.reshape(*logits.shape[:2], -1).mean(2)).to(self.device)


__all__ = ["ActionRows", "CoarseRows", "hold_multiscale_in_memory", "memory_tables",
           "multiscale_table_bytes"]
