"""MultiScale-v0: spaces, checkers, the parent rule, readout, costs, copies and bad input."""

from __future__ import annotations

import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import glimpse_gym  # noqa: F401  (registers the ids)
from glimpse_gym.envs import MultiScaleEnv
from glimpse_gym.errors import InvalidAction, ResetNeeded


@pytest.fixture()
def bank(multiscale_banks):
    """Three levels of the digits test split: 2x2, 6x6 and 10x10 cells."""
    return multiscale_banks[1]["test"]


@pytest.mark.parametrize("observation", ["partial", "glimpses"])
def test_checkers_pass_without_warnings(bank, observation) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make("MultiScale-v0", bank=str(bank.path), observation=observation,
                       render_mode="rgb_array")
        gym_check_env(env.unwrapped)
        sb3_check_env(env, warn=True)


def test_actions_are_the_finer_levels_cells(bank) -> None:
    env = MultiScaleEnv(bank, glimpses=4)
    assert env.action_space.n == 36 + 100 and env.offsets.tolist() == [0, 36, 136]
    assert env.action_level.tolist() == [1] * 36 + [2] * 100
    assert env.parent_action[:36].tolist() == [-1] * 36
    assert np.array_equal(env.parent_action[36:], 0 + bank.levels[2].parent)
    obs, _ = env.reset(seed=0)
    assert obs["coarse"].shape == (2 * 2 * 16,) and obs["features"].shape == (136 * 16,)
    np.testing.assert_array_equal(obs["coarse"].reshape(2, 2, 16),
                                  bank.levels[0].bank.features[env._index].transpose(1, 2, 0))


def test_a_cell_opens_only_under_an_open_parent(bank) -> None:
    env = MultiScaleEnv(bank, glimpses=4)
    _, info = env.reset(seed=1)
    child = 36 + 55  # a level-2 cell
    parent = int(env.parent_action[child])
    assert info["action_mask"][:36].all() and not info["action_mask"][36:].any()
    before = info["prediction"]
    obs, _, _, _, info = env.step(child)  # wasted: its parent is closed
    assert obs["visited"].sum() == 0 and not obs["features"].any()
    assert info["cells"] == (child,) and info["prediction"] == before
    assert info["pixels"] == 16 * 16 and info["flops"] == bank.levels[0].flops_image
    obs, _, _, _, info = env.step(parent)
    kids = set(np.flatnonzero(info["action_mask"][36:]) + 36)
    assert kids == set(36 + bank.levels[2].children(parent)) and child in kids
    assert not info["action_mask"][parent] and env.action_masks().sum() == 35 + len(kids)
    obs, _, _, _, info = env.step(child)
    assert obs["visited"][[parent, child]].tolist() == [1, 1]
    row = obs["features"].reshape(136, 16)[child]
    np.testing.assert_array_equal(row, bank.levels[2].bank.features[env._index, :, 5, 5])
    rf = [lv.bank.rf for lv in bank.levels]
    assert info["pixels"] == 16 * 16 + rf[1] ** 2 + rf[2] ** 2
    assert info["full_resolution_pixels"] == rf[2] ** 2
    assert info["flops"] == bank.levels[0].flops_image + 2 * bank.levels[0].flops_cell
    obs, reward, terminated, _, info = env.step(child)  # a revisit: free, last glimpse
    assert terminated and info["pixels"] == 16 * 16 + rf[1] ** 2 + rf[2] ** 2
    assert info["glimpse_levels"] == (2, 1, 2, 2) and reward == float(info["correct"])


def test_the_readout_is_the_coarse_vote_plus_the_opened_cells(bank) -> None:
    env = MultiScaleEnv(bank, glimpses=3)
    rng = np.random.default_rng(0)
    for episode in range(20):
        _, info = env.reset(seed=episode)
        i = info["index"]
        k = 10
        total = bank.levels[0].bank.logits[i].reshape(k, -1).mean(1, dtype=np.float64)
        assert info["prediction"] == int(np.argmax(total))
        opened = set()
        for _ in range(3):
            a = int(rng.choice(np.flatnonzero(env.action_masks())))
            _, reward, done, _, info = env.step(a)
            if a not in opened:
                lv, cell = env.action_level[a], env.action_cell[a]
                total = total + bank.levels[lv].bank.logits[i].reshape(k, -1)[:, cell]
                opened.add(a)
            assert info["prediction"] == int(np.argmax(total))
        assert reward == float(info["prediction"] == bank.labels[i])


