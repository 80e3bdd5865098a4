"""The user's own images: numpy arrays, or an ``.npz`` with ``images`` and ``labels``.

Accepted image layouts: ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` with C in 1, 3, 4;
``uint8`` (0-255) or floating point in [0, 1]. Labels are integers ``0..K-1``. An ``.npz`` may
also hold ``test_images`` / ``test_labels`` (the test split) and ``class_names``, and nothing
else: a key it does not read (``x_test``, say) is refused rather than ignored. Without a test
split, a fixed 20 % of the images (the same for every seed) is the test split.

Write one with::

    np.savez("mine.npz", images=x_train, labels=y_train, test_images=x_test,
             test_labels=y_test, class_names=np.array(["cat", "dog"]))
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from glimpse_gym.datasets.base import TensorImageDataset, check_split, split_indices
from glimpse_gym.errors import DatasetError, DatasetNotFoundError, UsageError

TEST_FRACTION = 0.2
TEST_CARVE_SEED = 424_242
NPZ_KEYS = ("images", "labels", "test_images", "test_labels", "class_names")
"""The keys :func:`make_arrays` reads from an ``.npz``; any other key is an error."""
_RENAMES = {"x_train": "images", "y_train": "labels", "x_test": "test_images",
            "y_test": "test_labels", "X_train": "images", "X_test": "test_images",
            "train_images": "images", "train_labels": "labels"}
_HOW_TO_INDEX = ("turn names into indices with "
                 "`class_names, labels = np.unique(labels, return_inverse=True)` and pass "
                 "class_names too")


def to_nchw_uint8(images: np.ndarray, what: str = "images") -> np.ndarray:
    """Bring user images to ``[N, C, H, W] uint8``, or raise a DatasetError saying why not."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        if images.shape[1] not in (1, 3, 4) and images.shape[-1] in (1, 3, 4):
            images = images.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(f"{what} must be [N, H, W], [N, H, W, C] or [N, C, H, W]; "
                           f"got shape {images.shape}")
    if images.shape[1] not in (1, 3, 4):
        raise DatasetError(f"{what}: could not find a channel axis of size 1, 3 or 4 in "
                           f"shape {images.shape}")
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise DatasetError(f"{what}: floating-point images must be finite and in [0, 1]; "
                               f"got range [{np.nanmin(images)}, {np.nanmax(images)}] (divide "
                               "0-255 images by 255, or pass them as uint8)")
        return np.ascontiguousarray((images * 255).round().astype(np.uint8))
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > 255:
            raise DatasetError(f"{what}: integer images must lie in 0..255; got range "
                               f"[{images.min()}, {images.max()}]")
        return np.ascontiguousarray(images.astype(np.uint8))
    raise DatasetError(f"{what}: unsupported dtype {images.dtype} (use uint8 or float in [0, 1])")


def _check_labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind in "USO":
        example = f" (e.g. {str(labels.flat[0])!r})" if labels.size else ""
        raise DatasetError(f"{what} must be integers 0..K-1 (with the names in class_names); "
                           f"got dtype {labels.dtype}{example}: "
                           f"{_HOW_TO_INDEX}")
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{what} must be [N] integers with N={n}; got shape {labels.shape} "
                           f"dtype {labels.dtype}")
    if n and labels.min() < 0:
        raise DatasetError(f"{what} must be class indices 0..K-1; found {labels.min()}")
    return labels.astype(np.int64)


