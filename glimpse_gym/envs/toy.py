"""Tiny synthetic sources for examples and tests: no BagNet, no data, built in microseconds."""

from __future__ import annotations

import numpy as np

from glimpse_gym.envs.source import GlimpseSource


def toy_source(num_images: int = 8, *, reveal: float = 5.0, decoy: float = 0.9,
               seed: int = 0) -> GlimpseSource:
    """A 3x3 grid of non-overlapping 4x4-pixel cells on 12x12 images, 2 classes, 4 features.

    The centre cell (4) gives the label a logit of ``reveal``; each other cell gives the
    other class ``decoy``. With the defaults the full image is always wrong (5 < 8 x 0.9),
    and T glimpses that start at the centre are right while ``reveal > decoy * (T - 1)``,
    i.e. for T <= 6. Labels alternate 0, 1, 0, ...

    >>> toy_source().grid, toy_source().num_classes
    ((3, 3), 2)
    """
    labels = np.arange(num_images) % 2
    logits = np.zeros((num_images, 2, 3, 3), np.float32)
    for i, y in enumerate(labels):
        logits[i, 1 - y] = decoy
        logits[i, 1 - y, 1, 1] = 0.0
        logits[i, y, 1, 1] = reveal
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((num_images, 4, 3, 3)).astype(np.float16)
    images = rng.integers(1, 255, (num_images, 1, 12, 12), dtype=np.uint8)
    return GlimpseSource(features=features, logits=logits, labels=labels.astype(np.int64),
                         images=images, head_weight=np.zeros((2, 4), np.float32),
                         head_bias=np.zeros(2, np.float32), feature_range=(-5.0, 5.0), rf=4,
                         stride=4, image_shape=(1, 12, 12), class_names=("a", "b"),
                         description={"dataset": "toy", "split": "test", "model_hash": "toy",
                                      "bank": None, "grid": [3, 3], "feature_dim": 4,
                                      "num_classes": 2})


def random_source(num_images: int = 12, *, grid: tuple[int, int] = (4, 5), rf: int = 7,
                  stride: int = 4, num_classes: int = 5, feature_dim: int = 3,
                  seed: int = 0) -> GlimpseSource:
    """Random logits and features on a grid whose receptive fields overlap (rf > stride), for
    checking that fast forms follow the rules on arbitrary numbers."""
    h, w = grid
    rng = np.random.default_rng(seed)
    image_hw = ((h - 1) * stride + rf, (w - 1) * stride + rf)
    features = rng.standard_normal((num_images, feature_dim, h, w)).astype(np.float16)
    return GlimpseSource(
        features=features,
        logits=rng.standard_normal((num_images, num_classes, h, w)).astype(np.float32),
        labels=rng.integers(0, num_classes, num_images).astype(np.int64),
        images=rng.integers(0, 255, (num_images, 1, *image_hw), dtype=np.uint8),
        head_weight=np.zeros((num_classes, feature_dim), np.float32),
        head_bias=np.zeros(num_classes, np.float32),
        feature_range=(float(features.min()), float(features.max())), rf=rf, stride=stride,
        image_shape=(1, *image_hw), class_names=tuple(f"c{k}" for k in range(num_classes)),
        description={"dataset": "random", "split": "test", "model_hash": "random",
                     "bank": None, "grid": [h, w], "feature_dim": feature_dim,
                     "num_classes": num_classes})
