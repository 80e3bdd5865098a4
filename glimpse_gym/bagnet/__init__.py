"""BagNet representation networks: the official BagNet-9/17/33 and small ones for small images.

>>> import torch
>>> from glimpse_gym.bagnet import bagnet_small
>>> model = bagnet_small(num_classes=10).eval()
>>> out = model(torch.zeros(2, 1, 60, 60))
>>> tuple(out.features.shape), tuple(out.logits.shape), model.rf, model.stride
((2, 32, 11, 11), (2, 10, 11, 11), 19, 4)
"""

from __future__ import annotations

from collections.abc import Callable

from glimpse_gym.bagnet.bottleneck import BottleneckBagNet, load_backbone
from glimpse_gym.bagnet.checkpoint import (
    build_bagnet,
    load_bagnet,
    load_checkpoint,
    save_checkpoint,
)
from glimpse_gym.bagnet.common import BagNetBase, BagNetOutput, image_logits, receptive_field
from glimpse_gym.bagnet.inference import evaluate_bagnet, iterate_batches, preprocess
from glimpse_gym.bagnet.nam import NAMChannelAttention
from glimpse_gym.bagnet.official import (
    OfficialBagNet,
    bagnet9,
    bagnet17,
    bagnet33,
    load_official_weights,
)
from glimpse_gym.bagnet.small import SmallBagNet, bagnet_small, bagnet_tiny

ARCHITECTURES: dict[str, Callable[..., BagNetBase]] = {
    "bagnet9": bagnet9,
    "bagnet17": bagnet17,
    "bagnet33": bagnet33,
    "bagnet-small": bagnet_small,
    "bagnet-tiny": bagnet_tiny,
    "custom": SmallBagNet,
}

__all__ = [
    "ARCHITECTURES",
    "BagNetBase",
    "BagNetOutput",
    "BottleneckBagNet",
    "NAMChannelAttention",
    "OfficialBagNet",
    "SmallBagNet",
    "bagnet9",
    "bagnet17",
    "bagnet33",
    "bagnet_small",
    "bagnet_tiny",
    "build_bagnet",
    "evaluate_bagnet",
    "image_logits",
    "iterate_batches",
    "load_backbone",
    "load_bagnet",
    "load_checkpoint",
    "load_official_weights",
    "preprocess",
    "receptive_field",
    "save_checkpoint",
]
