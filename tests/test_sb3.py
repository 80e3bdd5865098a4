"""The SB3 VecEnv adapter: SB3 semantics, VecMonitor statistics and MaskablePPO masks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor

from agents.extractors import GridExtractor
from glimpse_gym.sb3 import SB3VecEnv


def test_adapter_follows_sb3_semantics() -> None:
    venv = SB3VecEnv(num_envs=4, glimpses=2)
    venv.seed(3)
    obs = venv.reset()
    assert obs["features"].shape == (4, 1600) and obs["visited"].shape == (4, 100)
    assert obs["visited"].sum() == 0
    venv.step_async(np.array([1, 2, 3, 4]))
    obs, rewards, dones, infos = venv.step_wait()
    assert rewards.dtype == np.float32 and not dones.any() and infos == [{}] * 4
    assert (obs["visited"].sum(axis=1) == 1).all()
    venv.step_async(np.array([5, 6, 7, 8]))
    obs, rewards, dones, infos = venv.step_wait()
    assert dones.all()
    assert (obs["visited"].sum(axis=1) == 0).all()  # the next episode's first observation
    for i, info in enumerate(infos):
        assert info["terminal_observation"]["visited"].sum() == 2
        assert rewards[i] == float(info["correct"]) and 0 < info["coverage"] <= 1
    masks = np.stack(venv.env_method("action_masks"))
    assert masks.shape == (4, 100) and masks.dtype == bool and masks.all()
    assert venv.get_attr("feature_shape") == [(10, 10, 16)] * 4


def test_vecmonitor_counts_episodes() -> None:
    venv = VecMonitor(SB3VecEnv(num_envs=3, glimpses=2))
    venv.reset()
    for _ in range(2):
        venv.step_async(np.array([0, 50, 99]))
        _, rewards, dones, infos = venv.step_wait()
    assert all(info["episode"]["l"] == 2 and info["episode"]["r"] == r
               for info, r in zip(infos, rewards, strict=True))


def test_ppo_and_maskable_ppo_train_save_and_load(tmp_path) -> None:
    venv = VecMonitor(SB3VecEnv(num_envs=16, glimpses=3))
    kwargs = {"features_extractor_class": GridExtractor,
              "features_extractor_kwargs": {"grid": (10, 10), "features_dim": 32}}
    for algo in (PPO, MaskablePPO):
        model = algo("MultiInputPolicy", venv, n_steps=6, batch_size=48, n_epochs=1,
                     policy_kwargs=kwargs, seed=0)
        model.learn(200)
        path = tmp_path / f"{algo.__name__}.zip"
        model.save(path)
        loaded = algo.load(path, env=venv)
        obs = venv.reset()
        extra = {"action_masks": np.stack(venv.env_method("action_masks"))} \
            if algo is MaskablePPO else {}
        a1, _ = model.predict(obs, deterministic=True, **extra)
        a2, _ = loaded.predict(obs, deterministic=True, **extra)
        assert np.array_equal(a1, a2)
        assert isinstance(loaded.policy.features_extractor, GridExtractor)


def test_extractors_shapes_and_cell_locality() -> None:
    import torch

    from agents.extractors import CellExtractor

    space = SB3VecEnv(num_envs=1).observation_space
    obs = {"features": torch.rand(2, 1600), "visited": torch.zeros(2, 100)}
    grid = GridExtractor(space, grid=(10, 10), features_dim=24)
    assert grid(obs).shape == (2, 24)
    cell = CellExtractor(space, hidden=16, code=4)
    out = cell(obs)
    assert out.shape == (2, 500) and cell.features_dim == 500  # 4 code values + visited bit
    changed = {k: v.clone() for k, v in obs.items()}
    changed["features"].view(2, 100, 16)[:, 5] += 1.0  # cell 5's features
    changed["visited"][:, 5] = 1
    diff = (cell(changed) - out).abs().view(2, 100, 5)
    assert diff[:, 5, :4].sum() > 0 and (diff[:, 5, 4] == 1).all()
    assert diff.sum(dim=(0, 2))[5] == diff.sum()  # only cell 5's code and bit moved


def _filled(buffer_class: type, space: spaces.Dict, maskable: bool, seed: int) -> Any:
    """A rollout buffer of 5 steps x 3 envs filled with distinct random data, twice (with a
    ``reset`` between; the second rollout passes no action masks, so they must be all ones)."""
    rng = np.random.default_rng(seed)
    buf = buffer_class(5, space, spaces.Discrete(6), device="cpu", n_envs=3, gamma=0.9)
    _fill(buf, rng, maskable)
    kept = buf.observations["features"]
    buf.reset()
    if buffer_class.__module__.startswith("glimpse_gym"):  # ours keeps its arrays
        assert buf.observations["features"] is kept
    _fill(buf, rng, masks=False)
    return buf


def _fill(buf: Any, rng: np.random.Generator, masks: bool) -> None:
    for _ in range(5):
        extra = {"action_masks": rng.random((3, 6)) < 0.5} if masks else {}
        buf.add({"features": rng.random((3, 12), dtype=np.float32),
                 "visited": rng.integers(0, 2, (3, 6), dtype=np.int8)},
                rng.integers(0, 6, 3), rng.random(3), rng.random(3) < 0.3,
                torch.as_tensor(rng.random(3)), torch.as_tensor(rng.random(3)), **extra)
    buf.compute_returns_and_advantage(torch.as_tensor(rng.random(3)), rng.random(3) < 0.5)


@pytest.mark.parametrize("maskable", [False, True])
def test_glimpse_rollout_buffer_gives_sb3s_samples(maskable: bool) -> None:
    """Same data in: the same set of samples out as SB3's buffer, in minibatches of the size
    asked, with every sample exactly once per epoch, and the same dtypes and shapes; also
    after a reset that keeps the observation arrays (and refills the action masks)."""
    from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
    from stable_baselines3.common.buffers import DictRolloutBuffer

    from agents.buffers import GlimpseRolloutBuffer, MaskableGlimpseRolloutBuffer

    space = spaces.Dict({"features": spaces.Box(0, 1, (12,), np.float32),
                         "visited": spaces.Box(0, 1, (6,), np.int8)})
    ours, theirs = ((MaskableGlimpseRolloutBuffer, MaskableDictRolloutBuffer) if maskable
                    else (GlimpseRolloutBuffer, DictRolloutBuffer))
    rows = {}
    for name, cls in (("ours", ours), ("theirs", theirs)):
        batches, pointers = [], []
        for batch in _filled(cls, space, maskable, seed=1).get(batch_size=4):
            pointers.append(batch.observations["features"].data_ptr())
            # ours: a minibatch's observations are overwritten by the next; keep copies
            batches.append(batch._replace(observations={
                k: v.clone() for k, v in batch.observations.items()}))
        assert [len(b.actions) for b in batches] == [4, 4, 4, 3]
        if name == "ours":  # one reused buffer
            assert len(set(pointers)) == 1
        def columns(batch: Any) -> torch.Tensor:
            n = len(batch.actions)
            parts = [batch.observations["features"], batch.observations["visited"]]
            parts += [getattr(batch, f) for f in batch._fields if f != "observations"]
            return torch.cat([p.reshape(n, -1).double() for p in parts], dim=1)

        flat = [columns(b) for b in batches]
        table = torch.cat(flat).numpy()
        rows[name] = table[np.lexsort(table.T[::-1])]
        types = {f: (getattr(batches[0], f).dtype, getattr(batches[0], f).shape[1:])
                 for f in batches[0]._fields if f != "observations"}
        types.update({k: (v.dtype, v.shape[1:]) for k, v in batches[0].observations.items()})
        rows[f"{name} types"] = types
    assert rows["ours"].shape == (15, rows["ours"].shape[1])
    np.testing.assert_array_equal(rows["ours"], rows["theirs"])
    assert rows["ours types"]["features"] == rows["theirs types"]["features"]
    assert rows["ours types"]["visited"] == rows["theirs types"]["visited"]
    assert rows["ours types"]["advantages"] == rows["theirs types"]["advantages"]
