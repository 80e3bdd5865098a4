"""What every BagNet in this package shares: its output, geometry and head.

A BagNet maps images ``[N, C, H, W]`` to :class:`BagNetOutput`: "what" features
``[N, D, H', W']`` and per-cell class logits ``[N, K, H', W']``, where the logits are a linear
1x1 head on the features (:meth:`BagNetBase.head`), so a feature bank can store the features
and apply a head later. Cell ``(i, j)`` (row-major index ``i * W' + j``) sees the input pixels
``[i * stride, i * stride + rf) x [j * stride, j * stride + rf)`` (valid padding throughout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn


class BagNetOutput(NamedTuple):
    """``features: [N, D, H', W']`` and ``logits: [N, K, H', W']`` (same dtype and device)."""

    features: torch.Tensor
    logits: torch.Tensor


def receptive_field(layers: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Receptive field and total stride of a chain of valid convolutions.

    Args:
        layers: ``(kernel, stride)`` of each convolution along the longest path, in order.

    Returns:
        ``(rf, stride)``: a cell sees ``rf x rf`` input pixels, neighbouring cells are
        ``stride`` pixels apart.
    """
    rf, jump = 1, 1
    for kernel, stride in layers:
        rf += (kernel - 1) * jump
        jump *= stride
    return rf, jump


class BagNetBase(nn.Module):
    """Interface of the official and the small BagNets.

    Subclasses set ``rf``, ``stride``, ``feature_dim``, ``num_classes``, ``in_channels``
    and implement ``trunk``, ``head`` and ``grid_size``.
    """

    rf: int
    stride: int
    feature_dim: int
    num_classes: int
    in_channels: int

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` (normalised) -> what-features ``[N, D, H', W']``."""
        raise NotImplementedError

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """What-features ``[N, D, H', W']`` -> per-cell logits ``[N, K, H', W']``."""
        raise NotImplementedError

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The feature grid ``(H', W')`` for an input of ``height x width`` pixels."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> BagNetOutput:
        features = self.trunk(x)
        return BagNetOutput(features, self.head(features))

    def head_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The head as ``weight: [K, D]`` and ``bias: [K]`` (for feature banks)."""
        raise NotImplementedError

    def regularizer(self) -> torch.Tensor:
        """Extra training penalty (the NAM L1 on attention gammas); zero when there is none."""
        return torch.zeros((), device=next(self.parameters()).device)

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Pixel box ``(top, left, bottom, right)`` (exclusive end) seen by cell ``(row, col)``."""
        top, left = row * self.stride, col * self.stride
        return top, left, top + self.rf, left + self.rf


def cell_boxes(grid: tuple[int, int], rf: int, stride: int) -> np.ndarray:
    """``[H'*W', 4]`` int pixel boxes ``(top, left, bottom, right)`` of the cells, row-major."""
    h, w = grid
    rows, cols = np.divmod(np.arange(h * w), w)
    top, left = rows * stride, cols * stride
    return np.stack([top, left, top + rf, left + rf], axis=1)


def image_logits(logits: torch.Tensor) -> torch.Tensor:
    """Image-level logits ``[N, K]``: the spatial mean of per-cell logits ``[N, K, H', W']``."""
    return logits.mean(dim=(2, 3))