def test_the_glimpses_mode_fills_one_slot_per_glimpse(bank) -> None:
    env = MultiScaleEnv(bank, glimpses=3, observation="glimpses")
    env.reset(seed=0)
    env.step(36)  # wasted (level 2, parent closed): its slot stays empty
    env.step(0)
    obs, *_ = env.step(0)  # a revisit fills its slot too
    assert obs["cells"].tolist() == [36, 0, 0] and obs["valid"].tolist() == [0, 1, 1]
    rows = obs["features"].reshape(3, 16)
    assert not rows[0].any() and np.array_equal(rows[1], rows[2]) and rows[1].any()


def test_seeds_copies_and_pickles_continue_alike(bank) -> None:
    a, b = MultiScaleEnv(bank, glimpses=3), MultiScaleEnv(bank, glimpses=3)
    assert a.reset(seed=3)[1]["index"] == b.reset(seed=3)[1]["index"]
    a.step(4)
    for twin in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        for env in (a, twin):
            env.step(5)
        out_a, out_t = a.step(6), twin.step(6)
        assert out_a[1:4] == out_t[1:4] and out_a[4]["cells"] == out_t[4]["cells"]
        for key in out_a[0]:
            np.testing.assert_array_equal(out_a[0][key], out_t[0][key])
        assert [a.reset()[1]["index"] for _ in range(3)] == \
            [twin.reset()[1]["index"] for _ in range(3)]
        a.reset(seed=3)
        a.step(4)


