"""The shared policy interface, the evaluation suite and ``glimpse evaluate``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from agents.evaluation import occlude, run_policy, summarise
from agents.policies import CentrePolicy, OrderedLogitsPolicy, RandomPolicy, SaccaderAgent
from agents.reinforce import RamAgent, ReinforceAgent
from agents.saccader import Saccader
from glimpse_gym.envs import OBSERVATION_MODES, load_source
from glimpse_gym.envs.source import GlimpseSource
from glimpse_gym.errors import CheckpointError, UsageError


def _synthetic(n: int = 8) -> GlimpseSource:
    """3x3 grid of non-overlapping 4x4-pixel cells on 12x12 images, 2 classes. The centre
    cell (4) says the label with logit 5; each other cell says the other class with 0.9.
    Known in advance: the full image is always wrong (5 < 8 x 0.9); a policy that glimpses
    the centre first is right iff 5 > 0.9 (T - 1), i.e. for T <= 6; ordered logits follows
    the (wrong) full-image class, so it never glimpses the centre until T = 9: always wrong."""
    labels = np.arange(n) % 2
    logits = np.zeros((n, 2, 3, 3), np.float32)
    for i, y in enumerate(labels):
        logits[i, 1 - y] = 0.9
        logits[i, 1 - y, 1, 1] = 0.0
        logits[i, y, 1, 1] = 5.0
    features = np.random.default_rng(0).standard_normal((n, 4, 3, 3)).astype(np.float16)
    images = np.random.default_rng(1).integers(1, 255, (n, 1, 12, 12), dtype=np.uint8)
    return GlimpseSource(features=features, logits=logits, labels=labels.astype(np.int64),
                         images=images, head_weight=np.zeros((2, 4), np.float32),
                         head_bias=np.zeros(2, np.float32), feature_range=(-4.0, 4.0), rf=4,
                         stride=4, image_shape=(1, 12, 12), class_names=("a", "b"),
                         description={"dataset": "synthetic"})


def test_known_numbers_on_a_synthetic_grid() -> None:
    source = _synthetic()
    centre = summarise(run_policy(CentrePolicy(), source, max_glimpses=9), 9)
    assert [centre["accuracy"][t] for t in range(1, 10)] == [1.0] * 6 + [0.0] * 3
    assert all(centre["coverage"][t] == pytest.approx(t / 9) for t in range(1, 10))
    assert centre["diversity"][1] == 0.0  # every image glimpsed at the same cell
    assert centre["diversity"][9] == pytest.approx(1.0)  # all cells equally often
    ordered = summarise(run_policy(OrderedLogitsPolicy(), source, max_glimpses=9), 9)
    assert all(ordered["accuracy"][t] == 0.0 for t in range(1, 10))
    rand = run_policy(RandomPolicy(seed=3), source, max_glimpses=9)
    # right iff the centre came early enough: check against each episode's own cells
    first_centre = (rand.cells == 4).float().argmax(dim=1) + 1
    for t in range(1, 10):
        expected = (first_centre <= t) & (0.9 * (t - 1) < 5)
        assert torch.equal(rand.correct[:, t - 1], expected)


@pytest.mark.parametrize("make", [
    lambda: RandomPolicy(), lambda: CentrePolicy(), lambda: OrderedLogitsPolicy(),
    lambda: SaccaderAgent(Saccader(4, 2, 8, 8)),
    lambda: ReinforceAgent(RamAgent(4, 9, hidden=16)),
])
def test_each_policy_speaks_the_interface(make) -> None:
    policy = make()
    assert isinstance(policy.name, str) and policy.observation in OBSERVATION_MODES
    run = run_policy(policy, _synthetic(), max_glimpses=9)
    assert run.cells.shape == (8, 9) and run.cells.dtype == torch.long
    # nine glimpses of nine cells, never repeating: every cell exactly once
    assert (run.cells.sort(dim=1).values == torch.arange(9)).all()
    assert run.correct.shape == run.coverage.shape == (8, 9)


def test_occlude_blanks_exactly_the_fields_it_reports() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (5, 3, 20, 24), generator=g, dtype=torch.uint8)
    boxes = torch.tensor([[[0, 0, 5, 5], [3, 3, 9, 8]]] * 5)
    boxes[1, 1] = torch.tensor([15, 20, 30, 40])  # runs off the image: clipped
    occluded, mask = occlude(images, boxes)
    expected = torch.zeros(5, 20, 24, dtype=torch.bool)
    for i in range(5):
        for top, left, bottom, right in boxes[i].tolist():
            expected[i, max(top, 0):bottom, max(left, 0):right] = True
    assert torch.equal(mask, expected)
    assert (occluded[mask[:, None].expand_as(images)] == 0).all()
    assert torch.equal(occluded[~mask[:, None].expand_as(images)],
                       images[~mask[:, None].expand_as(images)])


def test_evaluate_command_writes_every_output(tmp_path) -> None:
    from train.evaluate import EvaluateConfig, evaluate
    from train.reinforce import ReinforceConfig, train_reinforce
    train_reinforce(ReinforceConfig(iterations=2, num_envs=32, eval_every=2, eval_images=64,
                                    out=str(tmp_path / "rf"), progress=False, device="cpu"))
    out = tmp_path / "eval"
    results = evaluate(EvaluateConfig(
        policy=["random", "centre", "ordered-logits", f"ram={tmp_path / 'rf' / 'best.pt'}"],
        max_glimpses=8, max_images=64, pictures=2, out=str(out)))
    table = results["policies"]
    assert set(table) == {"random", "centre", "ordered-logits", "ram", "full-image"}
    for name in ("random", "ram"):
        occ = table[name]["occlusion"]
        assert 0 <= occ["accuracy_policy_occluded"] <= 1 and occ["glimpses"] == 6
        assert (out / f"glimpses-{name}.png").exists() and (out / f"glimpses-{name}.gif").exists()
    saved = json.loads((out / "results.json").read_text())
    assert saved["num_images"] == 64
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * 8
    assert (out / "accuracy.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown policy"):
        evaluate(EvaluateConfig(policy=["oracle"], out=str(out)))
    with pytest.raises(CheckpointError, match="no file"):
        evaluate(EvaluateConfig(policy=["x=missing.pt"], out=str(out)))
    with pytest.raises(UsageError, match="holds a finished run"):
        evaluate(EvaluateConfig(out=str(out)))


def test_reinforce_resumes_to_the_same_weights(tmp_path) -> None:
    from agents.reinforce import load_reinforce
    from train.reinforce import ReinforceConfig, train_reinforce
    kw = dict(num_envs=32, eval_every=2, eval_images=32, progress=False, device="cpu")
    train_reinforce(ReinforceConfig(iterations=4, out=str(tmp_path / "a"), **kw))
    train_reinforce(ReinforceConfig(iterations=2, out=str(tmp_path / "b"), **kw))
    train_reinforce(ReinforceConfig(iterations=4, out=str(tmp_path / "b"), resume=True, **kw))
    a = load_reinforce(tmp_path / "a" / "last.pt")[0].state_dict()
    b = load_reinforce(tmp_path / "b" / "last.pt")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_on_a_bank_from_the_users_own_arrays(tmp_path) -> None:
    from train.evaluate import EvaluateConfig, evaluate
    from train.extract_features import ExtractConfig, extract_features
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", images=rng.integers(0, 256, (40, 32, 32), dtype=np.uint8),
             labels=rng.integers(0, 10, 40), test_images=rng.integers(0, 256, (12, 32, 32),
                                                                        dtype=np.uint8),
             test_labels=rng.integers(0, 10, 12))
    extract_features(ExtractConfig(checkpoint="default", dataset="arrays",
                                   data_option=[f"path={tmp_path / 'mine.npz'}"],
                                   out=str(tmp_path / "banks"), split=["test"],
                                   progress=False, device="cpu"))
    results = evaluate(EvaluateConfig(bank=str(tmp_path / "banks" / "test"),
                                      checkpoint="default", max_glimpses=4, pictures=1,
                                      out=str(tmp_path / "eval")))
    assert results["num_images"] == 12
    assert set(results["policies"]) == {"random", "centre", "ordered-logits", "full-image"}
    assert "occlusion" in results["policies"]["random"]


def test_random_cells_do_not_depend_on_how_many_glimpses_are_taken() -> None:
    """The same seed gives the same first T cells whatever Tmax (so bank-info's T = 6 and
    evaluate's Tmax = 12 report the same random error at T = 6)."""
    source = load_source(split="test")
    short = run_policy(RandomPolicy(3), source, max_glimpses=6, batch=100)
    long = run_policy(RandomPolicy(3), source, max_glimpses=12, batch=100)
    assert torch.equal(short.cells, long.cells[:, :6])
    assert torch.equal(short.correct, long.correct[:, :6])
