"""``glimpse train ppo / maskable-ppo`` end to end on a tiny budget, and resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.evaluation import run_policy
from agents.loading import make_policy
from agents.policies import SB3Policy
from glimpse_gym.envs import load_source
from glimpse_gym.errors import UsageError
from train.ppo import PPOConfig, resolve_extractor, train_maskable_ppo, train_ppo


def tiny(tmp_path, **overrides) -> PPOConfig:
    base = dict(num_envs=16, total_timesteps=960, n_steps=12, batch_size=96, n_epochs=1,
                eval_freq=480, eval_images=64, out=str(tmp_path), device="cpu",
                progress=False, features_dim=32, channels=8, glimpses=3)
    base.update(overrides)
    return PPOConfig(**base)


@pytest.mark.parametrize("train", [train_ppo, train_maskable_ppo])
def test_train_evaluate_checkpoint_and_resume(tmp_path, train) -> None:
    cfg = tiny(tmp_path)
    results = train(cfg)
    assert results["timesteps"] >= 960
    assert results["test"]["num_images"] == 359 and 0 <= results["test"]["accuracy"] <= 1
    assert [h["timesteps"] for h in results["val_history"]] == [480, 960]
    for name in ("last.zip", "best.zip", "results.json"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test"] == results["test"]
    events = EventAccumulator(str(next((tmp_path / "tb").iterdir())))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"eval/accuracy", "eval/coverage", "rollout/episode_accuracy",
            "rollout/ep_rew_mean"} <= tags
    more = train(dataclasses.replace(cfg, resume=True, total_timesteps=1920))
    assert more["timesteps"] >= 1920


def test_resume_without_a_checkpoint_says_where_it_looked(tmp_path) -> None:
    with pytest.raises(UsageError, match="last.zip"):
        train_ppo(tiny(tmp_path / "none", resume=True))


@pytest.mark.parametrize("train", [train_ppo, train_maskable_ppo])
def test_compact_observation_trains_loads_and_reads_more_glimpses(tmp_path, train) -> None:
    """The glimpses observation with the sequence extractor (auto): trains, evaluates, and the
    saved zip is rebuilt with its observation mode and runs for more glimpses (12) than it
    trained with (3)."""
    cfg = tiny(tmp_path, observation="glimpses")
    results = train(cfg)
    assert results["config"]["extractor"] == "sequence" and 0 <= results["test"]["accuracy"] <= 1
    policy = make_policy(f"agent={tmp_path / 'last.zip'}", load_source(split="val"))
    assert policy.observation == "glimpses"
    run = run_policy(policy, split="val", max_glimpses=12, max_images=40)
    assert run.cells.shape == (40, 12)
    if train is train_maskable_ppo:  # masked: twelve distinct cells per image
        assert all(len(set(row)) == 12 for row in run.cells.tolist())


def test_extractor_must_read_the_observation(tmp_path) -> None:
    assert resolve_extractor(tiny(tmp_path)).extractor == "cell"
    assert resolve_extractor(tiny(tmp_path, observation="glimpses")).extractor == "sequence"
    for observation, extractor in (("glimpses", "cell"), ("full", "sequence"),
                                   ("partial", "sequence")):
        with pytest.raises(UsageError, match="cannot read --observation"):
            resolve_extractor(tiny(tmp_path, observation=observation, extractor=extractor))
    with pytest.raises(UsageError, match="--observation must be one of"):
        resolve_extractor(tiny(tmp_path, observation="fovea"))


def test_by_reference_trains_and_reloads_with_its_bank(tmp_path) -> None:
    """observation=index: the policy reads the grids from the training bank; the zip
    records the bank, SB3's own MaskablePPO.load rebuilds the policy with it, and the policy
    read back by the project acts on the full grids of another split exactly as the trained
    model does."""
    from sb3_contrib import MaskablePPO

    cfg = tiny(tmp_path, observation="index")
    results = train_maskable_ppo(cfg)
    assert results["config"]["extractor"] == "cell" and 0 <= results["test"]["accuracy"] <= 1
    # resumed, the extractor reads the bank the env now indexes (here the same one)
    more = train_maskable_ppo(dataclasses.replace(cfg, resume=True, total_timesteps=1920))
    assert more["timesteps"] >= 1920
    loaded = MaskablePPO.load(tmp_path / "last.zip")  # SB3's loader (this file is trusted)
    grids = loaded.policy.features_extractor.grids
    assert grids.bank["bank"] is None and grids.bank["split"] == "train"
    assert grids.source.description["split"] == "train"
    ours = make_policy(f"agent={tmp_path / 'last.zip'}", load_source(split="test"))
    assert ours.observation == "full"
    theirs = SB3Policy(loaded, observation="full")
    a = run_policy(ours, split="test", max_glimpses=4, max_images=50)
    b = run_policy(theirs, split="test", max_glimpses=4, max_images=50)
    assert torch.equal(a.cells, b.cells)
    # on its own bank, by reference and on the full grids: the same glimpses
    by_reference = run_policy(SB3Policy(loaded, observation="index"), split="train",
                              max_glimpses=4, max_images=50)
    full = run_policy(theirs, split="train", max_glimpses=4, max_images=50)
    assert torch.equal(by_reference.cells, full.cells)
    assert torch.equal(by_reference.correct, full.correct)
