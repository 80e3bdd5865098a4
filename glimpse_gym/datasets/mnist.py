"""MNIST and its translated and cluttered canvases, read from a local torchvision-layout root.

Nothing downloads unless ``download=True`` is passed. Validation is carved from the 60,000
training digits (``val_fraction``, deterministic for ``seed``); test is MNIST's own 10,000.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glimpse_gym.datasets.base import TensorImageDataset, check_split, split_indices
from glimpse_gym.datasets.canvas import compose_canvases, layout_rng
from glimpse_gym.errors import DatasetNotFoundError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CLASS_NAMES = [str(d) for d in range(10)]


def _require_root(root: str | Path | None, download: bool) -> Path:
    if root is None:
        raise DatasetNotFoundError(
            "MNIST needs root=<folder>: the folder that holds MNIST/raw/ with the files "
            f"{', '.join(MNIST_FILES)} (uncompressed or .gz), as torchvision lays them out. "
            "Pass download=True (CLI: --download) to fetch them with torchvision."
        )
    root = Path(root).expanduser()
    raw = root / "MNIST" / "raw"
    missing = [f for f in MNIST_FILES if not (raw / f).exists() and not (raw / f"{f}.gz").exists()]
    if missing and not download:
        raise DatasetNotFoundError(
            f"MNIST files missing under {raw}: {', '.join(missing)}. Expected the torchvision "
            f"layout <root>/MNIST/raw/<file> (root={root}). Copy them there, or pass "
            "download=True (CLI: --download) to let torchvision fetch them."
        )
    return root


def load_mnist_arrays(
    root: str | Path | None, train: bool, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images ``[N, 28, 28] uint8`` and labels ``[N] int64`` of the train or test file."""
    from torchvision.datasets import MNIST

    root = _require_root(root, download)
    ds = MNIST(str(root), train=train, download=download)
    return ds.data.numpy(), ds.targets.numpy().astype(np.int64)


def _split_arrays(
    root: str | Path | None, split: str, seed: int, val_fraction: float, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    check_split(split)
    if split == "test":
        return load_mnist_arrays(root, train=False, download=download)
    images, labels = load_mnist_arrays(root, train=True, download=download)
    train_idx, val_idx = split_indices(len(images), val_fraction, seed)
    idx = train_idx if split == "train" else val_idx
    return images[idx], labels[idx]


def make_mnist(
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 1 / 12,
    download: bool = False,
) -> TensorImageDataset:
    """Plain 28x28 MNIST digits, ``[N, 1, 28, 28] uint8``."""
    images, labels = _split_arrays(root, split, seed, val_fraction, download)
    return TensorImageDataset("mnist", split, images[:, None], labels, CLASS_NAMES)


def make_cluttered_mnist(
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 1 / 12,
    canvas_size: int = 60,
    pieces: int = 4,
    piece_size: int = 8,
    layout_seed: int = 0,
    download: bool = False,
    name: str = "cluttered-mnist",
) -> TensorImageDataset:
    """Cluttered translated MNIST (Mnih et al. 2014), ``[N, 1, S, S] uint8``.

    Each digit sits at a uniformly random position on an ``S x S`` canvas over ``pieces``
    random ``piece_size`` crops of other digits of the same split. The standard task is
    60x60 with 4 pieces of 8x8; the larger one is 100x100 with 8 pieces. ``layout_seed``
    redraws positions and clutter for the same digits (fresh canvases per training epoch).
    """
    images, labels = _split_arrays(root, split, seed, val_fraction, download)
    rng = layout_rng(seed, split, layout_seed)
    canvases = compose_canvases(images, canvas_size, pieces, piece_size, images, rng)
    return TensorImageDataset(name, split, canvases[:, None], labels, CLASS_NAMES)


def make_translated_mnist(
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 1 / 12,
    canvas_size: int = 60,
    layout_seed: int = 0,
    download: bool = False,
) -> TensorImageDataset:
    """Translated MNIST: each digit at a random position on a blank ``S x S`` canvas."""
    return make_cluttered_mnist(
        split,
        root=root,
        seed=seed,
        val_fraction=val_fraction,
        canvas_size=canvas_size,
        pieces=0,
        layout_seed=layout_seed,
        download=download,
        name="translated-mnist",
    )