def test_bad_input_is_refused_before_anything_changes(bank) -> None:
    for kwargs, match in (({"observation": "full"}, "observation"),
                          ({"glimpses": 0}, "glimpses"), ({"glimpses": 137}, "glimpses"),
                          ({"render_mode": "human"}, "render_mode")):
        with pytest.raises(ValueError, match=match):
            MultiScaleEnv(bank, **kwargs)
    env = MultiScaleEnv(bank, glimpses=2)
    with pytest.raises(ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    for action in (-1, 136, 1.0, True, [1, 2]):
        with pytest.raises(InvalidAction):
            env.step(action)
    assert env._game.cells == []
    for kwargs in ({"seed": -1}, {"options": {"index": 359}}, {"options": {"cell": 1}}):
        with pytest.raises(ValueError):
            env.reset(**kwargs)
    env.step(0)
    env.step(1)
    with pytest.raises(ResetNeeded):
        env.step(2)


def test_render_outlines_the_opened_cells(bank) -> None:
    env = MultiScaleEnv(bank, glimpses=2, render_mode="rgb_array")
    env.reset(seed=0)
    plain = env.render()
    env.step(0)
    env.step(36 + int(bank.levels[2].children(0)[0]))
    drawn = env.render()
    assert plain.shape == drawn.shape and plain.dtype == np.uint8
    assert (plain != drawn).any()


def test_the_vector_env_renders_each_env_as_the_single_env(bank) -> None:
    from glimpse_gym.envs import MultiScaleVectorEnv

    envs = MultiScaleVectorEnv(2, bank, glimpses=3, render_mode="rgb_array")
    singles = [MultiScaleEnv(bank, glimpses=3, render_mode="rgb_array") for _ in range(2)]
    envs.reset(seed=4)
    for i, env in enumerate(singles):
        env.reset(seed=4 + i)
    for actions in ([0, 1], [36, 2], [0, 3]):  # a wasted glimpse, a revisit
        envs.step(np.array(actions))
        for env, a in zip(singles, actions, strict=True):
            env.step(a)
    for picture, env in zip(envs.render(), singles, strict=True):
        np.testing.assert_array_equal(picture, env.render())


def test_sync_vector_env_runs_it(bank) -> None:
    envs = gym.make_vec("MultiScale-v0", num_envs=3, vectorization_mode="sync",
                        bank=str(bank.path), glimpses=2)
    obs, info = envs.reset(seed=0)
    assert obs["features"].shape == (3, 136 * 16)
    _, reward, terminated, _, _ = envs.step(np.array([0, 1, 2]))
    _, reward, terminated, _, info = envs.step(np.array([3, 4, 5]))
    assert terminated.all() and set(reward.tolist()) <= {0.0, 1.0}
    envs.close()


def _actions(rng, masks: np.ndarray, last: np.ndarray | None) -> np.ndarray:
    """Per env: a cell it may open (half the time), the last action again (a revisit or a
    second waste, a fifth) or any action (often wasted)."""
    out = rng.integers(0, masks.shape[1], len(masks))
    for i, mask in enumerate(masks):
        u = rng.random()
        if u < 0.5 and mask.any():
            out[i] = rng.choice(np.flatnonzero(mask))
        elif u < 0.7 and last is not None:
            out[i] = last[i]
    return out


def _same(native, single, where: str) -> None:
    """A native vector env's output equals SyncVectorEnv's (infos: every key; the singles'
    tuples of cells and levels padded with -1 to the native [N, T] arrays)."""
    if isinstance(single, dict):
        assert set(native) == set(single), f"{where}: {sorted(set(native) ^ set(single))}"
        for key in single:
            _same(native[key], single[key], f"{where}.{key}")
    elif isinstance(single, np.ndarray) and single.dtype == object:
        assert len(native) == len(single), where
        for i, (a, b) in enumerate(zip(native, single, strict=True)):
            if isinstance(b, tuple):
                b = list(b) + [-1] * (len(a) - len(b))
            _same(a, b, f"{where}[{i}]")
    elif isinstance(single, (str, dict)) or single is None:
        assert native == single, where
    else:
        np.testing.assert_array_equal(np.asarray(native), np.asarray(single), err_msg=where)


@pytest.mark.parametrize("observation", ["partial", "glimpses"])
@pytest.mark.parametrize("autoreset", ["NextStep", "SameStep"])
@pytest.mark.parametrize("compiled", [True, False, "disk"],
                         ids=["compiled", "tensor-ops", "from-disk"])
def test_the_native_vector_env_equals_sync_vector_env(bank, observation, autoreset,
                                                      compiled) -> None:
    """The compiled CPU path, the tensor path (CUDA's), and the tensor path reading the
    bank's files at each step (``in_memory=False``)."""
    n, kwargs = 5, dict(bank=str(bank.path), glimpses=3, observation=observation)
    native = gym.make_vec("MultiScale-v0", num_envs=n, autoreset_mode=autoreset, **kwargs,
                          **({"in_memory": False} if compiled == "disk" else {}))
    assert native.compiled == (compiled != "disk")  # on the CPU, with the bank in memory
    assert native.in_memory == (compiled != "disk")
    native.compiled = compiled is True
    sync = gym.vector.SyncVectorEnv([lambda: MultiScaleEnv(**kwargs)] * n,
                                    autoreset_mode=gym.vector.AutoresetMode(autoreset))
    assert native.single_observation_space == sync.single_observation_space
    rng = np.random.default_rng(0)
    out_n, out_s = native.reset(seed=7), sync.reset(seed=7)
    last = None
    for step in range(16):
        _same(out_n[0], out_s[0], f"obs @ {step}")
        _same(out_n[-1], out_s[-1], f"info @ {step}")
        if len(out_s) == 5:
            for a, b in zip(out_n[1:4], out_s[1:4], strict=True):
                np.testing.assert_array_equal(a, b)
        if step == 5:  # a reset in the middle of the episodes, then one on given images
            out_n, out_s = native.reset(seed=11), sync.reset(seed=11)
            continue
        if step == 9:
            out_n = native.reset(options={"indices": [3] * n})
            out_s = sync.reset(options={"index": 3})
            continue
        last = _actions(rng, np.stack(out_s[-1]["action_mask"]).astype(bool), last)
        out_n, out_s = native.step(last), sync.step(last)


def test_a_seed_with_an_index_restarts_the_stream_as_in_the_vector_env(bank) -> None:
    from glimpse_gym.envs import MultiScaleVectorEnv

    singles = [MultiScaleEnv(bank, glimpses=2) for _ in range(3)]
    native = MultiScaleVectorEnv(3, bank, glimpses=2)
    for env in singles:
        env.reset(seed=9)  # something to restart from
    native.reset(seed=9)
    for i, env in enumerate(singles):
        env.reset(seed=3 + i, options={"index": 5})
    native.reset(seed=3, options={"indices": [5, 5, 5]})
    assert [env.reset()[1]["index"] for env in singles] == native.reset()[1]["index"].tolist()


def test_bad_actions_change_nothing_and_copies_continue_alike(bank) -> None:
    from glimpse_gym.envs import MultiScaleVectorEnv

    state = ("_visited", "_mask", "_cells", "_cost", "_logit_sum", "_obs_features")

    def started() -> MultiScaleVectorEnv:
        envs = MultiScaleVectorEnv(3, bank, glimpses=3)
        envs.reset(seed=0)
        envs.step(np.array([0, 1, 2]))
        return envs

    envs = started()
    before = {name: getattr(envs, name).clone() for name in state}
    for bad in ([0, 1], [0, 1, 136], [0.0, 1.0, 2.0], [-1, 0, 0]):
        with pytest.raises(InvalidAction):
            envs.step(np.array(bad))
    assert envs._t == 1
    for name in state:
        assert torch.equal(getattr(envs, name), before[name]), name
    # a level-2 cell under the opened level-1 cell 0, a revisit, a wasted glimpse, the
    # autoreset and the next episode's first glimpse
    child = 36 + int(bank.levels[2].children(0)[0])
    steps = ([child, 1, 36], [0, 1, 2], [5, 6, 7], [8, 9, 10])
    for copier in (copy.deepcopy, lambda e: pickle.loads(pickle.dumps(e))):
        original = started()
        twin = copier(original)
        for actions in steps:
            a, b = original.step(np.array(actions)), twin.step(np.array(actions))
            for key in a[0]:
                np.testing.assert_array_equal(a[0][key], b[0][key])
            for x, y in zip(a[1:4], b[1:4], strict=True):
                np.testing.assert_array_equal(x, y)
            for key in ("cells", "action_mask", "pixels", "flops", "prediction", "index"):
                np.testing.assert_array_equal(a[4][key], b[4][key])


def test_maskable_ppo_trains_on_it_through_the_sb3_adapter(bank) -> None:
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import VecMonitor

    from glimpse_gym.sb3 import SB3VecEnv

    venv = VecMonitor(SB3VecEnv(num_envs=8, multiscale=True, bank=str(bank.path), glimpses=3))
    model = MaskablePPO("MultiInputPolicy", venv, n_steps=6, batch_size=24, n_epochs=1,
                        seed=0, device="cpu")
    model.learn(96)
    obs = venv.reset()
    masks = np.stack(venv.env_method("action_masks"))
    assert masks.shape == (8, 136) and masks[:, :36].all() and not masks[:, 36:].any()
    infos = [{}] * 8
    for _ in range(3):
        actions, _ = model.predict(obs, action_masks=np.stack(venv.env_method("action_masks")))
        obs, _, dones, infos = venv.step(actions)
    assert dones.all() and all("flops" in info and "episode" in info for info in infos)


def test_torch_outputs_and_a_float16_table_give_the_same_episodes(bank) -> None:
    from glimpse_gym.envs import MultiScaleVectorEnv

    plain = MultiScaleVectorEnv(4, bank, glimpses=3)
    other = MultiScaleVectorEnv(4, bank, glimpses=3, array_type="torch", bank_dtype="float16")
    a, b = plain.reset(seed=1), other.reset(seed=1)
    for actions in ([0, 1, 2, 3], [40, 0, 36, 3], [5, 6, 7, 8]):
        a, b = plain.step(np.array(actions)), other.step(torch.tensor(actions))
        assert torch.is_tensor(b[0]["features"]) and torch.is_tensor(b[4]["flops"])
        for key in a[0]:  # the bank's features are float16: both tables hold them exactly
            np.testing.assert_array_equal(a[0][key], b[0][key].numpy())
        np.testing.assert_array_equal(a[1], b[1].numpy())
    with pytest.raises(ValueError, match="bank_dtype"):
        MultiScaleVectorEnv(2, bank, bank_dtype="int8")


def test_a_multiscale_bank_that_does_not_fit_is_read_from_disk(bank, monkeypatch) -> None:
    import glimpse_gym.envs.tables as tables
    from glimpse_gym.envs import MultiScaleVectorEnv

    monkeypatch.setattr(tables, "available_memory", lambda: 10_000)
    assert MultiScaleVectorEnv(2, bank=str(bank.path), glimpses=2).in_memory is False
    with pytest.raises(MemoryError, match="in_memory=False"):
        MultiScaleVectorEnv(2, bank=str(bank.path), glimpses=2, in_memory=True)
