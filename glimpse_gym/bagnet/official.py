"""The official BagNet-9/17/33 (Brendel and Bethge, ICLR 2019), key for key.

Same modules, ``state_dict`` keys and shapes as ``bagnets/pytorchnet.py`` of the authors'
repository, so the published ImageNet weights load with ``strict=True`` from a local file
(:func:`load_official_weights`). Facts: a 1x1 then a 3x3 valid stem conv without max-pool;
ResNet-50 bottleneck stages of [3, 4, 6, 3] blocks with strides [2, 2, 2, 1]; only the first
``kernel3[i]`` blocks of stage i use a 3x3 conv (valid padding, the residual cropped at the
bottom-right to match); receptive field 9, 17 or 33 pixels, total stride 8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from glimpse_gym.bagnet.common import BagNetBase, receptive_field
from glimpse_gym.errors import CheckpointError
from glimpse_gym.fileio import read_torch

EXPANSION = 4
BN_MOMENTUM = 0.001  # the official value
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_STRIDES = (2, 2, 2, 1)
KERNEL3 = {9: (1, 1, 0, 0), 17: (1, 1, 1, 0), 33: (1, 1, 1, 1)}


class Bottleneck(nn.Module):
    """1x1 -> kxk (valid, strided) -> 1x1 with a residual cropped to the output size."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, kernel: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, kernel, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        diff = residual.shape[-1] - out.shape[-1]
        if diff:
            residual = residual[:, :, :-diff, :-diff]
        return self.relu(out + residual)

    def out_size(self, n: int) -> int:
        return (n - self.kernel) // self.stride + 1


class OfficialBagNet(BagNetBase):
    """BagNet with the official module tree; ``forward`` gives features and per-cell logits.

    ``features`` are the 2048-channel stage-4 activations; ``logits`` apply ``fc`` at every
    cell (the official ``avg_pool=False`` output, moved to ``[N, K, H', W']``).
    """

    def __init__(self, kernel3: tuple[int, int, int, int], num_classes: int = 1000,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.conv1 = nn.Conv2d(in_channels, 64, 1, bias=False)
        self.conv2 = nn.Conv2d(64, 64, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        inplanes, path = 64, [(3, 1)]
        for i, (planes, blocks, stride) in enumerate(zip(STAGE_WIDTHS, STAGE_BLOCKS,
                                                         STAGE_STRIDES, strict=True)):
            layers = []
            for b in range(blocks):
                kernel = 3 if b < kernel3[i] else 1
                s = stride if b == 0 else 1
                down = None
                if b == 0 and (s != 1 or inplanes != planes * EXPANSION):
                    down = nn.Sequential(
                        nn.Conv2d(inplanes, planes * EXPANSION, 1, stride=s, bias=False),
                        nn.BatchNorm2d(planes * EXPANSION, momentum=BN_MOMENTUM),
                    )
                layers.append(Bottleneck(inplanes, planes, s, kernel, down))
                path.append((kernel, s))
                inplanes = planes * EXPANSION
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.fc = nn.Linear(inplanes, num_classes)
        self.feature_dim = inplanes
        self.rf, self.stride = receptive_field(path)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def head_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc.weight, self.fc.bias

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        sizes = []
        for n in (height, width):
            n -= 2  # stem 3x3
            for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
                for block in stage:
                    n = block.out_size(n)
            sizes.append(n)
        return sizes[0], sizes[1]


def _official(rf: int, num_classes: int, in_channels: int) -> OfficialBagNet:
    return OfficialBagNet(KERNEL3[rf], num_classes=num_classes, in_channels=in_channels)


def bagnet9(num_classes: int = 1000, in_channels: int = 3) -> OfficialBagNet:
    """BagNet-9 (Brendel and Bethge 2019): 9x9-pixel receptive field, stride 8."""
    return _official(9, num_classes, in_channels)


def bagnet17(num_classes: int = 1000, in_channels: int = 3) -> OfficialBagNet:
    """BagNet-17 (Brendel and Bethge 2019): 17x17-pixel receptive field, stride 8."""
    return _official(17, num_classes, in_channels)


def bagnet33(num_classes: int = 1000, in_channels: int = 3) -> OfficialBagNet:
    """BagNet-33 (Brendel and Bethge 2019): 33x33-pixel receptive field, stride 8."""
    return _official(33, num_classes, in_channels)


def read_state_dict(path: Path, what: str) -> dict[str, Any]:
    """The ``state_dict`` in ``path`` (a bare one, or a checkpoint's ``state_dict``), keys
    without DistributedDataParallel's ``module.`` prefix; read with ``weights_only=True``.

    Raises:
        CheckpointError: no readable file, or no state_dict in it.
    """
    state = read_torch(path, what)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def load_official_weights(model: OfficialBagNet, path: str | Path) -> OfficialBagNet:
    """Load a published BagNet ``state_dict`` (a local ``.pth`` file) with ``strict=True``.

    The file is read with ``weights_only=True``: tensors and plain data only.

    Raises:
        CheckpointError: no file at ``path``, a file that is not a readable ``state_dict``,
            or keys or shapes that differ from the model's (torch's message lists them).
    """
    path = Path(path).expanduser()
    state = read_state_dict(path, "BagNet state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit {type(model).__name__} "
                              f"(rf {model.rf}): {exc}") from None
    return model