def _rename_hint(keys: list[str], template: str) -> str:
    """``template`` filled with "'x_train' to 'images', ..." for the keys with a known
    rename, or "" when there is none."""
    pairs = [f"{k!r} to {_RENAMES[k]!r}" for k in keys if k in _RENAMES]
    return template.format(", ".join(pairs)) if pairs else ""


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written for :func:`make_arrays`, keyed as in ``NPZ_KEYS``.

    Raises:
        DatasetError: naming ``path``, when it cannot be read (damaged, truncated, not an
            ``.npz``, or holding pickled objects), holds a key other than ``NPZ_KEYS``, or
            lacks ``images`` or ``labels``.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy: one bare array
            raise DatasetError(f"arrays: {path} is a single .npy array, not an .npz; write "
                               "one with np.savez(FILE.npz, images=..., labels=...)")
        with loaded as npz:
            files = list(npz.files)
            arrays = {k: npz[k] for k in NPZ_KEYS if k in files}
    except DatasetError:
        raise
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise DatasetError(f"arrays: cannot read {path} as an .npz ({e}); the file may be "
                               "damaged or truncated: write it again with np.savez") from e
        raise DatasetError(f"arrays: {path} holds pickled objects, which are not loaded for "
                           "safety; save labels as integers and class_names as a str array "
                           "(np.array(names, dtype=str))") from e
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
        raise DatasetError(f"arrays: cannot read {path} as an .npz ({type(e).__name__}: {e}); "
                           "the file may be damaged or truncated: write it again with "
                           "np.savez") from e
    missing = [k for k in ("images", "labels") if k not in files]
    if missing:
        how = _rename_hint(files, "; rename {}") or (
            "; save the images as 'images' and the labels as 'labels'")
        raise DatasetError(f"arrays: {path} lacks {missing}; it holds {files}; keys read: "
                           f"{list(NPZ_KEYS)}{how}")
    unknown = [k for k in files if k not in NPZ_KEYS]
    if unknown:
        how = _rename_hint(unknown, " (rename {})")
        raise DatasetError(f"arrays: {path} holds keys that are not read: {unknown}{how}; the "
                           f"keys read are {list(NPZ_KEYS)}; remove or rename the others")
    if ("test_images" in files) != ("test_labels" in files):
        raise DatasetError(f"arrays: {path} has only one of 'test_images' and 'test_labels'; "
                           "give both or neither")
    return arrays


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
    """The user's images as a dataset, from ``path`` (an ``.npz``) or from arrays.

    Raises:
        UsageError: neither ``path`` nor both ``images`` and ``labels`` are given.
        DatasetNotFoundError: no file at ``path``.
        DatasetError: the file or arrays cannot be used as they are (the message says why).
    """
    check_split(split)
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(f"arrays: no file at {path}; expected an .npz with "
                                       "'images' and 'labels' (and optionally 'test_images', "
                                       "'test_labels', 'class_names')")
        data = read_npz(path)
        images, labels = data["images"], data["labels"]
        test_images, test_labels = data.get("test_images"), data.get("test_labels")
        if "class_names" in data:
            class_names = [str(c) for c in data["class_names"]]
    if images is None or labels is None:
        got = "images= without labels=" if images is not None else (
            "labels= without images=" if labels is not None else "no data")
        raise UsageError(f"arrays got {got}: it needs path=FILE.npz (on the command line: "
                         "--data-option path=FILE.npz) or images= and labels=")
    images = to_nchw_uint8(images)
    labels = _check_labels(labels, len(images), "labels")
    if (test_images is None) != (test_labels is None):
        raise UsageError("arrays: give test_images= and test_labels= together, or neither")
    if test_images is not None:
        test_images = to_nchw_uint8(test_images, "test_images")
        test_labels = _check_labels(test_labels, len(test_images), "test_labels")
        if test_images.shape[1:] != images.shape[1:]:
            raise DatasetError(f"test_images are {test_images.shape[1:]}, images are "
                               f"{images.shape[1:]}: both must be the same [C, H, W]")
        rest = np.arange(len(images))
    else:
        rest, test = split_indices(len(images), TEST_FRACTION, TEST_CARVE_SEED)
        test_images, test_labels = images[test], labels[test]
    num_classes = int(max(labels.max(initial=0), test_labels.max(initial=0))) + 1
    if class_names is None:
        class_names = [str(k) for k in range(num_classes)]
    elif len(class_names) < num_classes:
        raise DatasetError(f"{len(class_names)} class names for labels up to "
                           f"{num_classes - 1}: give one name per class index")
    if split == "test":
        return TensorImageDataset("arrays", split, test_images, test_labels, class_names)
    train_pos, val_pos = split_indices(len(rest), val_fraction, seed)
    idx = rest[train_pos] if split == "train" else rest[val_pos]
    return TensorImageDataset("arrays", split, images[idx], labels[idx], class_names)
