"""Splits are deterministic for a seed, disjoint, and test never depends on the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glimpse_gym.datasets import make_dataset, split_indices
from glimpse_gym.datasets.canvas import compose_canvases
from tests.conftest import MNIST_ROOT, needs_mnist


def test_split_indices_deterministic_disjoint_and_complete() -> None:
    a_train, a_val = split_indices(1000, 0.1, seed=3)
    b_train, b_val = split_indices(1000, 0.1, seed=3)
    c_train, _ = split_indices(1000, 0.1, seed=4)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_val, b_val)
    assert not np.array_equal(a_train, c_train)
    assert len(a_val) == 100 and not set(a_train) & set(a_val)
    assert sorted(np.concatenate([a_train, a_val])) == list(range(1000))
    with pytest.raises(ValueError):
        split_indices(10, 1.0, 0)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_digits_same_seed_same_split(split: str) -> None:
    a, b = make_dataset("digits", split, seed=5), make_dataset("digits", split, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_digits_seed_changes_train_val_but_not_test_digits() -> None:
    a, b = make_dataset("digits", "val", seed=0), make_dataset("digits", "val", seed=1)
    assert not torch.equal(a.labels, b.labels)
    t0, t1 = make_dataset("digits", "test", seed=0), make_dataset("digits", "test", seed=1)
    assert torch.equal(t0.labels, t1.labels)  # the same digits in the test split
    sizes = [len(make_dataset("digits", s)) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797


def test_layout_seed_redraws_canvases_for_the_same_digits() -> None:
    a = make_dataset("digits", "train", layout_seed=0)
    b = make_dataset("digits", "train", layout_seed=1)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.images, b.images)


def test_compose_canvases_places_each_object_whole() -> None:
    rng = np.random.default_rng(0)
    objects = np.full((50, 6, 6), 200, dtype=np.uint8)
    canvases = compose_canvases(objects, 20, 0, 4, None, rng)
    assert canvases.shape == (50, 20, 20)
    assert ((canvases == 200).sum(axis=(1, 2)) == 36).all()  # every object fully on canvas
    with pytest.raises(ValueError, match="smaller"):
        compose_canvases(objects, 5, 0, 4, None, rng)


@needs_mnist
def test_cluttered_mnist_standard_and_large_canvases() -> None:
    val = make_dataset("cluttered-mnist", "val", root=str(MNIST_ROOT))
    again = make_dataset("cluttered-mnist", "val", root=str(MNIST_ROOT))
    assert val.image_shape == (1, 60, 60) and len(val) == 5000
    assert torch.equal(val.images, again.images)
    train = make_dataset("cluttered-mnist", "train", root=str(MNIST_ROOT))
    assert len(train) == 55000
    big = make_dataset("cluttered-mnist", "test", root=str(MNIST_ROOT), canvas_size=100, pieces=8)
    assert big.image_shape == (1, 100, 100) and len(big) == 10000
    plain = make_dataset("translated-mnist", "test", root=str(MNIST_ROOT))
    # clutter adds ink over the translated digit
    assert val.images.float().mean() > plain.images.float().mean()
