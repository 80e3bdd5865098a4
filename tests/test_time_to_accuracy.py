"""The BagNet time-to-accuracy benchmark's parts: recipes, per-image outcomes, paired errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from agents.stats import paired_difference
from glimpse_gym.bagnet import evaluate_bagnet, load_bagnet
from glimpse_gym.datasets import make_dataset
from glimpse_gym.pretrained import default_checkpoint
from train.pretrain_bagnet import PretrainConfig, make_split

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bagnet_time_to_accuracy.py"
_spec = importlib.util.spec_from_file_location("bagnet_time_to_accuracy", SCRIPT)
tta = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tta)


def test_a_recipe_converts_values_to_the_options_types() -> None:
    name, overrides = tta.parse_recipe("half-b64:epochs=7,batch-size=64,lr=0.004,nam=yes")
    assert name == "half-b64"
    assert overrides == {"epochs": 7, "batch_size": 64, "lr": 0.004, "nam": True}
    assert isinstance(overrides["lr"], float) and isinstance(overrides["epochs"], int)
    assert tta.parse_recipe("current:") == ("current", {})


@pytest.mark.parametrize("text", ["epochs=7", ":epochs=7", "a/b:epochs=7", "x:epoch=7",
                                  "x:epochs"])
def test_a_bad_recipe_names_what_is_expected(text) -> None:
    with pytest.raises(ValueError, match="recipe"):
        tta.parse_recipe(text)


def test_per_image_outcomes_agree_with_the_error_on_the_same_images() -> None:
    model, ckpt = load_bagnet(default_checkpoint())
    seed = ckpt["dataset"]["seed"]
    test = make_dataset("digits", "test", seed=seed)
    norm = ckpt["normalization"]
    metrics = evaluate_bagnet(model, test, norm["mean"], norm["std"], per_image=True)
    correct = metrics["correct"]
    assert correct.dtype == bool and correct.shape == (len(test),)
    assert 1 - correct.mean() == pytest.approx(metrics["image_error"])
    # the benchmark reads the same split from a pretraining config
    split = make_split(PretrainConfig(dataset="digits", seed=seed), "test")
    assert np.array_equal(tta.outcomes_on_test(split, str(default_checkpoint())), correct)


def test_paired_difference_is_a_bootstrap_over_items() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(2000) > 0.05  # a model right on about 95 % of the items
    a = b.copy()
    a[np.flatnonzero(b)[:40]] = False  # a: 40 more mistakes on the same items
    d = paired_difference(a, b)
    assert d["mean"] == pytest.approx(40 / 2000) and d["differs"]
    # against a brute-force bootstrap of the per-item differences
    per_item = b.astype(float) - a.astype(float)
    picks = rng.integers(0, len(a), (4000, len(a)))
    lo, hi = np.quantile(per_item[picks].mean(axis=1), [0.025, 0.975])
    assert d["ci95"] == pytest.approx([lo, hi], abs=0.002)
    # swapping the models flips the sign; a model against itself does not differ
    assert paired_difference(b, a)["mean"] == pytest.approx(-d["mean"])
    assert not paired_difference(a, a)["differs"]
    # two models with the same error on different items: no difference
    c = np.roll(b, 7)
    assert not paired_difference(c, b)["differs"]
    with pytest.raises(ValueError, match="same non-zero length"):
        paired_difference(a, b[:10])


def test_a_recipe_cut_short_continues_from_its_last_epoch(tmp_path, capsys) -> None:
    base = PretrainConfig(dataset="digits", image_loss=1.0, max_train_images=64, batch_size=32,
                          width=4, feature_dim=8, progress=False, device="cpu")
    tta.run_recipe(base, "r", {"epochs": 1}, tmp_path, overwrite=False)
    (tmp_path / "r" / "metrics.json").unlink()  # as if killed after its first epoch
    row = tta.run_recipe(base, "r", {"epochs": 2}, tmp_path, overwrite=False)
    assert "r: continuing" in capsys.readouterr().out
    assert row["epochs"] == 2 and row["images"] == 2 * 64
