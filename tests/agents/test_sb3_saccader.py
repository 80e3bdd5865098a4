"""The Saccader as an SB3 policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO

from agents import MaskableSaccaderPolicy, Saccader, SaccaderPolicy, load_saccader_weights
from glimpse_gym.envs import GlimpseEnv
from glimpse_gym.sb3 import SB3VecEnv

SMALL = {"where_channels": 8, "mixed_channels": 8}


@pytest.mark.parametrize("algo, policy", [(PPO, SaccaderPolicy),
                                          (MaskablePPO, MaskableSaccaderPolicy)])
def test_trains_saves_and_loads(tmp_path, algo, policy) -> None:
    venv = SB3VecEnv(num_envs=8, glimpses=3)
    model = algo(policy, venv, n_steps=6, batch_size=24, n_epochs=1, seed=0, device="cpu",
                 policy_kwargs=SMALL)
    model.learn(96)
    obs = venv.reset()
    kwargs = ({"action_masks": np.stack(venv.env_method("action_masks"))}
              if algo is MaskablePPO else {})
    actions, _ = model.predict(obs, deterministic=True, **kwargs)
    model.save(tmp_path / "m.zip")
    loaded = algo.load(tmp_path / "m.zip", device="cpu")
    again, _ = loaded.predict(obs, deterministic=True, **kwargs)
    np.testing.assert_array_equal(actions, again)
    assert isinstance(loaded.policy.saccader, Saccader)
    # the env's visited vector is the cell state: a visited cell is never chosen
    visited = obs["visited"].copy()
    visited[:, :50] = 1
    chosen, _ = loaded.predict({**obs, "visited": visited}, deterministic=True, **kwargs)
    assert (chosen >= 50).all()


def test_trainer_weights_give_the_same_actions() -> None:
    torch.manual_seed(0)
    env = GlimpseEnv(glimpses=5, observation="full")
    d, k = env.source.feature_dim, env.source.num_classes
    net = Saccader(d, k, **SMALL)
    for p in net.parameters():  # a non-trivial network, BN statistics included
        p.data.normal_(0, 0.3)
    net.where[1].running_mean.normal_(0, 0.1)
    net.eval()
    model = PPO(SaccaderPolicy, SB3VecEnv(num_envs=2, glimpses=5), n_steps=4, batch_size=8,
                device="cpu", policy_kwargs={**SMALL, "num_classes": k})
    load_saccader_weights(model.policy, net)
    for index in range(5):
        obs, _ = env.reset(options={"index": index})
        cells = []
        for _ in range(5):
            action, _ = model.predict(obs, deterministic=True)
            cells.append(int(action))
            obs, *_ = env.step(int(action))
        what = torch.from_numpy(np.asarray(env.source.features[index], np.float32))[None]
        with torch.no_grad():
            expected = net.rollout(what, 5, sample=False).cells[0].tolist()
        assert cells == expected


def test_by_reference_acts_as_on_the_full_grids_and_trains() -> None:
    """The Saccader policy on the index observation (grids read from the bank, the where
    network once per image, kept between rollout steps) chooses what it chooses on the full
    grids with the same weights, sees a weight change at once, and trains."""
    envs = {mode: SB3VecEnv(num_envs=6, glimpses=4, observation=mode)
            for mode in ("full", "index")}
    models = {}
    for mode, venv in envs.items():
        extra = {"bank": {"bank": None, "split": "train"}} if mode == "index" else {}
        torch.manual_seed(0)
        models[mode] = MaskablePPO(MaskableSaccaderPolicy, venv, n_steps=4, batch_size=24,
                                   n_epochs=1, seed=0, device="cpu",
                                   policy_kwargs={**SMALL, **extra})
    models["index"].policy.load_state_dict(models["full"].policy.state_dict())
    for venv in envs.values():
        venv.seed(3)
    obs = {mode: venv.reset() for mode, venv in envs.items()}
    extractor = models["index"].policy.features_extractor
    for _ in range(4):
        masks = np.stack(envs["full"].env_method("action_masks"))
        chosen = {m: models[m].predict(obs[m], deterministic=True, action_masks=masks)[0]
                  for m in envs}
        np.testing.assert_array_equal(chosen["index"], chosen["full"])
        assert extractor._kept is not None  # the images' mixed features, kept
        for mode, venv in envs.items():
            venv.step_async(chosen["full"])
            obs[mode] = venv.step_wait()[0]
    with torch.no_grad():  # a weight change: the kept features are not reused
        for model in models.values():
            model.policy.saccader.mix.weight.mul_(-1)
    masks = np.stack(envs["full"].env_method("action_masks"))
    np.testing.assert_array_equal(
        *(models[m].predict(obs[m], deterministic=True, action_masks=masks)[0]
          for m in ("index", "full")))
    kept = extractor._kept[0]
    extractor.grids.bind({"bank": None, "split": "train"})  # (re)bound: not reused
    models["index"].predict(obs["index"], deterministic=True, action_masks=masks)
    assert extractor._kept[0] != kept
    models["index"].policy.to("cpu")  # moved (Module._apply): dropped
    assert extractor._kept is None
    models["index"].learn(48)
    assert models["index"].num_timesteps >= 48
