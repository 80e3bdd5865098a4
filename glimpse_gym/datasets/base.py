"""The dataset interface shared by every entry of the registry.

Every dataset yields ``(image, label)`` with ``image: [C, H, W] uint8`` and ``label: int``.
Datasets small enough to hold in memory (all but ``imagefolder``) also expose the whole split
as tensors, ``images: [N, C, H, W] uint8`` and ``labels: [N] int64``, so training and feature
extraction can slice batches without a DataLoader.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from glimpse_gym.errors import DatasetError, UsageError

SPLITS = ("train", "val", "test")


class ImageDataset(Dataset):
    """Base class: class names, image shape, normalisation statistics.

    Attributes:
        name: the registry name the dataset was made with.
        split: ``"train"``, ``"val"`` or ``"test"``.
        class_names: one name per class index.
        image_shape: ``(C, H, W)`` of every image.
        mean, std: per-channel statistics (0-1 scale) used to normalise images for BagNet.
    """

    name: str
    split: str
    class_names: list[str]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_memory(self) -> bool:
        """True when ``images`` and ``labels`` hold the whole split as tensors."""
        return False


class TensorImageDataset(ImageDataset):
    """A split held in memory as ``images: [N, C, H, W] uint8`` and ``labels: [N] int64``."""

    def __init__(
        self,
        name: str,
        split: str,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        class_names: Sequence[str],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels).long()
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DatasetError(
                f"images must be [N, C, H, W] uint8, got {tuple(images.shape)} {images.dtype}"
            )
        if labels.shape != (images.shape[0],):
            raise DatasetError(
                f"labels must be [N] with N={images.shape[0]} (one per image), "
                f"got {tuple(labels.shape)}"
            )
        self.name = name
        self.split = split
        self.images = images.contiguous()
        self.labels = labels
        self.class_names = list(class_names)
        self.image_shape = tuple(int(s) for s in images.shape[1:])  # type: ignore[assignment]
        if mean is None or std is None:
            mean, std = channel_stats(self.images)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @property
    def in_memory(self) -> bool:
        return True

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def channel_stats(images: torch.Tensor,
                  max_images: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0-1 scale of ``images: [N, C, H, W] uint8``.

    Uses at most ``max_images`` evenly spaced images, so the cost is bounded.
    """
    step = max(1, images.shape[0] // max_images)
    x = images[::step].float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def split_indices(
    num_items: int, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/val carve of ``range(num_items)`` for ``seed``.

    Returns sorted index arrays ``(train, val)``; the same seed always gives the same carve.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(num_items)
    num_val = int(round(num_items * val_fraction))
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def check_split(split: str) -> None:
    """Raise a UsageError naming the valid splits when ``split`` is not one of them."""
    if split not in SPLITS:
        raise UsageError(f"split must be one of {SPLITS}, got {split!r}")
