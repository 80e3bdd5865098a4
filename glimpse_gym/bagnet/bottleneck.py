"""A BagNet with a learned 1x1 bottleneck: low-dimensional what-features for big backbones.

The official BagNets' cells carry 2048 features; a bank of ImageNet's training set would hold
3 TB of them in float16. :class:`BottleneckBagNet` puts a 1x1 convolution (linear, no
activation) from the backbone's D_b features to D (for example 64) and a new per-cell linear
head on top; its ``features`` are the D-dimensional ones, so a bank stores those and the
head computes the logits from them. Trained with the per-location loss, usually with the
backbone frozen at published weights (``glimpse pretrain-bagnet --bottleneck 64
--backbone-weights bagnet33.pth --freeze-backbone``): only the bottleneck and the head learn,
and the backbone's BatchNorm statistics stay as they were. The receptive field, stride and
grid are the backbone's.

>>> import torch
>>> from glimpse_gym.bagnet import bagnet_tiny
>>> net = BottleneckBagNet(bagnet_tiny(num_classes=10), 4).eval()
>>> out = net(torch.zeros(2, 1, 32, 32))
>>> tuple(out.features.shape), tuple(out.logits.shape), net.rf, net.stride
((2, 4, 10, 10), (2, 10, 10, 10), 13, 2)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from glimpse_gym.bagnet.common import BagNetBase
from glimpse_gym.bagnet.official import read_state_dict
from glimpse_gym.errors import CheckpointError

BACKBONE_HEADS = ("fc", "classifier")
"""the backbone's own per-cell heads, which the bottleneck's head replaces (not kept)"""


class BottleneckBagNet(BagNetBase):
    """``backbone.trunk`` -> 1x1 conv to ``dim`` channels -> per-cell linear head."""

    def __init__(self, backbone: BagNetBase, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"the bottleneck needs at least 1 channel, got {dim}")
        for name in BACKBONE_HEADS:  # unused: the head below reads the bottleneck
            if hasattr(backbone, name):
                delattr(backbone, name)
        self.backbone = backbone
        self.reduce = nn.Conv2d(backbone.feature_dim, dim, 1)
        self.fc = nn.Linear(dim, backbone.num_classes)
        self.rf, self.stride = backbone.rf, backbone.stride
        self.in_channels, self.num_classes = backbone.in_channels, backbone.num_classes
        self.feature_dim = dim
        self.frozen = False

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.backbone.trunk(x))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def head_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc.weight, self.fc.bias

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return self.backbone.grid_size(height, width)

    def regularizer(self) -> torch.Tensor:
        return self.backbone.regularizer()

    def freeze_backbone(self) -> BottleneckBagNet:
        """Stop the backbone learning: no gradients, BatchNorm statistics kept (it stays in
        eval mode when the model trains)."""
        self.frozen = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        return self

    def train(self, mode: bool = True) -> BottleneckBagNet:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self


def load_backbone(model: BottleneckBagNet, path: str | Path) -> BottleneckBagNet:
    """Load a backbone's weights from ``path``: a published BagNet ``state_dict`` (``.pth``)
    or a ``glimpse pretrain-bagnet`` checkpoint of the same architecture. Its own head
    (``fc.*`` / ``classifier.*``) is left out; every other weight must fit exactly.

    Raises:
        CheckpointError: no readable file, or weights that do not fit (naming them).
    """
    path = Path(path).expanduser()
    state = {k: v for k, v in read_state_dict(path, "BagNet backbone weights").items()
             if not k.startswith(tuple(f"{h}." for h in BACKBONE_HEADS))}
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the backbone "
                              f"{type(model.backbone).__name__} (rf {model.rf}): {exc}") from None
    return model


__all__ = ["BACKBONE_HEADS", "BottleneckBagNet", "load_backbone"]
