"""TNet on a multi-scale bank: the parent rule in its choices, top-k, the env's readout, the
loss's gradients, and ``glimpse train tnet`` with TensorBoard, checkpoints and --resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.tnet import Geometry, TNet, evaluate_tnet, level_features, load_tnet, tnet_loss
from glimpse_gym.envs import MultiScaleEnv
from glimpse_gym.errors import UsageError
from train.tnet import TNetConfig, train_tnet


@pytest.fixture()
def banks(multiscale_banks):
    return multiscale_banks


def test_choices_follow_the_parents_and_the_scores(banks) -> None:
    _, b = banks
    torch.manual_seed(0)
    net = TNet(Geometry.of(b["test"]), (3, 2))
    levels = level_features(b["test"], np.arange(16))
    out = net(levels)
    first, second = out["chosen"]
    assert first.shape == (16, 3) and second.shape == (16, 2)
    parent = b["test"].levels[2].parent
    for i in range(16):
        assert len(set(first[i].tolist())) == 3 and len(set(second[i].tolist())) == 2
        assert set(parent[second[i].numpy()]) <= set(first[i].tolist())
    # level 1's choice is the top 3 of its location scores, best first
    scores = net.scores(1, levels[0])
    assert torch.equal(first, scores.topk(3, dim=1).indices)
    assert out["log_probs"].shape == (16, 5) and bool((out["log_probs"] <= 0).all())
    assert out["each"].shape == (16, 6, 10) and out["logits"].shape == (16, 10)


def test_the_loss_reaches_every_part(banks) -> None:
    _, b = banks
    net = TNet(Geometry.of(b["test"]), (3, 2))
    out = net(level_features(b["test"], np.arange(32)))
    loss, stats = tnet_loss(out, torch.from_numpy(np.array(b["test"].labels[:32])), 0.5)
    loss.backward()
    for name, module in (("head", net.head), ("position", net.position),
                         ("where 1", net.where[0]), ("where 2", net.where[1])):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), \
            name
    assert 0 <= stats["reward"] <= 1 and np.isfinite(stats["loss"])


def test_the_readout_equals_the_env_playing_the_same_cells(banks) -> None:
    _, b = banks
    torch.manual_seed(1)
    net = TNet(Geometry.of(b["test"]), (3, 2))
    result = evaluate_tnet(net, b["test"], max_images=40)
    out = net(level_features(b["test"], np.arange(40)))
    env = MultiScaleEnv(b["test"], glimpses=5)
    rewards = []
    for i in range(40):
        env.reset(options={"index": i})
        actions = [int(c) for c in out["chosen"][0][i]] + \
            [int(env.offsets[1] + c) for c in out["chosen"][1][i]]
        for a in actions:
            assert env.action_masks()[a]  # every choice may be opened when it is made
            _, reward, *_ = env.step(a)
        rewards.append(reward)
    assert result["readout_error"] == pytest.approx(1 - np.mean(rewards))


def test_train_tnet_writes_results_checkpoints_and_resumes(banks, tmp_path) -> None:
    root, loaded = banks
    base = dict(banks=str(root), locations="3,2", batch_size=128, device="cpu",
                progress=False, eval_images=100)
    straight = train_tnet(TNetConfig(**base, epochs=2, out=str(tmp_path / "a")))
    train_tnet(TNetConfig(**base, epochs=1, out=str(tmp_path / "b")))
    resumed = train_tnet(TNetConfig(**base, epochs=2, out=str(tmp_path / "b"), resume=True))
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["test_error"] == straight["test_error"]
    assert resumed["history"][1]["loss"] == pytest.approx(straight["history"][1]["loss"])
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["glimpses"] == 5  # 2 cells of the full-size level, 13x13 pixels each
    assert saved["cost_per_episode"]["full_resolution_pixels"] == 2 * 13 ** 2
    for name in ("last.pt", "best.pt"):
        assert (tmp_path / "a" / name).is_file()
    assert any((tmp_path / "a" / "tb").iterdir())
    with pytest.raises(UsageError, match="holds a finished run"):
        train_tnet(TNetConfig(**base, epochs=1, out=str(tmp_path / "a")))
    from glimpse_gym.errors import CheckpointError
    with pytest.raises(CheckpointError, match="--hidden 64"):  # resumed with another width
        train_tnet(TNetConfig(**base, epochs=3, hidden=32, out=str(tmp_path / "b"),
                              resume=True))
    # the test figures are best.pt's
    best = load_tnet(tmp_path / "a" / "best.pt", loaded["test"])
    assert saved["test_error"] == evaluate_tnet(best, loaded["test"])["error"]
    for locations, match in (("5", "one count"), ("3,x", "integers"), ("40,2", "fewer than"),
                             ("1,30", "children")):
        with pytest.raises(UsageError, match=match):
            train_tnet(TNetConfig(**{**base, "locations": locations}, out=str(tmp_path / "c")))
    # the trained TNet against random cells and the finest level alone, error and cost
    from train.evaluate_multiscale import MultiScaleEvalConfig, evaluate_multiscale

    result = evaluate_multiscale(MultiScaleEvalConfig(
        bank=str(root / "test"), policy=["random", f"tnet={tmp_path / 'a' / 'best.pt'}"],
        max_glimpses=5, max_images=80, out=str(tmp_path / "eval"), device="cpu"))
    rows = result["policies"]
    assert set(rows) == {"random", "tnet", "ordered-logits (finest level)",
                         "random (finest level)", "full-image",
                         "ordered-logits (level 1, scale 0.75)", "random (level 1, scale 0.75)",
                         "full-image (level 1, scale 0.75)"}
    # a level below the finest alone: its whole image at its size, no full-resolution pixel
    level1 = loaded["test"].levels[1]
    assert rows["full-image (level 1, scale 0.75)"]["pixels"][1] == \
        np.prod(level1.bank.meta["image_shape"][1:])
    assert rows["random (level 1, scale 0.75)"]["pixels"][2] == 2 * level1.bank.rf ** 2
    assert rows["ordered-logits (level 1, scale 0.75)"]["full_resolution_pixels"][5] == 0
    assert rows["tnet"]["glimpses_per_level"] == {1: 3.0, 2: 2.0}
    assert rows["tnet"]["full_resolution_pixels"][5] == 2 * 13 ** 2
    assert rows["random (finest level)"]["full_resolution_pixels"][5] == 5 * 13 ** 2
    assert rows["full-image"]["full_resolution_pixels"][1] == 32 * 32
    for name in ("results.json", "results.md", "cost.png"):
        assert (tmp_path / "eval" / name).is_file()
    with pytest.raises(UsageError, match="unknown policy"):
        evaluate_multiscale(MultiScaleEvalConfig(bank=str(root / "test"), policy=["centre"],
                                                 out=str(tmp_path / "eval2")))


def test_the_policy_in_the_env_makes_the_models_choices(banks) -> None:
    from agents.multiscale_eval import RandomLegal, TNetPolicy, run_multiscale, summarise_multiscale

    _, b = banks
    torch.manual_seed(2)
    net = TNet(Geometry.of(b["test"]), (3, 2))
    run = run_multiscale(TNetPolicy(net, b["test"]), b["test"], 5, batch=64, max_images=100)
    out = net(level_features(b["test"], np.arange(100)))
    expected = torch.cat([out["chosen"][0], out["chosen"][1] + 36], 1)
    assert torch.equal(run.actions, expected)
    summary = summarise_multiscale(run)
    assert summary["error"][5] == pytest.approx(
        evaluate_tnet(net, b["test"], max_images=100)["readout_error"])
    # every glimpse opened a new cell: the costs grow by one cell each step
    assert summary["flops"][5] > summary["flops"][1] and summary["pixels"][3] < summary["pixels"][4]
    random = summarise_multiscale(run_multiscale(RandomLegal(0), b["test"], 5, max_images=100))
    assert set(random) == {"error", "pixels", "full_resolution_pixels", "flops"}
