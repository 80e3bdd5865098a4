"""Evaluating a policy on every image of a split: numbers known in advance."""

from __future__ import annotations

import numpy as np
import pytest

from agents.evaluation import evaluate_on_split
from glimpse_gym import rules
from glimpse_gym.envs import load_source


def first_cells_policy(obs: dict, masks: np.ndarray) -> np.ndarray:
    """Glimpse cell t at step t (t = cells visited so far)."""
    return obs["visited"].sum(axis=1).astype(np.int64)


@pytest.mark.parametrize("batch", [64, 1000])
def test_accuracy_and_coverage_of_a_fixed_policy(batch: int) -> None:
    source = load_source(split="val")
    t = 4
    result = evaluate_on_split(first_cells_policy, split="val", glimpses=t, batch=batch)
    logits = source.logits.reshape(source.num_images, source.num_classes, -1)
    expected = np.mean([rules.predictions(logits[i], range(t))[-1] == source.labels[i]
                        for i in range(source.num_images)])
    assert result["num_images"] == source.num_images == 144
    assert result["accuracy"] == pytest.approx(expected)
    # cells 0..3 are the first row's first four cells: a 13 x (13 + 3*2) pixel strip
    assert result["coverage"] == pytest.approx(13 * 19 / (32 * 32))
