"""A BagNet at several scales: images resized by a scale, each scale's BatchNorm statistics,
and the FLOPs of a pass (what multi-scale banks and ``pretrain-bagnet --scales`` share)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from glimpse_gym.bagnet.common import BagNetBase
from glimpse_gym.bagnet.inference import preprocess


def level_size(image_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(height, width)`` of an image of ``image_size`` resized by ``scale``."""
    return max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale))


def resize_images(images: torch.Tensor, size: tuple[int, int], chunk: int = 2048,
                  progress: bool = False, desc: str = "resize") -> torch.Tensor:
    """``[N, C, H, W] uint8`` resized to ``size`` (antialiased bilinear, rounded)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.uint8)
    for start in tqdm(range(0, len(images), chunk), desc=desc, disable=not progress,
                      leave=False):
        x = images[start:start + chunk].float()
        y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


@torch.no_grad()
def batchnorm_statistics(model: BagNetBase, images: torch.Tensor, scales: Sequence[float],
                         mean: Sequence[float], std: Sequence[float],
                         device: torch.device | str = "cpu", batch_size: int = 256
                         ) -> dict[str, dict[str, torch.Tensor]]:
    """The BatchNorm statistics of ``model`` at each scale, ``{"0.5": {name: tensor}, ...}``:
    re-estimated on ``images [N, C, H, W] uint8`` resized by that scale (the average over all
    its batches). A BagNet trained across scales normalises every batch at its own scale, but
    its running statistics mix the scales; each scale's own statistics serve it far better.
    ``model`` is left as it was."""
    net = copy.deepcopy(model).to(device).train()
    norms = {name for name, m in net.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    out = {}
    for s in scales:
        for name, m in net.named_modules():
            if name in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            net(preprocess(resize_images(x, level_size(x.shape[-2:], s)), mean, std, device))
        out[f"{s:g}"] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()
                         if k.rpartition(".")[0] in norms}
    return out


@contextlib.contextmanager
def at_scale(model: BagNetBase, bn_by_scale: dict[str, dict[str, torch.Tensor]] | None,
             scale: float) -> Iterator[BagNetBase]:
    """``model`` with the BatchNorm statistics of ``scale`` (a checkpoint's ``bn_by_scale``)
    inside the block, its own again after it; unchanged where none are stored for ``scale``."""
    stats = (bn_by_scale or {}).get(f"{scale:g}")
    if not stats:
        yield model
        return
    own = {k: v.clone() for k, v in model.state_dict().items() if k in stats}
    model.load_state_dict(stats, strict=False)
    try:
        yield model
    finally:
        model.load_state_dict(own, strict=False)


def bagnet_flops(model: BagNetBase, channels: int, size: tuple[int, int]) -> int:
    """Floating-point operations of one forward pass of ``model`` on one image of ``size``
    (torch's FLOP counter: 2 per multiply-add of the convolutions and linear layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    x = torch.zeros((1, channels, *size), device=param.device, dtype=param.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


__all__ = ["at_scale", "bagnet_flops", "batchnorm_statistics", "level_size", "resize_images"]
