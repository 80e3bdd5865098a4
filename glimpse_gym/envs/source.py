"""Where an environment's images come from: a feature bank, or the embedded default.

:func:`load_source` returns a :class:`GlimpseSource`: per-image what-features, per-cell
logits, labels, optionally the images, and the grid geometry. With no bank it runs the
embedded digits BagNet over the ``digits`` split in memory (about a second; cached per
process), so ``gym.make("Glimpse-v0")`` works offline at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glimpse_gym.bagnet import iterate_batches, load_bagnet, preprocess
from glimpse_gym.bagnet.common import cell_boxes
from glimpse_gym.bank import FeatureBank
from glimpse_gym.datasets import make_dataset
from glimpse_gym.pretrained import resolve_checkpoint


@dataclass(frozen=True, eq=False)
class GlimpseSource:
    """Read-only arrays an environment samples episodes from.

    Attributes:
        features: ``[N, D, H, W] float16`` what-features (a memory map for banks).
        logits: ``[N, K, H, W] float32`` per-cell logits.
        labels: ``[N] int64``.
        images: ``[N, C, Hi, Wi] uint8`` or None.
        head_weight, head_bias: ``[K, D]``, ``[K]`` float32, the BagNet head.
        feature_range: ``(min, max)`` of ``features`` (the observation bounds).
        rf, stride: receptive field and stride of a cell, in pixels.
        image_shape: ``(C, Hi, Wi)``.
        class_names: one per class.
        description: dataset, split, model hash, bank path, grid, feature dim and class
            count (see :func:`describe`; recorded by trained policies, checked when they run).
    """

    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    images: np.ndarray | None
    head_weight: np.ndarray
    head_bias: np.ndarray
    feature_range: tuple[float, float]
    rf: int
    stride: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    description: dict[str, Any]

    @property
    def num_images(self) -> int:
        return int(self.labels.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.features.shape[2]), int(self.features.shape[3])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def cell_boxes(self) -> np.ndarray:
        """``[H*W, 4]`` pixel boxes ``(top, left, bottom, right)`` of the cells, row-major."""
        return cell_boxes(self.grid, self.rf, self.stride)


def source_from_bank(bank: FeatureBank) -> GlimpseSource:
    """Wrap a loaded feature bank."""
    return GlimpseSource(
        features=bank.features, logits=bank.logits, labels=bank.labels, images=bank.images,
        head_weight=bank.head_weight, head_bias=bank.head_bias,
        feature_range=bank.feature_range, rf=bank.rf, stride=bank.stride,
        image_shape=tuple(bank.meta["image_shape"]),
        class_names=tuple(bank.meta["dataset"]["class_names"]),
        description=describe(bank.meta["dataset"]["name"], bank.meta["dataset"]["split"],
                             bank.meta["model"]["hash"], str(bank.path), bank.features.shape,
                             bank.num_classes))


def describe(dataset: str, split: str, model_hash: str, bank: str | None,
             features_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """A source's :attr:`GlimpseSource.description`: what a policy trained on it records,
    and what a policy is checked against before it is run on another source."""
    _, d, h, w = features_shape
    return {"dataset": dataset, "split": split, "model_hash": model_hash, "bank": bank,
            "grid": [int(h), int(w)], "feature_dim": int(d), "num_classes": int(num_classes)}


@functools.lru_cache(maxsize=8)
def _computed_source(dataset: str, split: str, checkpoint: str, seed: int) -> GlimpseSource:
    model, ckpt = load_bagnet(resolve_checkpoint(checkpoint))
    data = make_dataset(dataset, split, seed=seed)
    mean, std = ckpt["normalization"]["mean"], ckpt["normalization"]["std"]
    feats, logits = [], []
    with torch.no_grad():
        for images, _ in iterate_batches(data, 512):
            out = model(preprocess(images, mean, std))
            feats.append(out.features.to(torch.float16))
            logits.append(out.logits)
    weight, bias = model.head_parameters()
    arrays = [torch.cat(feats).numpy(), torch.cat(logits).numpy(), data.labels.numpy(),
              data.images.numpy()]
    for a in arrays:
        a.flags.writeable = False
    return GlimpseSource(
        features=arrays[0], logits=arrays[1], labels=arrays[2], images=arrays[3],
        head_weight=weight.detach().numpy().copy(), head_bias=bias.detach().numpy().copy(),
        feature_range=(float(arrays[0].min()), float(arrays[0].max())),
        rf=model.rf, stride=model.stride, image_shape=data.image_shape,
        class_names=tuple(data.class_names),
        description=describe(dataset, split, ckpt["model_hash"], None, arrays[0].shape,
                             arrays[1].shape[1]))


def load_source(bank: str | Path | FeatureBank | GlimpseSource | None = None, *,
                dataset: str = "digits", split: str = "train", checkpoint: str = "default",
                seed: int = 0, expect: dict[str, Any] | None = None) -> GlimpseSource:
    """The images of an environment.

    Args:
        bank: a feature bank directory, a loaded bank, or a ready :class:`GlimpseSource`
            (used as is, e.g. synthetic arrays in tests); when None, ``checkpoint`` is run over
            ``dataset``/``split`` in memory (fine for ``digits``; write banks for big data).
        dataset, split, checkpoint, seed: used only when ``bank`` is None.
        expect: fields a bank must match (see :meth:`FeatureBank.check_matches`).
    """
    if isinstance(bank, GlimpseSource):
        return bank
    if bank is None:
        return _computed_source(dataset, split, str(checkpoint), seed)
    if not isinstance(bank, FeatureBank):
        bank = FeatureBank.load(bank, expect=expect)
    elif expect:
        bank.check_matches(expect)
    return source_from_bank(bank)
