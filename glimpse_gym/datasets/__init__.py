"""Datasets by name: ``make_dataset("cluttered-mnist", "train", root=..., seed=0)``.

Every entry returns an :class:`ImageDataset` of ``([C, H, W] uint8, label)`` pairs with
deterministic train/val/test splits for a seed: val is carved from the training data, test
is the dataset's own test split (or a fixed carve where it has none). Nothing downloads
unless ``download=True`` is passed.

| name | images | needs |
|---|---|---|
| ``digits`` | scikit-learn digits on a 32x32 cluttered canvas (the offline default) | nothing |
| ``mnist`` | 28x28 MNIST | ``root`` |
| ``translated-mnist`` | MNIST at a random place on a blank 60x60 canvas | ``root`` |
| ``cluttered-mnist`` | MNIST on 60x60 with 4 random 8x8 pieces of other digits | ``root`` |
| ``fashion-mnist`` | 28x28 Fashion-MNIST | ``root`` |
| ``cluttered-fashion-mnist`` | Fashion-MNIST on 60x60 with 4 random 8x8 pieces | ``root`` |
| ``cifar10`` | CIFAR-10 | ``root`` |
| ``imagefolder`` | ImageNet layout: ``root/train/<class>/``, ``root/val/<class>/`` | ``root`` |
| ``arrays`` | the user's numpy arrays or ``.npz`` | ``path`` or arrays |
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from glimpse_gym.datasets.arrays import make_arrays
from glimpse_gym.datasets.base import SPLITS, ImageDataset, TensorImageDataset, split_indices
from glimpse_gym.datasets.digits import make_digits
from glimpse_gym.datasets.mnist import (
    make_cluttered_fashion_mnist,
    make_cluttered_mnist,
    make_fashion_mnist,
    make_mnist,
    make_translated_mnist,
)
from glimpse_gym.datasets.vision import make_cifar10, make_imagefolder
from glimpse_gym.errors import UnknownNameError, UsageError

__all__ = [
    "SPLITS",
    "DATASETS",
    "DatasetSpec",
    "ImageDataset",
    "TensorImageDataset",
    "dataset_options",
    "list_datasets",
    "make_dataset",
    "split_indices",
]


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry."""

    name: str
    """Registry name."""
    factory: Callable[..., ImageDataset]
    """``factory(split, **kwargs)`` builds the split."""
    summary: str
    """One line for listings."""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("digits", make_digits, "scikit-learn digits on a cluttered 32x32 canvas"),
        DatasetSpec("mnist", make_mnist, "MNIST 28x28 (root=torchvision layout)"),
        DatasetSpec("translated-mnist", make_translated_mnist,
                    "MNIST at a random position on a blank 60x60 canvas"),
        DatasetSpec("cluttered-mnist", make_cluttered_mnist,
                    "MNIST on a 60x60 canvas with 4 random 8x8 clutter pieces (Mnih et al.)"),
        DatasetSpec("fashion-mnist", make_fashion_mnist,
                    "Fashion-MNIST 28x28 (root=torchvision layout)"),
        DatasetSpec("cluttered-fashion-mnist", make_cluttered_fashion_mnist,
                    "Fashion-MNIST on a 60x60 canvas with 4 random 8x8 clutter pieces"),
        DatasetSpec("cifar10", make_cifar10, "CIFAR-10 32x32 (root=torchvision layout)"),
        DatasetSpec("imagefolder", make_imagefolder,
                    "ImageNet layout root/train/<class>/, root/val/<class>/"),
        DatasetSpec("arrays", make_arrays, "your own images: path=<file.npz> or arrays"),
    )
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`make_dataset`."""
    return list(DATASETS)


def dataset_options(name: str) -> dict[str, object]:
    """The keyword arguments a dataset accepts, with their defaults."""
    spec = _spec(name)
    params = inspect.signature(spec.factory).parameters
    return {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ";"
        raise UnknownNameError(f"unknown dataset {name!r}{guess} valid names: "
                               f"{', '.join(DATASETS)}")
    return DATASETS[name]


def make_dataset(name: str, split: str = "train", **kwargs: object) -> ImageDataset:
    """Build one split of a registered dataset.

    Args:
        name: a registry name (see :func:`list_datasets`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        **kwargs: the dataset's options (``root``, ``seed``, ``canvas_size``, ...); an option
            the dataset does not take raises a UsageError that lists the ones it does.

    Returns:
        The split as an :class:`ImageDataset`.

    Raises:
        UnknownNameError: ``name`` is not registered (the message suggests the closest one).
        UsageError: an option the dataset does not take, or an invalid split.
        DatasetNotFoundError: the dataset's files are not where ``root`` / ``path`` says.
        DatasetError: the files or arrays are there but cannot be used as they are.
    """
    spec = _spec(name)
    valid = dataset_options(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        close = {k: difflib.get_close_matches(k, list(valid), n=1) for k in unknown}
        guess = "".join(f"; did you mean {c[0]!r} for {k!r}?" for k, c in close.items() if c)
        raise UsageError(f"dataset {name!r} takes no option(s) {unknown}{guess} valid options: "
                         f"{sorted(valid)} (on the command line: --data-option KEY=VALUE)")
    return spec.factory(split, **kwargs)
