"""The Saccader across scales: the parent rule in its choices, the env's observations give the
same cells as the bank, the greedy teacher, the readout, and ``glimpse train
multiscale-saccader`` with TensorBoard, checkpoints, --resume and evaluate-multiscale."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.multiscale_eval import run_multiscale
from agents.multiscale_saccader import (
    MultiScaleSaccader,
    MultiScaleSaccaderPolicy,
    greedy_targets,
    load_multiscale_saccader,
    location_loss,
    policy_loss,
    readout_correct,
)
from agents.saccader import Saccader
from agents.tnet import Geometry, level_features
from glimpse_gym.envs import MultiScaleEnv
from glimpse_gym.errors import CheckpointError, UsageError
from train.multiscale_saccader import (
    MultiScaleSaccaderConfig,
    batch,
    train_multiscale_saccader,
)


def _net(bank, seed: int = 0) -> MultiScaleSaccader:
    torch.manual_seed(seed)
    return MultiScaleSaccader(Geometry.of(bank), where_channels=16, mixed_channels=16)


def test_choices_are_new_cells_under_open_parents(multiscale_banks) -> None:
    bank = multiscale_banks[1]["test"]
    net = _net(bank)
    env = MultiScaleEnv(bank, glimpses=8)
    for sample in (False, True):
        cells = net.rollout(level_features(bank, np.arange(24)), 8, sample=sample,
                            generator=torch.Generator().manual_seed(0)).cells
        for i in range(24):
            env.reset(options={"index": i})
            for a in cells[i].tolist():
                assert env.action_masks()[a], (i, a)  # may be opened when chosen
                env.step(a)
            assert len(set(cells[i].tolist())) == 8
    # the cell of the single-scale Saccader is the one used here
    mixed, blocked = torch.randn(3, 16, 20), torch.rand(3, 20) < 0.3
    single = Saccader(feature_dim=4, num_classes=2, where_channels=8, mixed_channels=16)
    single.spatial.weight.data.copy_(net.spatial.weight.data[..., None])
    assert torch.equal(net.location_logits(mixed, blocked),
                       single.location_logits(mixed, blocked))


def test_the_env_observations_give_the_bank_rollouts_cells(multiscale_banks) -> None:
    """The features of closed parents (zeros in the env) never change a choice."""
    bank = multiscale_banks[1]["test"]
    net = _net(bank, seed=3).eval()
    n = 40
    with torch.no_grad():
        expected = net.rollout(level_features(bank, np.arange(n)), 6, sample=False).cells
    run = run_multiscale(MultiScaleSaccaderPolicy(net), bank, 6, batch=16, max_images=n)
    assert torch.equal(run.actions, expected)
    # and the readout here is the env's reward
    _, prior, actions, _, labels = batch(bank, np.arange(n), torch.device("cpu"))
    assert torch.equal(readout_correct(prior, actions, expected, labels), run.correct[:, -1])


def test_the_teacher_is_greedy_across_scales(multiscale_banks) -> None:
    bank = multiscale_banks[1]["test"]
    net = _net(bank)
    levels, _, actions, finest, _ = batch(bank, np.arange(10), torch.device("cpu"))
    targets = greedy_targets(net, actions, finest, 5)
    env = MultiScaleEnv(bank, glimpses=5)
    for i in range(10):
        cls = int(finest[i].mean(0).argmax())
        env.reset(options={"index": i})
        for a in targets[i].tolist():
            allowed = np.flatnonzero(env.action_masks())
            assert a == allowed[np.argmax(actions[i, allowed, cls].numpy())]
            env.step(a)
    # step 2 and step 3 reach the where network, the mixing MLP and the spatial conv
    for loss in (location_loss(net, levels, actions, finest, 5),
                 policy_loss(net, levels, actions.mean(1), actions,
                             torch.zeros(10, dtype=torch.long), 5, 8e-5)[0]):
        net.zero_grad()
        loss.backward()
        for module in (net.where, net.mix, net.spatial):
            assert any(p.grad is not None and p.grad.abs().sum() > 0
                       for p in module.parameters())


def test_train_writes_results_checkpoints_and_resumes(multiscale_banks, tmp_path,
                                                      monkeypatch) -> None:
    root, loaded = multiscale_banks
    base = dict(banks=str(root), glimpses=5, location_glimpses=6, batch_size=128,
                where_channels=16, mixed_channels=16, device="cpu", progress=False,
                eval_images=100, location_epochs=1, policy_epochs=2)
    straight = train_multiscale_saccader(MultiScaleSaccaderConfig(**base,
                                                                  out=str(tmp_path / "a")))
    assert [(r["stage"], r["epoch"]) for r in straight["history"]] == \
        [("locations", 1), ("policy", 1), ("policy", 2)]
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["test_error"] == pytest.approx(straight["test_error"])
    assert set(saved["test"]["full_resolution_pixels"]) == {"1", "2", "3", "4", "5"}
    for name in ("last.pt", "best.pt"):
        assert (tmp_path / "a" / name).is_file()
    assert any((tmp_path / "a" / "tb").iterdir())

    # a run cut in its last epoch (after two whole ones) is continued by --resume to the
    # same results as the run never cut
    import train.multiscale_saccader as module

    calls, real = [], module.val_error

    def cut(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "val_error", cut)
    with pytest.raises(KeyboardInterrupt):
        train_multiscale_saccader(MultiScaleSaccaderConfig(**base, out=str(tmp_path / "b")))
    monkeypatch.setattr(module, "val_error", real)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["done"] == 2
    resumed = train_multiscale_saccader(MultiScaleSaccaderConfig(
        **base, out=str(tmp_path / "b"), resume=True))
    assert resumed["test_error"] == straight["test_error"]
    assert [r["val_error"] for r in resumed["history"]] == \
        [r["val_error"] for r in straight["history"]]
    with pytest.raises(CheckpointError, match="epochs"):  # another plan cannot continue it
        train_multiscale_saccader(MultiScaleSaccaderConfig(
            **{**base, "policy_epochs": 3}, out=str(tmp_path / "b"), resume=True))

    with pytest.raises(UsageError, match="holds a finished run"):
        train_multiscale_saccader(MultiScaleSaccaderConfig(**base, out=str(tmp_path / "a")))
    with pytest.raises(UsageError, match="--glimpses"):
        train_multiscale_saccader(MultiScaleSaccaderConfig(**{**base, "glimpses": 10 ** 4},
                                                           out=str(tmp_path / "d")))
    # the checkpoint is read back for the same bank, refused as another kind, and evaluated
    net = load_multiscale_saccader(tmp_path / "a" / "best.pt", loaded["test"])
    assert net.num_actions == MultiScaleEnv(loaded["test"]).num_actions
    from agents.tnet import load_tnet
    with pytest.raises(CheckpointError, match="Saccader across scales"):
        load_tnet(tmp_path / "a" / "best.pt", loaded["test"])
    from train.evaluate_multiscale import MultiScaleEvalConfig, evaluate_multiscale

    result = evaluate_multiscale(MultiScaleEvalConfig(
        bank=str(root / "test"), policy=[f"saccader={tmp_path / 'a' / 'best.pt'}"],
        max_glimpses=5, single_scale=False, out=str(tmp_path / "eval"), device="cpu"))
    assert result["policies"]["saccader"]["error"][5] == pytest.approx(saved["test_error"])


def test_ordered_logits_across_scales_is_the_teacher_and_costs_the_full_passes(
        multiscale_banks, tmp_path) -> None:
    from agents.multiscale_eval import OrderedLogitsAcross
    from train.evaluate_multiscale import MultiScaleEvalConfig, evaluate_multiscale

    root, loaded = multiscale_banks
    bank = loaded["test"]
    n = 30
    run = run_multiscale(OrderedLogitsAcross(), bank, 5, batch=16, max_images=n)
    _, _, actions, finest, _ = batch(bank, np.arange(n), torch.device("cpu"))
    assert torch.equal(run.actions, greedy_targets(_net(bank), actions, finest, 5))
    result = evaluate_multiscale(MultiScaleEvalConfig(
        bank=str(root / "test"), policy=["ordered-logits", "random"], max_glimpses=5,
        max_images=n, single_scale=False, out=str(tmp_path / "eval"), device="cpu"))
    row = result["policies"]["ordered-logits (across scales)"]
    assert row["full_resolution_pixels"][1] == 32 * 32  # the full image, at every T
    assert row["pixels"][5] == sum(int(np.prod(lv.bank.meta["image_shape"][1:]))
                                   for lv in bank.levels)
    assert result["policies"]["random"]["full_resolution_pixels"][1] < 32 * 32
