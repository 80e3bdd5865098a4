"""CIFAR-10 and ImageNet-layout folders through torchvision, from local files only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from glimpse_gym.datasets.base import (
    ImageDataset,
    TensorImageDataset,
    check_split,
    split_indices,
)
from glimpse_gym.errors import DatasetNotFoundError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def make_cifar10(
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    download: bool = False,
) -> TensorImageDataset:
    """CIFAR-10, ``[N, 3, 32, 32] uint8``; val carved from the 50,000 training images."""
    from torchvision.datasets import CIFAR10

    check_split(split)
    folder = None if root is None else Path(root).expanduser() / "cifar-10-batches-py"
    if not download and (folder is None or not folder.is_dir()):
        raise DatasetNotFoundError(
            f"CIFAR-10 needs root=<folder> holding cifar-10-batches-py/ (the python version "
            f"of the dataset, data_batch_1..5 and test_batch); looked for {folder}. "
            "Pass download=True (CLI: --download) to let torchvision fetch it."
        )
    ds = CIFAR10(str(Path(root).expanduser()) if root else ".", train=split != "test",
                 download=download)
    images = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))
    labels = np.asarray(ds.targets, dtype=np.int64)
    if split != "test":
        train_idx, val_idx = split_indices(len(images), val_fraction, seed)
        idx = train_idx if split == "train" else val_idx
        images, labels = images[idx], labels[idx]
    return TensorImageDataset("cifar10", split, images, labels, CIFAR10_CLASSES)


class FolderDataset(ImageDataset):
    """Images under ``<root>/<split folder>/<class>/<file>``, resized and centre-cropped.

    Loaded lazily, one file at a time: ``__getitem__`` gives ``[3, S, S] uint8``.
    """

    def __init__(self, split: str, files: list[tuple[str, int]], class_names: list[str],
                 image_size: int) -> None:
        from torchvision.transforms import v2

        self.name = "imagefolder"
        self.split = split
        self.files = files
        self.class_names = class_names
        self.image_shape = (3, image_size, image_size)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self._transform = v2.Compose([
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
        ])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image
        from torchvision.transforms.v2.functional import pil_to_tensor

        path, label = self.files[index]
        with Image.open(path) as img:
            image = pil_to_tensor(img.convert("RGB"))
        return self._transform(image), label


def _scan(folder: Path, class_names: list[str]) -> list[tuple[str, int]]:
    files = []
    for label, cls in enumerate(class_names):
        for f in sorted((folder / cls).rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append((str(f), label))
    return files


def make_imagefolder(
    split: str = "train",
    *,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.05,
    image_size: int = 224,
) -> FolderDataset:
    """An ImageNet-layout folder: ``root/train/<class>/*`` and ``root/val`` (or ``root/test``).

    Class names are the sub-folders of ``root/train``. Validation is carved from ``train``;
    test is ``root/val`` (ImageNet's name for its labelled held-out set) or ``root/test``.
    """
    check_split(split)
    if root is None or not (Path(root).expanduser() / "train").is_dir():
        raise DatasetNotFoundError(
            f"imagefolder needs root=<folder> with train/<class>/<image files> and val/<class>/"
            f" (or test/<class>/); got root={root!r}"
        )
    root = Path(root).expanduser()
    class_names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if split == "test":
        held_out = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        if held_out is None:
            raise DatasetNotFoundError(f"imagefolder test split: neither {root}/val nor "
                                       f"{root}/test exists")
        files = _scan(held_out, class_names)
    else:
        all_files = _scan(root / "train", class_names)
        train_idx, val_idx = split_indices(len(all_files), val_fraction, seed)
        files = [all_files[i] for i in (train_idx if split == "train" else val_idx)]
    if not files:
        raise DatasetNotFoundError(f"imagefolder {split} split under {root} has no image files "
                                   f"(suffixes {', '.join(IMAGE_SUFFIXES)})")
    return FolderDataset(split, files, class_names, image_size)
