"""Small BagNets for small images: a stack of valid 3x3 (or kxk) convolutions.

Each layer is ``Conv(k, stride, valid, no bias) -> BN -> ReLU``; then optional soft
attention (NAM's channel and spatial branches, ADCM; :mod:`glimpse_gym.bagnet.attention`),
a 1x1 bottleneck to ``feature_dim`` "what" channels (BN, ReLU) and a linear 1x1
head to the class logits. With valid padding, a cell's receptive field and the grid follow
from ``kernels`` and ``strides`` alone (:func:`receptive_field`):

| factory | kernels | strides | rf | stride | grid on |
|---|---|---|---|---|---|
| :func:`bagnet_small` | 3,3,3,3 + two 1x1 | 2,1,2,1 | 19 | 4 | 11x11 on 60x60 |
| :func:`bagnet_tiny` | 3,3,3,3 | 1,2,1,1 | 13 | 2 | 10x10 on 32x32 |

``grid = (size - rf) // stride + 1`` per side.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from glimpse_gym.bagnet.attention import ADCM, NAMSpatialAttention
from glimpse_gym.bagnet.common import BagNetBase, receptive_field
from glimpse_gym.bagnet.nam import NAMChannelAttention


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallBagNet(BagNetBase):
    """A configurable small BagNet (see the module table for the presets).

    Args:
        num_classes: K, the number of classes.
        in_channels: C of the input images.
        kernels: kernel size of each conv layer (valid padding).
        strides: stride of each conv layer.
        widths: output channels of each conv layer.
        feature_dim: D, channels of the "what" features.
        nam: insert NAM channel attention before the bottleneck.
        nam_spatial: then NAM's spatial branch (needs ``image_size``: one scale per
            position of the grid of that size).
        adcm: ADCM on the what-features, just before the per-cell classifier: attention
            used as dropout in training, the identity in eval (the classifier is linear, so
            the eval logits are the expectation of the training ones; before the "what"
            layer's batch norm, dropout's variance would skew its running statistics).
        image_size: ``(H, W)`` of the input images, for ``nam_spatial``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        kernels: Sequence[int] = (3, 3, 3, 3, 1),
        strides: Sequence[int] = (1, 2, 2, 1, 1),
        widths: Sequence[int] = (32, 64, 128, 128, 128),
        feature_dim: int = 32,
        nam: bool = False,
        nam_spatial: bool = False,
        adcm: bool = False,
        image_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not (len(kernels) == len(strides) == len(widths)) or not kernels:
            raise ValueError(f"kernels, strides and widths must be non-empty and of one length; "
                             f"got {len(kernels)}, {len(strides)}, {len(widths)}")
        self.kernels, self.strides, self.widths = tuple(kernels), tuple(strides), tuple(widths)
        self.in_channels, self.num_classes, self.feature_dim = in_channels, num_classes, feature_dim
        layers, cin = [], in_channels
        for k, s, w in zip(self.kernels, self.strides, self.widths, strict=True):
            layers.append(_conv_bn_relu(cin, w, k, s))
            cin = w
        self.layers = nn.Sequential(*layers)
        self.nam = NAMChannelAttention(cin) if nam else None
        self.rf, self.stride = receptive_field(zip(self.kernels, self.strides, strict=True))
        self.nam_spatial = None
        if nam_spatial:
            if image_size is None:
                raise ValueError("nam_spatial needs image_size (H, W): NAM's spatial branch "
                                 "has one scale per position of the grid")
            self.nam_spatial = NAMSpatialAttention(*self.grid_size(*image_size))
        self.what = _conv_bn_relu(cin, feature_dim, 1, 1)
        self.adcm = ADCM(feature_dim) if adcm else None
        self.classifier = nn.Conv2d(feature_dim, num_classes, 1)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x)
        for block in (self.nam, self.nam_spatial):
            if block is not None:
                x = block(x)
        return self.what(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features if self.adcm is None else self.adcm(features))

    def head_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier.weight[:, :, 0, 0], self.classifier.bias

    def regularizer(self) -> torch.Tensor:
        """NAM's L1 on its gammas and lambdas (zero without NAM)."""
        total = super().regularizer()
        for block in (self.nam, self.nam_spatial):
            if block is not None:
                total = total + block.penalty()
        return total

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        sizes = []
        for n in (height, width):
            for k, s in zip(self.kernels, self.strides, strict=True):
                n = (n - k) // s + 1
            sizes.append(n)
        return sizes[0], sizes[1]


def bagnet_small(num_classes: int = 10, in_channels: int = 1, width: int = 32,
                 feature_dim: int = 32, nam: bool = False, nam_spatial: bool = False,
                 adcm: bool = False, image_size: Sequence[int] | None = None) -> SmallBagNet:
    """Small BagNet for 60x60 canvases: rf 19, stride 4, an 11x11 grid on 60x60.

    Four valid 3x3 convs (strides 2, 1, 2, 1) and two 1x1 convs, widths
    ``width * (1, 1.5, 3, 4, 4, 4)``: the valid-padding, mostly-1x1 design of BagNet
    (Brendel and Bethge, ICLR 2019) scaled to MNIST-sized digits.
    """
    widths = tuple(int(width * m) for m in (1, 1.5, 3, 4, 4, 4))
    return SmallBagNet(num_classes, in_channels, (3, 3, 3, 3, 1, 1), (2, 1, 2, 1, 1, 1),
                       widths, feature_dim, nam, nam_spatial, adcm, image_size)


def bagnet_tiny(num_classes: int = 10, in_channels: int = 1, width: int = 16,
                feature_dim: int = 16, nam: bool = False, nam_spatial: bool = False,
                adcm: bool = False, image_size: Sequence[int] | None = None) -> SmallBagNet:
    """Tiny BagNet for the 32x32 ``digits`` canvas: rf 13, stride 2, a 10x10 grid on 32x32."""
    return SmallBagNet(num_classes, in_channels, (3, 3, 3, 3), (1, 2, 1, 1),
                       tuple(width * m for m in (1, 2, 4, 4)), feature_dim, nam, nam_spatial,
                       adcm, image_size)
