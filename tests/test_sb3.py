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
    moved = diff.sum(dim=(0, 2)).nonzero().flatten().tolist()
    assert moved == [5]  # only cell 5's code and bit moved


def test_sequence_extractor_is_order_invariant_and_reads_any_length() -> None:
    from agents.extractors import SequenceExtractor

    space = SB3VecEnv(num_envs=1, glimpses=4, observation="glimpses").observation_space
    ext = SequenceExtractor(space, hidden=16, code=8)
    g = torch.Generator().manual_seed(0)
    obs = {"features": torch.rand(2, 4 * 16, generator=g), "cells": torch.tensor(
        [[3.0, 7.0, -1.0, -1.0], [5.0, 1.0, 2.0, -1.0]]), "valid": torch.tensor(
        [[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.int8), "visited": torch.zeros(2, 100)}
    out = ext(obs)
    assert out.shape == (2, 8 + 100) and ext.features_dim == 108
    swapped = {k: v.clone() for k, v in obs.items()}  # slots 0 and 1 swapped: same output
    swapped["features"].view(2, 4, 16)[:, [0, 1]] = obs["features"].view(2, 4, 16)[:, [1, 0]]
    swapped["cells"][:, [0, 1]] = obs["cells"][:, [1, 0]]
    torch.testing.assert_close(ext(swapped), out)
    junk = {k: v.clone() for k, v in obs.items()}  # what an empty slot holds is ignored
    junk["features"].view(2, 4, 16)[0, 2:] = 5.0
    torch.testing.assert_close(ext(junk), out)
    longer = {"features": torch.cat([obs["features"], torch.zeros(2, 8 * 16)], 1),
              "cells": torch.cat([obs["cells"], torch.full((2, 8), -1.0)], 1),
              "valid": torch.cat([obs["valid"], torch.zeros(2, 8, dtype=torch.int8)], 1),
              "visited": obs["visited"]}
    torch.testing.assert_close(ext(longer), out)  # 12 slots, the same glimpses
    with pytest.raises(ValueError, match="reads the 'glimpses' observation"):
        SequenceExtractor(SB3VecEnv(num_envs=1).observation_space)


@pytest.mark.parametrize("extractor", ["cell", "grid"])
def test_by_reference_extractor_equals_the_full_one(extractor) -> None:
    """With the same weights, an extractor reading the grids from the bank by the env's
    ``index`` observation gives what it gives on the ``full`` observation; it still reads
    the full grids, pickles as its bank's spec, and refuses an index outside its bank."""
    import pickle

    from agents.extractors import extractor_policy_kwargs

    spec = {"bank": None, "split": "val"}
    envs = {mode: SB3VecEnv(num_envs=8, glimpses=3, split="val", observation=mode)
            for mode in ("full", "index")}
    made = {}
    for mode, venv in envs.items():
        kw = extractor_policy_kwargs(extractor, (10, 10), channels=8, features_dim=16,
                                     **({"bank": spec, "feature_dim": 16}
                                        if mode == "index" else {}))
        torch.manual_seed(0)  # the same initial weights
        made[mode] = kw["features_extractor_class"](venv.observation_space,
                                                    **kw["features_extractor_kwargs"])
    made["index"].load_state_dict(made["full"].state_dict())
    assert made["index"].state_dict().keys() == made["full"].state_dict().keys()
    for venv in envs.values():
        venv.seed(4)
    obs = {mode: venv.reset() for mode, venv in envs.items()}
    for step in range(3):
        tensors = {m: {k: torch.as_tensor(v) for k, v in o.items()} for m, o in obs.items()}
        expected = made["full"](tensors["full"])
        torch.testing.assert_close(made["index"](tensors["index"]), expected, rtol=0, atol=0)
        torch.testing.assert_close(made["index"](tensors["full"]), expected, rtol=0, atol=0)
        actions = np.full(8, 11 * step + 5)
        for mode, venv in envs.items():
            venv.step_async(actions)
            obs[mode] = venv.step_wait()[0]
    clone = pickle.loads(pickle.dumps(made["index"]))
    torch.testing.assert_close(clone(tensors["index"]), made["index"](tensors["index"]))
    bad = {**tensors["index"], "index": torch.full((8, 1), 10**6)}
    with pytest.raises(ValueError, match="outside the bank this policy reads"):
        made["index"](bad)
    with pytest.raises(ValueError, match="pass bank="):
        made["full"].__class__(envs["index"].observation_space,
                               **({"grid": (10, 10)} if extractor == "grid" else {}))


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


@pytest.mark.parametrize("maskable", [False, True])
def test_env_minibatches_keep_each_envs_steps_together(maskable: bool) -> None:
    """``env_minibatches=True``: every sample once per epoch, each minibatch made of whole
    envs (all their steps of the rollout, in step order), the envs in a random order."""
    from agents.buffers import GlimpseRolloutBuffer, MaskableGlimpseRolloutBuffer

    space = spaces.Dict({"features": spaces.Box(0, 1, (12,), np.float32),
                         "visited": spaces.Box(0, 1, (6,), np.int8)})
    cls = MaskableGlimpseRolloutBuffer if maskable else GlimpseRolloutBuffer
    orders = set()
    for seed in range(4):
        np.random.seed(seed)
        buf = cls(5, space, spaces.Discrete(6), device="cpu", n_envs=3, gamma=0.9,
                  env_minibatches=True)
        _fill(buf, np.random.default_rng(seed), maskable)
        stored = buf.observations["features"]  # [steps, envs, 12]
        envs_seen = []
        for batch in buf.get(batch_size=10):
            features = batch.observations["features"].numpy()
            assert len(features) in (10, 5)
            for start in range(0, len(features), 5):  # one env: its 5 steps in order
                env = int(np.flatnonzero((stored[0] == features[start]).all(axis=1))[0])
                np.testing.assert_array_equal(features[start:start + 5], stored[:, env])
                envs_seen.append(env)
        assert sorted(envs_seen) == [0, 1, 2]
        orders.add(tuple(envs_seen))
    assert len(orders) > 1  # shuffled
    with pytest.raises(ValueError, match="must be a multiple of n_steps"):
        next(buf.get(batch_size=4))
