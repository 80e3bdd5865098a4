"""``glimpse train saccader`` on the embedded digits default."""

from __future__ import annotations

import json

import pytest
import torch

from agents import SaccaderPolicy, load_saccader_weights
from glimpse_gym.errors import UsageError
from train.saccader import SaccaderConfig, load_saccader, train_saccader


def _cfg(tmp_path, **kw) -> SaccaderConfig:
    base = dict(where_channels=8, mixed_channels=8, location_epochs=1, policy_epochs=2,
                batch_size=128, eval_glimpses="1,6,12", out=str(tmp_path / "run"),
                progress=False, device="cpu")
    return SaccaderConfig(**{**base, **kw})


def test_both_stages_write_checkpoints_and_results(tmp_path) -> None:
    results = train_saccader(_cfg(tmp_path))
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    errors = saved["test_error"]
    assert set(errors) == {"saccader", "saccader-bagnet-head", "ordered-logits", "random",
                           "full-image"}
    assert set(errors["saccader"]) == {"1", "6", "12"}
    assert all(0 <= v <= 1 for row in errors.values() for v in row.values())
    assert saved["test_images"] == results["test_images"] > 0
    assert len(saved["locations"]) == 1 and len(saved["policy"]) == 2
    # the same network as an SB3 policy through Glimpse-v0 (its own head) agrees at T = 6
    env_accuracy = saved["through_env"]["accuracy"]
    assert abs(env_accuracy - (1 - errors["saccader"]["6"])) <= 2 / saved["test_images"]
    net, ckpt = load_saccader(tmp_path / "run" / "policy.pt")
    assert ckpt["stage"] == "policy" and ckpt["epoch"] == 2
    from stable_baselines3 import PPO

    from glimpse_gym.sb3 import SB3VecEnv
    model = PPO(SaccaderPolicy, SB3VecEnv(num_envs=2), n_steps=6, batch_size=12, device="cpu",
                policy_kwargs={"where_channels": 8, "mixed_channels": 8})
    load_saccader_weights(model.policy, tmp_path / "run" / "policy.pt")
    assert torch.equal(model.policy.saccader.classifier.weight, net.classifier.weight)


def test_policy_stage_resumes_to_the_same_weights(tmp_path, monkeypatch) -> None:
    train_saccader(_cfg(tmp_path / "a"))
    # the same run, killed right after the first policy epoch's checkpoint, then resumed
    import train.saccader as module
    save = module._checkpoint

    def save_then_die(path, net, opt, stage, epoch, *args, **kwargs):
        save(path, net, opt, stage, epoch, *args, **kwargs)
        if stage == "policy" and epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_saccader(_cfg(tmp_path / "b"))
    monkeypatch.setattr(module, "_checkpoint", save)
    train_saccader(_cfg(tmp_path / "b", stage="policy", resume=True))
    a = load_saccader(tmp_path / "a" / "run" / "policy.pt")[0].state_dict()
    b = load_saccader(tmp_path / "b" / "run" / "policy.pt")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_stage_and_missing_step_two(tmp_path) -> None:
    with pytest.raises(ValueError, match="--stage must be one of"):
        train_saccader(_cfg(tmp_path, stage="everything"))
    with pytest.raises(UsageError, match="run --stage locations first"):
        train_saccader(_cfg(tmp_path, stage="policy"))


def test_stage_all_runs_steps_one_to_three(tmp_path) -> None:
    results = train_saccader(_cfg(tmp_path, stage="all", dataset="digits", bagnet_epochs=1,
                                  policy_epochs=1))
    run = tmp_path / "run"
    assert (run / "bagnet.pt").exists()
    assert all((run / "banks" / s / "meta.json").exists() for s in ("train", "val", "test"))
    assert (run / "locations.pt").exists() and (run / "policy.pt").exists()
    assert results["config"]["banks"] == str(run / "banks")


