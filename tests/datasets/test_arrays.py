"""The ``arrays`` dataset refuses what it cannot use with a message that says what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glimpse_gym.datasets import make_dataset
from glimpse_gym.errors import DatasetError, UsageError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (30, 12, 12), dtype=np.uint8)
LABELS = RNG.integers(0, 3, 30)


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return path


def test_arrays_without_data_says_how_to_pass_it() -> None:
    with pytest.raises(UsageError, match=r"path=FILE\.npz .*--data-option path=FILE\.npz"):
        make_dataset("arrays", "train")
    with pytest.raises(UsageError, match="images= without labels="):
        make_dataset("arrays", "train", images=IMAGES)
    with pytest.raises(UsageError, match="together"):
        make_dataset("arrays", "train", images=IMAGES, labels=LABELS, test_images=IMAGES)


def test_npz_with_keys_it_does_not_read_is_refused(tmp_path) -> None:
    path = _npz(tmp_path, images=IMAGES, labels=LABELS, x_test=IMAGES[:5])
    with pytest.raises(DatasetError) as err:
        make_dataset("arrays", "train", path=str(path))
    msg = str(err.value)
    assert str(path) in msg and "'x_test'" in msg
    assert "rename 'x_test' to 'test_images'" in msg
    for key in ("images", "labels", "test_images", "test_labels", "class_names"):
        assert repr(key) in msg


def test_npz_without_images_names_what_it_holds_and_what_to_rename(tmp_path) -> None:
    path = _npz(tmp_path, x_train=IMAGES, y_train=LABELS)
    with pytest.raises(DatasetError) as err:
        make_dataset("arrays", "train", path=str(path))
    msg = str(err.value)
    assert str(path) in msg and "['images', 'labels']" in msg
    assert "it holds ['x_train', 'y_train']" in msg
    assert "rename 'x_train' to 'images', 'y_train' to 'labels'" in msg
    only_test = _npz(tmp_path, images=IMAGES, labels=LABELS, test_images=IMAGES[:5])
    with pytest.raises(DatasetError, match="only one of 'test_images' and 'test_labels'"):
        make_dataset("arrays", "train", path=str(only_test))


@pytest.mark.parametrize("from_file", [False, True])
def test_string_labels_are_refused_with_the_np_unique_recipe(tmp_path, from_file) -> None:
    names = np.array(["cat", "dog", "mouse"])[LABELS]  # dtype '<U5'
    kwargs = ({"path": str(_npz(tmp_path, images=IMAGES, labels=names))} if from_file
              else {"images": IMAGES, "labels": names})
    with pytest.raises(DatasetError, match="integers 0..K-1") as err:
        make_dataset("arrays", "train", **kwargs)
    assert "<U5" in str(err.value)
    assert "class_names, labels = np.unique(labels, return_inverse=True)" in str(err.value)
    # ... and the recipe works
    class_names, labels = np.unique(names, return_inverse=True)
    ds = make_dataset("arrays", "train", images=IMAGES, labels=labels,
                      class_names=list(class_names))
    assert ds.class_names == ["cat", "dog", "mouse"]


def test_damaged_or_foreign_files_name_the_file(tmp_path) -> None:
    whole = _npz(tmp_path, images=IMAGES, labels=LABELS).read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole[: len(whole) // 2])
    text = tmp_path / "notes.npz"
    text.write_text("not an archive\n")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    for path in (truncated, text, empty):
        with pytest.raises(DatasetError, match="truncated.npz|notes.npz|empty.npz") as err:
            make_dataset("arrays", "train", path=str(path))
        assert str(path) in str(err.value), path
    npy = tmp_path / "images.npy"
    np.save(npy, IMAGES)
    with pytest.raises(DatasetError, match=r"single \.npy array"):
        make_dataset("arrays", "train", path=str(npy))
    pickled = _npz(tmp_path, images=IMAGES, labels=LABELS,
                   class_names=np.array(["a", "b", "c"], dtype=object))
    with pytest.raises(DatasetError, match="pickled objects"):
        make_dataset("arrays", "train", path=str(pickled))


def test_bad_arrays_raise_dataset_errors() -> None:
    with pytest.raises(DatasetError, match=r"in \[0, 1\]"):
        make_dataset("arrays", images=IMAGES.astype(np.float32), labels=LABELS)
    with pytest.raises(DatasetError, match="0..255"):
        make_dataset("arrays", images=IMAGES.astype(np.int32) + 300, labels=LABELS)
    with pytest.raises(DatasetError, match="class names for labels up to 2"):
        make_dataset("arrays", images=IMAGES, labels=LABELS, class_names=["a"])
    with pytest.raises(DatasetError, match="same"):
        make_dataset("arrays", images=IMAGES, labels=LABELS,
                     test_images=IMAGES[:5, :8, :8], test_labels=LABELS[:5])
