"""Soft attention for the small BagNets: NAM's spatial branch and ADCM.

**NAM, spatial branch** (Liu et al. 2021, "NAM: Normalization-based Attention Module"): a
batch norm over the H*W positions, each position normalised over the batch and the channels,
``a_p = BN_p(x) * |lambda_p| / sum_q |lambda_q|`` (lambda: that batch norm's scales), and the
output ``sigmoid(a) * x``; an L1 penalty on the lambdas (:meth:`NAMSpatialAttention.penalty`)
makes it sparse. One scale per position, so the module is tied to one grid size. Each output
depends on its own position only (and, in training, on the batch's statistics there), so a
BagNet's receptive field is unchanged.

**ADCM** (attention dropout convolutional module, after CBAM, Woo et al. 2018): attention
used as dropout probabilities, in training only.

- Channel part (CAD): each channel pooled three ways over the positions (max; average;
  stochastic pooling, a position drawn with probability proportional to its activation in
  training, the activation-weighted mean ``sum x^2 / sum x`` in eval), each pooled vector
  through one shared two-layer MLP ``C -> C/r -> C``, the three summed, a sigmoid: a keep
  probability per channel ``k_c``.
- Position part (PAD), on the channel part's output: a 1x1 conv to 3 channels, a 3x3 conv
  to 1 (padding 1), a sigmoid: a keep probability per position ``k_p``.
- In training each channel, then each position, is kept with its probability and scaled by
  ``1 / k`` (inverted dropout, so the expected output is the input); ``k`` is clipped to
  ``[min_keep, 1]``. The masks are trained by the straight-through estimator (:func:`_drop`),
  so a channel or position the loss depends on learns to be kept more often. In eval the
  module returns its input unchanged: the receptive field and the features at test time are
  those of the BagNet without it (in training the global pooling and the 3x3 conv let the
  masks depend on more of the image). :meth:`ADCM.attention` gives the two maps (the
  interpretability test ranks positions by ``k_p``).
"""

from __future__ import annotations

import torch
from torch import nn


class NAMSpatialAttention(nn.Module):
    """``[N, C, H, W] -> [N, C, H, W]`` for a fixed ``H x W``: each position gated by its
    normalised, lambda-weighted self."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.size = (height, width)
        self.bn = nn.BatchNorm1d(height * width)  # over (batch, channel) at each position

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` gates in (0, 1)."""
        n, c, h, w = x.shape
        if (h, w) != self.size:
            raise ValueError(f"NAM's spatial branch was built for a {self.size[0]}x"
                             f"{self.size[1]} grid, got {h}x{w}: it has one scale per position")
        lam = self.bn.weight.abs()
        weight = lam / lam.sum().clamp_min(1e-12)
        a = self.bn(x.flatten(2).transpose(1, 2)) * weight.view(1, -1, 1)  # [N, HW, C]
        return torch.sigmoid(a.transpose(1, 2).reshape(n, c, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x) * x

    def penalty(self) -> torch.Tensor:
        """L1 norm of the lambdas."""
        return self.bn.weight.abs().sum()


class ADCM(nn.Module):
    """``[N, C, H, W] -> [N, C, H, W]``: channels, then positions, dropped with probability
    ``1 - attention`` in training; the identity in eval."""

    def __init__(self, channels: int, reduction: int = 4, position_channels: int = 3,
                 min_keep: float = 0.2) -> None:
        super().__init__()
        if not 0 < min_keep <= 1:
            raise ValueError(f"min_keep must be in (0, 1], got {min_keep}")
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels))
        self.reduce = nn.Conv2d(channels, position_channels, 1)
        self.position = nn.Conv2d(position_channels, 1, 3, padding=1)
        self.min_keep = min_keep

    def _pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        flat = x.flatten(2)  # [N, C, HW]
        positive = flat.clamp_min(0)
        if self.training:  # stochastic pooling: one position per channel, by activation
            total = positive.sum(2, keepdim=True)
            probs = torch.where(total > 0, positive / total.clamp_min(1e-12),
                                torch.full_like(positive, 1 / flat.shape[2]))
            pick = torch.multinomial(probs.flatten(0, 1), 1).view(*flat.shape[:2], 1)
            stochastic = flat.gather(2, pick).squeeze(2)
        else:  # its expectation
            stochastic = (positive * positive).sum(2) / positive.sum(2).clamp_min(1e-12)
        return [flat.amax(2), flat.mean(2), stochastic]

    def channel_keep(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` keep probabilities (CAD)."""
        return torch.sigmoid(sum(self.mlp(p) for p in self._pooled(x)))

    def position_keep(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, H, W]`` keep probabilities (PAD)."""
        return torch.sigmoid(self.position(self.reduce(x)))

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The channel map ``[N, C]`` and the position map ``[N, 1, H, W]``. The position map
        is that of the input itself: in training the position part sees the input with
        channels dropped and rescaled, whose expectation is the input."""
        return self.channel_keep(x), self.position_keep(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        x = _drop(x, self.floor(self.channel_keep(x))[:, :, None, None])
        return _drop(x, self.floor(self.position_keep(x)))

    def floor(self, attention: torch.Tensor) -> torch.Tensor:
        """The keep probability of an attention ``a`` in ``(0, 1)``:
        ``min_keep + (1 - min_keep) * a``, so no unit is dropped for good and the gradient
        reaches every attention value (a clip at ``min_keep`` would stop it there)."""
        return self.min_keep + (1 - self.min_keep) * attention


def _drop(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Inverted dropout of ``x`` with keep probabilities ``keep`` (broadcast), trained by the
    straight-through estimator: the forward pass uses the Bernoulli mask itself, the
    backward pass takes its derivative with respect to ``keep`` as 1 (Bengio et al. 2013).
    With the mask detached instead, the only gradient reaching ``keep`` would be the
    ``1 / keep`` rescale's, which lowers the keep probability of exactly the features the
    loss wants larger; through the straight-through mask the expected gradient has the sign
    of the true one for a convex loss: keeping a feature the loss depends on more often
    lowers it."""
    mask = torch.bernoulli(keep.detach())
    return x * (keep + (mask - keep).detach()) / keep


__all__ = ["ADCM", "NAMSpatialAttention"]