def test_stage_all_takes_dataset_options_and_records_the_data(tmp_path) -> None:
    import gymnasium as gym
    import numpy as np

    from glimpse_gym.datasets import make_dataset

    digits = make_dataset("digits", "train")
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    npz = tmp_path / "mine.npz"
    np.savez(npz, images=digits.images.numpy()[:600], labels=digits.labels.numpy()[:600],
             class_names=np.array(names))
    results = train_saccader(_cfg(tmp_path, stage="all", dataset="arrays",
                                  data_option=[f"path={npz}"], bagnet_epochs=1,
                                  policy_epochs=1, eval_glimpses="6"))
    assert {s: d["dataset"] for s, d in results["data"].items()} == {
        "train": "arrays", "val": "arrays", "test": "arrays"}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["data"]["test"]["bank"].endswith("banks/test")
    # the class names travel from the dataset through the bank into the env's info
    env = gym.make("Glimpse-v0", bank=str(tmp_path / "run" / "banks" / "test"), glimpses=2)
    env.reset(seed=0)
    env.step(0)
    *_, info = env.step(1)
    assert info["label_name"] == names[info["label"]]
    assert info["prediction_name"] == names[info["prediction"]]
    assert env.unwrapped.class_names == tuple(names)
    with pytest.raises(UsageError, match="only --stage all runs"):
        train_saccader(_cfg(tmp_path, dataset="arrays"))


def test_finetune_stage_trains_the_bagnet_too_and_writes_new_banks(tmp_path) -> None:
    from glimpse_gym.bagnet import load_checkpoint
    from glimpse_gym.envs import load_source
    from glimpse_gym.pretrained import default_checkpoint

    train_saccader(_cfg(tmp_path, policy_epochs=1))
    with pytest.raises(UsageError, match="--bagnet-checkpoint"):
        train_saccader(_cfg(tmp_path, stage="finetune"))
    before = load_checkpoint(default_checkpoint())
    results = train_saccader(_cfg(tmp_path, stage="finetune", finetune_epochs=1,
                                  bagnet_checkpoint="default"))
    folder = tmp_path / "run" / "finetuned"
    after = load_checkpoint(folder / "bagnet.pt")
    assert after["metrics"]["finetuned_from"] == before["model_hash"] != after["model_hash"]
    changed = [k for k, v in after["state_dict"].items() if v.is_floating_point()
               and not torch.equal(v, before["state_dict"][k])]
    assert "layers.0.0.weight" in changed  # the gradient reached the BagNet's first layer
    assert not any("running_" in k for k in changed)  # BatchNorm keeps its statistics
    test = load_source(folder / "banks" / "test")
    assert test.description["model_hash"] == after["model_hash"]
    net, ckpt = load_saccader(folder / "policy.pt")
    assert ckpt["stage"] == "finetune" and ckpt["bank"]["model_hash"] == after["model_hash"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(saved["finetuned"]["test_error"]) == set(results["test_error"])
    assert json.loads((folder / "results.json").read_text()) == saved["finetuned"]
    assert len(saved["policy"]) == 1  # the histories of the bank-trained stages are kept


def test_a_bank_larger_than_memory_trains_to_the_same_weights(tmp_path, monkeypatch) -> None:
    """With too little free memory for the splits, batches are read from the banks' files:
    the same batches, so the same weights as the in-memory run."""
    import glimpse_gym.envs.tables as tables
    import train.saccader_data as data

    # (the process's first run writes the default banks to the cache, which draws random
    # numbers: the run compared is a later one)
    for name in ("first", "memory"):
        train_saccader(_cfg(tmp_path / name, policy_epochs=1))
    monkeypatch.setattr(tables, "available_memory", lambda: 1000)
    seen = []
    original = data.SaccaderSplit.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.features is None)

    monkeypatch.setattr(data.SaccaderSplit, "__init__", spy)
    train_saccader(_cfg(tmp_path / "disk", policy_epochs=1))
    assert seen and all(seen)
    a, _ = load_saccader(tmp_path / "memory" / "run" / "policy.pt")
    b, _ = load_saccader(tmp_path / "disk" / "run" / "policy.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
