"""``glimpse train ppo / maskable-ppo`` end to end on a tiny budget, and resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from glimpse_gym.errors import UsageError
from train.ppo import PPOConfig, train_maskable_ppo, train_ppo


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
