"""The user's own images: numpy arrays, or an ``.npz`` with ``images`` and ``labels``.

Accepted image layouts: ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` with C in 1, 3, 4;
``uint8`` (0-255) or floating point in [0, 1]. Labels are integers ``0..K-1``. An ``.npz`` may
also hold ``test_images`` / ``test_labels`` (the test split) and ``class_names``; without a
test split, a fixed 20 % of the images (the same for every seed) is the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glimpse_gym.datasets.base import TensorImageDataset, check_split, split_indices
from glimpse_gym.errors import DatasetNotFoundError

TEST_FRACTION = 0.2
TEST_CARVE_SEED = 424_242


def to_nchw_uint8(images: np.ndarray, what: str = "images") -> np.ndarray:
    """Bring user images to ``[N, C, H, W] uint8``, or raise a ValueError saying why not."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        if images.shape[1] not in (1, 3, 4) and images.shape[-1] in (1, 3, 4):
            images = images.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"{what} must be [N, H, W], [N, H, W, C] or [N, C, H, W]; "
                         f"got shape {images.shape}")
    if images.shape[1] not in (1, 3, 4):
        raise ValueError(f"{what}: could not find a channel axis of size 1, 3 or 4 in "
                         f"shape {images.shape}")
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ValueError(f"{what}: floating-point images must be finite and in [0, 1]; got "
                             f"range [{np.nanmin(images)}, {np.nanmax(images)}]")
        return np.ascontiguousarray((images * 255).round().astype(np.uint8))
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise ValueError(f"{what}: integer images must lie in 0..255")
        return np.ascontiguousarray(images.astype(np.uint8))
    raise ValueError(f"{what}: unsupported dtype {images.dtype} (use uint8 or float in [0, 1])")


def _check_labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} must be [N] integers with N={n}; got shape {labels.shape} "
                         f"dtype {labels.dtype}")
    if n and labels.min() < 0:
        raise ValueError(f"{what} must be class indices 0..K-1; found {labels.min()}")
    return labels.astype(np.int64)


def make_arrays(
    split: str = "train",
    *,
    path: str | Path | None = None,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> TensorImageDataset:
    """The user's images as a dataset, from ``path`` (an ``.npz``) or from arrays."""
    check_split(split)
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(f"arrays: no file at {path}; expected an .npz with "
                                       "'images' and 'labels' (and optionally 'test_images', "
                                       "'test_labels', 'class_names')")
        with np.load(path, allow_pickle=False) as npz:
            missing = {"images", "labels"} - set(npz.files)
            if missing:
                raise ValueError(f"{path} lacks {sorted(missing)}; it holds {sorted(npz.files)}")
            images, labels = npz["images"], npz["labels"]
            if "test_images" in npz.files:
                test_images, test_labels = npz["test_images"], npz["test_labels"]
            if "class_names" in npz.files:
                class_names = [str(c) for c in npz["class_names"]]
    if images is None or labels is None:
        raise ValueError("arrays needs path=<file.npz> or both images= and labels=")
    images = to_nchw_uint8(images)
    labels = _check_labels(labels, len(images), "labels")
    if test_images is not None:
        test_images = to_nchw_uint8(test_images, "test_images")
        if test_labels is None:
            raise ValueError("test_images was given without test_labels")
        test_labels = _check_labels(test_labels, len(test_images), "test_labels")
        if test_images.shape[1:] != images.shape[1:]:
            raise ValueError(f"test_images are {test_images.shape[1:]}, images are "
                             f"{images.shape[1:]}: both must be the same [C, H, W]")
        rest = np.arange(len(images))
    else:
        rest, test = split_indices(len(images), TEST_FRACTION, TEST_CARVE_SEED)
        test_images, test_labels = images[test], labels[test]
    num_classes = int(max(labels.max(initial=0), test_labels.max(initial=0))) + 1
    if class_names is None:
        class_names = [str(k) for k in range(num_classes)]
    elif len(class_names) < num_classes:
        raise ValueError(f"{len(class_names)} class names for labels up to {num_classes - 1}")
    if split == "test":
        return TensorImageDataset("arrays", split, test_images, test_labels, class_names)
    train_pos, val_pos = split_indices(len(rest), val_fraction, seed)
    idx = rest[train_pos] if split == "train" else rest[val_pos]
    return TensorImageDataset("arrays", split, images[idx], labels[idx], class_names)
