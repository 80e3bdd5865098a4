"""MNIST and Fashion-MNIST, plain and on translated or cluttered canvases, read from a local
torchvision-layout root.

Nothing downloads unless ``download=True`` is passed. Validation is carved from the 60,000
training images (``val_fraction``, deterministic for ``seed``); test is the set's own 10,000.
Both sets share one file layout (``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class BaseSet:
    """One of the 28x28 sets in the MNIST file format."""

    title: str
    """Name in messages."""
    folder: str
    """The torchvision folder under root (``<root>/<folder>/raw/``)."""
    class_names: tuple[str, ...]


BASE_SETS = {
    "mnist": BaseSet("MNIST", "MNIST", tuple(str(d) for d in range(10))),
    "fashion-mnist": BaseSet("Fashion-MNIST", "FashionMNIST", (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
        "Bag", "Ankle boot")),
}


def _require_root(root: str | Path | None, download: bool, base: BaseSet) -> Path:
    if root is None:
        raise DatasetNotFoundError(
            f"{base.title} needs root=<folder>: the folder that holds {base.folder}/raw/ with "
            f"the files {', '.join(MNIST_FILES)} (uncompressed or .gz), as torchvision lays "
            "them out. Pass download=True (CLI: --download) to fetch them with torchvision."
        )
    root = Path(root).expanduser()
    raw = root / base.folder / "raw"
    missing = [f for f in MNIST_FILES if not (raw / f).exists() and not (raw / f"{f}.gz").exists()]
    if missing and not download:
        raise DatasetNotFoundError(
            f"{base.title} files missing under {raw}: {', '.join(missing)}. Expected the "
            f"torchvision layout <root>/{base.folder}/raw/<file> (root={root}). Copy them "
            "there, or pass download=True (CLI: --download) to let torchvision fetch them."
        )
    return root


def load_mnist_arrays(
    root: str | Path | None, train: bool, download: bool = False, base: str = "mnist"
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28] uint8`` and labels ``[N] int64`` of the train or test file of
    ``base`` (``"mnist"`` or ``"fashion-mnist"``)."""
    from torchvision.datasets import MNIST, FashionMNIST

    spec = BASE_SETS[base]
    root = _require_root(root, download, spec)
    cls = FashionMNIST if base == "fashion-mnist" else MNIST
    ds = cls(str(root), train=train, download=download)
    return ds.data.numpy(), ds.targets.numpy().astype(np.int64)


def _split_arrays(root: str | Path | None, split: str, seed: int, val_fraction: float,
                  download: bool, base: str) -> tuple[np.ndarray, np.ndarray]:
    check_split(split)
    if split == "test":
        return load_mnist_arrays(root, train=False, download=download, base=base)
    images, labels = load_mnist_arrays(root, train=True, download=download, base=base)
    train_idx, val_idx = split_indices(len(images), val_fraction, seed)
    idx = train_idx if split == "train" else val_idx
    return images[idx], labels[idx]


def _plain(name: str, base: str, split: str, root: str | Path | None, seed: int,
           val_fraction: float, download: bool) -> TensorImageDataset:
    images, labels = _split_arrays(root, split, seed, val_fraction, download, base)
    return TensorImageDataset(name, split, images[:, None], labels,
                              list(BASE_SETS[base].class_names))


def _canvas(name: str, base: str, split: str, root: str | Path | None, seed: int,
            val_fraction: float, canvas_size: int, pieces: int, piece_size: int,
            layout_seed: int, download: bool) -> TensorImageDataset:
    images, labels = _split_arrays(root, split, seed, val_fraction, download, base)
    rng = layout_rng(seed, split, layout_seed)
    canvases = compose_canvases(images, canvas_size, pieces, piece_size, images, rng)
    return TensorImageDataset(name, split, canvases[:, None], labels,
                              list(BASE_SETS[base].class_names))


def make_mnist(
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 1 / 12,
    download: bool = False,
) -> TensorImageDataset:
    """Plain 28x28 MNIST digits, ``[N, 1, 28, 28] uint8``."""
    return _plain("mnist", "mnist", split, root, seed, val_fraction, download)


def make_fashion_mnist(
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 1 / 12,
    download: bool = False,
) -> TensorImageDataset:
    """Plain 28x28 Fashion-MNIST (Xiao et al. 2017), ``[N, 1, 28, 28] uint8``."""
    return _plain("fashion-mnist", "fashion-mnist", split, root, seed, val_fraction, download)


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
) -> TensorImageDataset:
    """Cluttered translated MNIST (Mnih et al. 2014), ``[N, 1, S, S] uint8``.

    Each digit sits at a uniformly random position on an ``S x S`` canvas over ``pieces``
    random ``piece_size`` crops of other digits of the same split. The standard task is
    60x60 with 4 pieces of 8x8; the larger one is 100x100 with 8 pieces. ``layout_seed``
    redraws positions and clutter for the same digits (fresh canvases per training epoch).
    """
    return _canvas("cluttered-mnist", "mnist", split, root, seed, val_fraction, canvas_size,
                   pieces, piece_size, layout_seed, download)


def make_cluttered_fashion_mnist(
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
) -> TensorImageDataset:
    """Cluttered translated Fashion-MNIST, ``[N, 1, S, S] uint8``: the cluttered-MNIST
    recipe (random position, ``pieces`` crops of other images of the split) over
    Fashion-MNIST's clothes."""
    return _canvas("cluttered-fashion-mnist", "fashion-mnist", split, root, seed, val_fraction,
                   canvas_size, pieces, piece_size, layout_seed, download)


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
    return _canvas("translated-mnist", "mnist", split, root, seed, val_fraction, canvas_size,
                   0, 8, layout_seed, download)
