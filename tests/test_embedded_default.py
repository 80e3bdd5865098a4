"""The shipped digits BagNet loads offline and reproduces the result it records."""

from __future__ import annotations

import pytest

from glimpse_gym.bagnet import evaluate_bagnet, load_bagnet
from glimpse_gym.datasets import make_dataset
from glimpse_gym.fileio import state_dict_hash
from glimpse_gym.pretrained import default_checkpoint, resolve_checkpoint


def test_embedded_default_reproduces_its_recorded_test_error() -> None:
    path = default_checkpoint()
    assert path.stat().st_size < 5_000_000  # a few MB at most
    assert resolve_checkpoint("default") == path
    model, ckpt = load_bagnet(path)
    assert "train_state" not in ckpt
    assert ckpt["model_hash"] == state_dict_hash(model.state_dict())
    assert ckpt["dataset"]["name"] == "digits"
    test = make_dataset("digits", "test", seed=ckpt["dataset"]["seed"])
    metrics = evaluate_bagnet(model, test, ckpt["normalization"]["mean"],
                              ckpt["normalization"]["std"])
    assert metrics["image_error"] == pytest.approx(ckpt["metrics"]["test"]["image_error"])
    assert metrics["image_error"] < 0.05
    assert model.grid_size(32, 32) == (10, 10)
