"""``glimpse pretrain-bagnet --scales``: the scales checked, and the errors at each scale."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from glimpse_gym.bagnet import evaluate_bagnet
from glimpse_gym.datasets import ImageDataset, TensorImageDataset
from glimpse_gym.errors import UsageError
from glimpse_gym.multiscale import at_scale, check_scales, level_size, resize_images

if TYPE_CHECKING:
    from train.pretrain_bagnet import PretrainConfig


def parse_scales(cfg: PretrainConfig, model: torch.nn.Module, train: ImageDataset) -> list[float]:
    """``--scales`` parsed and checked against the images and the receptive field."""
    if cfg.scales is None:
        return []
    try:
        scales = check_scales([float(x) for x in cfg.scales.split(",")])
    except ValueError:
        raise UsageError(f"--scales must be comma-separated numbers, got {cfg.scales!r}") from None
    if not train.in_memory:
        raise UsageError(f"--scales needs a dataset held in memory; {cfg.dataset!r} is read "
                         "from disk image by image")
    size = level_size(train.image_shape[1:], scales[0])
    if min(model.grid_size(*size)) < 1:
        raise UsageError(f"--scales: at {scales[0]} the images are {size[0]}x{size[1]}, "
                         f"smaller than the receptive field ({model.rf} px)")
    return scales


def by_scale(model: torch.nn.Module, data: ImageDataset, scales: list[float],
              mean: list[float], std: list[float], device: torch.device,
              cfg: PretrainConfig, bn_by_scale: dict[str, Any] | None = None
              ) -> dict[str, dict[str, Any]]:
    """The image error and cell accuracy of ``data`` resized by each scale (with that
    scale's BatchNorm statistics where ``bn_by_scale`` has them)."""
    rows = {}
    for s in scales:
        resized = TensorImageDataset(data.name, data.split, resize_images(
            data.images, level_size(data.image_shape[1:], s)), data.labels, data.class_names,
            mean, std)
        with at_scale(model, bn_by_scale, s):
            rows[f"{s:g}"] = evaluate_bagnet(model, resized, mean, std, device,
                                             cfg.eval_batch_size, cfg.num_workers)
    return rows


__all__ = ["by_scale", "parse_scales"]
