"""NAM channel attention (Liu et al. 2021, "Normalization-based Attention Module").

The batch-norm scale gammas double as channel importances: ``a = BN(x) * |gamma| / sum|gamma|``
and the output is ``sigmoid(a) * x``. An L1 penalty on the gammas (:meth:`penalty`) makes the
attention sparse. Pointwise, so a BagNet's receptive field is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class NAMChannelAttention(nn.Module):
    """``[N, C, H, W] -> [N, C, H, W]``: input gated by its normalised, gamma-weighted self."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` gates in (0, 1)."""
        gamma = self.bn.weight.abs()
        weight = gamma / gamma.sum().clamp_min(1e-12)
        return torch.sigmoid(self.bn(x) * weight.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x) * x

    def penalty(self) -> torch.Tensor:
        """L1 norm of the gammas, to add (times a small factor) to the training loss."""
        return self.bn.weight.abs().sum()
