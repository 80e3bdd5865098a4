"""scikit-learn's bundled handwritten digits on a cluttered canvas: the offline default.

The 1,797 8x8 digits (0-16 grey levels) are scaled to 0-255, enlarged ``scale`` times with
bilinear interpolation (16x16 by default) and placed at random on a ``canvas_size`` canvas
over ``pieces`` random crops of other digits, like cluttered MNIST at a smaller scale.
scikit-learn has no test split, so a fixed 20 % of the digits (the same for every ``seed``)
is the test split; ``val_fraction`` of the rest, carved by ``seed``, is validation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from glimpse_gym.datasets.base import TensorImageDataset, check_split, split_indices
from glimpse_gym.datasets.canvas import compose_canvases, layout_rng

TEST_FRACTION = 0.2
TEST_CARVE_SEED = 20_191_797  # fixed: the test split never depends on the user's seed
CLASS_NAMES = [str(d) for d in range(10)]


def load_digit_arrays(scale: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as ``[N, 8*scale, 8*scale] uint8`` and labels ``[N] int64``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0))
    if scale != 1:
        images = F.interpolate(images[:, None], scale_factor=scale, mode="bilinear",
                               align_corners=False)[:, 0]
    return images.round().clamp(0, 255).to(torch.uint8).numpy(), bunch.target.astype(np.int64)


def make_digits(
    split: str = "train",
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    canvas_size: int = 32,
    pieces: int = 3,
    piece_size: int = 5,
    scale: int = 2,
    layout_seed: int = 0,
) -> TensorImageDataset:
    """Cluttered scikit-learn digits, ``[N, 1, S, S] uint8`` (S = ``canvas_size``, 32)."""
    check_split(split)
    images, labels = load_digit_arrays(scale)
    rest, test = split_indices(len(images), TEST_FRACTION, TEST_CARVE_SEED)
    if split == "test":
        idx = test
    else:
        train_pos, val_pos = split_indices(len(rest), val_fraction, seed)
        idx = rest[train_pos] if split == "train" else rest[val_pos]
    objects = images[idx]
    rng = layout_rng(seed, split, layout_seed)
    canvases = compose_canvases(objects, canvas_size, pieces, piece_size, objects, rng)
    return TensorImageDataset("digits", split, canvases[:, None], labels[idx], CLASS_NAMES)
