"""Every registered dataset: shapes, dtypes, labels, splits and errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from glimpse_gym.datasets import SPLITS, dataset_options, list_datasets, make_dataset
from glimpse_gym.errors import DatasetNotFoundError, UnknownNameError, UsageError
from tests.conftest import MNIST_ROOT


@pytest.fixture(scope="module")
def fake_cifar_root(tmp_path_factory) -> str:
    """A tiny CIFAR-10 in torchvision's python layout (md5 checks are patched in the test)."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        entry = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                 "labels": list(rng.integers(0, 10, 20))}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return str(root)


@pytest.fixture(scope="module")
def image_folder_root(tmp_path_factory) -> str:
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    g = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 6), ("val", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (40, 50, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(img.numpy()).save(root / split / cls / f"{i}.png")
    return str(root)


@pytest.fixture
def arrays_npz(tmp_path) -> str:
    rng = np.random.default_rng(1)
    path = tmp_path / "mine.npz"
    np.savez(path, images=rng.random((50, 20, 20, 3)).astype(np.float32),
             labels=rng.integers(0, 4, 50))
    return str(path)


def _options(name: str, fake_cifar_root: str, image_folder_root: str, arrays_npz: str) -> dict:
    return {
        "digits": {},
        "mnist": {"root": str(MNIST_ROOT)},
        "translated-mnist": {"root": str(MNIST_ROOT)},
        "cluttered-mnist": {"root": str(MNIST_ROOT)},
        "fashion-mnist": {"root": str(MNIST_ROOT)},
        "cluttered-fashion-mnist": {"root": str(MNIST_ROOT)},
        "cifar10": {"root": fake_cifar_root},
        "imagefolder": {"root": image_folder_root, "image_size": 32},
        "arrays": {"path": arrays_npz},
    }[name]


EXPECTED_SHAPE = {"digits": (1, 32, 32), "mnist": (1, 28, 28), "translated-mnist": (1, 60, 60),
                  "cluttered-mnist": (1, 60, 60), "fashion-mnist": (1, 28, 28),
                  "cluttered-fashion-mnist": (1, 60, 60), "cifar10": (3, 32, 32),
                  "imagefolder": (3, 32, 32), "arrays": (3, 20, 20)}


@pytest.mark.parametrize("name", list_datasets())
@pytest.mark.parametrize("split", SPLITS)
def test_every_dataset_yields_uint8_images_and_int_labels(
        name, split, fake_cifar_root, image_folder_root, arrays_npz, monkeypatch) -> None:
    folder = "FashionMNIST" if "fashion" in name else "MNIST"
    if "mnist" in name and not (MNIST_ROOT / folder / "raw").exists():
        pytest.skip(f"{folder} not found under {MNIST_ROOT}")
    if name == "cifar10":
        import torchvision.datasets.cifar as cifar  # our fake files have no official md5
        monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    ds = make_dataset(name, split, **_options(name, fake_cifar_root, image_folder_root,
                                              arrays_npz))
    assert ds.split == split and ds.name == name
    assert ds.image_shape == EXPECTED_SHAPE[name]
    assert len(ds) > 0
    image, label = ds[len(ds) - 1]
    assert image.dtype == torch.uint8 and tuple(image.shape) == ds.image_shape
    assert isinstance(label, int) and 0 <= label < ds.num_classes
    assert len(ds.mean) == len(ds.std) == ds.image_shape[0]
    if ds.in_memory:
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(ds), *ds.image_shape)
        assert ds.labels.dtype == torch.int64 and ds.labels.shape == (len(ds),)
        assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < ds.num_classes


def test_unknown_dataset_and_option_errors_list_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="cluttered-mnist"):
        make_dataset("mnsit")
    with pytest.raises(UnknownNameError,
                       match=r"'clutered-mnist'; did you mean 'cluttered-mnist'\? valid names"):
        make_dataset("clutered-mnist")
    with pytest.raises(UsageError, match="canvas_size") as err:
        make_dataset("digits", "train", canvas=40)
    assert "did you mean 'canvas_size' for 'canvas'" in str(err.value)
    with pytest.raises(UsageError, match="split must be one of"):
        make_dataset("digits", "validation")
    assert "pieces" in dataset_options("cluttered-mnist")


def test_missing_roots_say_which_files_go_where(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte") as err:
        make_dataset("cluttered-mnist", "train", root=str(tmp_path))
    assert str(tmp_path / "MNIST" / "raw") in str(err.value) and "download" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="root="):
        make_dataset("mnist", "test")
    with pytest.raises(DatasetNotFoundError, match="Fashion-MNIST files missing") as err:
        make_dataset("cluttered-fashion-mnist", "test", root=str(tmp_path))
    assert str(tmp_path / "FashionMNIST" / "raw") in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        make_dataset("cifar10", "train", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="train/<class>"):
        make_dataset("imagefolder", "train", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="nope.npz"):
        make_dataset("arrays", "train", path=str(tmp_path / "nope.npz"))


def test_arrays_accepts_layouts_and_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    hw = rng.integers(0, 256, (30, 12, 12), dtype=np.uint8)
    for images in (hw, hw[..., None], hw[:, None], np.repeat(hw[:, None], 3, axis=1)):
        ds = make_dataset("arrays", "train", images=images, labels=labels)
        assert ds.images.shape[2:] == (12, 12)
    test = make_dataset("arrays", "test", images=hw, labels=labels,
                        test_images=hw[:5], test_labels=labels[:5])
    assert len(test) == 5 and torch.equal(test.images[:, 0], torch.from_numpy(hw[:5]))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        make_dataset("arrays", images=hw.astype(np.float32), labels=labels)
    with pytest.raises(ValueError, match="N=30"):
        make_dataset("arrays", images=hw, labels=labels[:10])
    with pytest.raises(ValueError, match="shape"):
        make_dataset("arrays", images=np.zeros((30, 4)), labels=labels)


def test_digits_canvases_contain_the_digit_and_clutter() -> None:
    ds = make_dataset("digits", "test")
    clean = make_dataset("digits", "test", pieces=0)
    assert torch.equal(ds.labels, clean.labels)
    # clutter only adds ink (max composition); a blank-background canvas has less of it
    assert ds.images.float().sum() > clean.images.float().sum()
    assert (clean.images.flatten(1).max(1).values > 100).all()  # every canvas holds a digit
