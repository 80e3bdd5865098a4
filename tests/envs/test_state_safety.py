"""Copies continue like the original, and a failed reset changes nothing (both envs)."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import glimpse_gym
from glimpse_gym.envs import OBSERVATION_MODES, GlimpseEnv, GlimpseVectorEnv
from glimpse_gym.errors import ResetNeeded

COPIERS = {"deepcopy": copy.deepcopy, "pickle": lambda env: pickle.loads(pickle.dumps(env))}


def _assert_same(a, b, where: str = "") -> None:
    """Equal results: dicts, sequences and object arrays (``final_obs``) item by item."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)) or (isinstance(a, np.ndarray) and a.dtype == object):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)


def _vector_state(envs: GlimpseVectorEnv) -> tuple:
    tensors = tuple(getattr(envs, name).clone() for name in
                    ("_visited", "_unvisited", "_cells", "_logit_sum", "_obs_features",
                     "_obs_valid", "_obs_index", "_keys", "_index", "_bases"))
    return (*tensors, envs._t, envs._episode, envs._autoreset, envs._started)


def _same_vector_state(a: tuple, b: tuple) -> bool:
    return all(torch.equal(x, y) if torch.is_tensor(x) else x == y
               for x, y in zip(a, b, strict=True))


def _run_vector(envs: GlimpseVectorEnv, actions: np.ndarray) -> list:
    """Step through ``actions`` (across episode ends), then reset without and with a seed."""
    out = [envs.step(a) for a in actions]
    out.append(envs.reset())
    out.append(envs.step(actions[0]))
    out.append(envs.reset(seed=7))
    return out


@pytest.mark.parametrize("copier", list(COPIERS))
@pytest.mark.parametrize(("observation", "autoreset", "path"), [
    ("full", AutoresetMode.NEXT_STEP, "compiled"),
    ("partial", AutoresetMode.SAME_STEP, "compiled"),
    ("partial", AutoresetMode.NEXT_STEP, "tensor"),
    ("glimpses", AutoresetMode.SAME_STEP, "compiled"),
    ("glimpses", AutoresetMode.NEXT_STEP, "tensor"),
    ("index", AutoresetMode.SAME_STEP, "compiled"),
])
def test_vector_copy_continues_like_the_original(copier, observation, autoreset, path) -> None:
    """A copy taken mid-episode gives the same observations, rewards and infos as the
    original for the same actions, across episode ends and resets, and stepping the copy
    leaves the original alone (the compiled loops write through views of the copy's own
    tensors)."""
    envs = GlimpseVectorEnv(num_envs=4, glimpses=3, observation=observation,
                            autoreset_mode=autoreset)
    if path == "tensor":
        envs._host, envs._cov.compiled = None, False
    envs.reset(seed=2)
    envs.step(np.array([5, 6, 7, 7]))
    clone = COPIERS[copier](envs)
    assert (clone._host is None) == (path == "tensor")
    before = _vector_state(envs)
    actions = np.random.default_rng(1).integers(0, 100, (8, 4))
    actions[:, 1] = actions[:, 0]  # revisits too
    from_clone = _run_vector(clone, actions)
    assert _same_vector_state(_vector_state(envs), before)  # the original is untouched
    from_original = _run_vector(envs, actions)
    assert sum(bool(r[2].all()) for r in from_original if len(r) == 5) >= 2  # episodes ended
    _assert_same(from_original, from_clone)


@pytest.mark.parametrize("copier", list(COPIERS))
def test_vector_copy_before_reset_needs_a_reset(copier) -> None:
    clone = COPIERS[copier](GlimpseVectorEnv(num_envs=2, glimpses=2))
    with pytest.raises(glimpse_gym.errors.ResetNeeded, match="before reset"):
        clone.step(np.array([0, 1]))
    _assert_same(clone.reset(seed=3), GlimpseVectorEnv(num_envs=2, glimpses=2).reset(seed=3))


def _single_state(env: gym.Env) -> tuple:
    u = env.unwrapped
    g = u._game
    features = getattr(u, "_features", np.empty(0))  # none in the index mode
    return (u._index, tuple(g.cells), g.visited.tobytes(), features.tobytes(),
            g.logit_sum.tobytes(), u._mask.tobytes(), u._key, u._episode,
            str(u.np_random.bit_generator.state))


def _run_single(env: gym.Env, cells: list[int]) -> list:
    out = []
    for cell in cells:
        out.append(env.step(cell))
        if out[-1][2]:
            out.append(env.reset())
    out.append(env.reset(seed=9))
    return out


@pytest.mark.parametrize("observation", OBSERVATION_MODES)
def test_single_env_deepcopy_continues_like_the_original(observation) -> None:
    env = gym.make("Glimpse-v0", glimpses=3, observation=observation)
    env.reset(seed=4)
    env.step(12)
    clone = copy.deepcopy(env)
    before = _single_state(env)
    cells = [12, 40, 41, 42, 42, 3, 99, 98, 0]
    from_clone = _run_single(clone, cells)
    assert _single_state(env) == before
    from_original = _run_single(env, cells)
    assert sum(1 for r in from_original if len(r) == 5 and r[2]) >= 3
    _assert_same(from_original, from_clone)


BAD_SINGLE_RESETS = [
    ({"seed": -1}, "seed -1 is negative"),
    ({"seed": 1.0}, "seed 1.0 of type float is not an integer"),
    ({"seed": True}, "seed True is a bool"),
    ({"seed": 3, "options": {"index": True}}, r"options\['index'\] True of type bool"),
    ({"seed": 3, "options": {"index": 2.0}}, r"options\['index'\] 2.0 of type float"),
    ({"seed": 3, "options": {"index": -1}}, r"options\['index'\] -1 is outside \[0, 1294\)"),
    ({"seed": 3, "options": {"indices": [1]}}, r"unknown reset options \['indices'\]"),
    ({"seed": 3, "options": [1]}, "options must be None or a dict, got list"),
]


@pytest.mark.parametrize("observation", ["partial", "glimpses"])
@pytest.mark.parametrize(("kwargs", "message"), BAD_SINGLE_RESETS)
def test_single_env_failed_reset_changes_nothing(kwargs, message, observation) -> None:
    env = GlimpseEnv(glimpses=3, observation=observation)
    with pytest.raises(ValueError, match=message):  # before the first reset ...
        env.reset(**kwargs)
    with pytest.raises(glimpse_gym.errors.ResetNeeded, match="before reset"):
        env.step(0)  # ... there is still no episode
    env.reset(seed=1)
    env.step(5)
    before = _single_state(env)
    with pytest.raises(ValueError, match=message):  # mid-episode: the generator is kept too
        env.reset(**kwargs)
    assert _single_state(env) == before
    twin = GlimpseEnv(glimpses=3, observation=observation)
    twin.reset(seed=1)
    twin.step(5)
    _assert_same(_run_single(env, [6, 7, 8]), _run_single(twin, [6, 7, 8]))


BAD_VECTOR_RESETS = [
    ({"seed": -2}, "seed -2 is negative"),
    ({"seed": 2.5}, "seed 2.5 of type float is not an integer"),
    ({"seed": np.bool_(True)}, r"seed (np\.)?True_? is a bool; pass None or an integer >= 0"),
    ({"seed": [1, 2, 3]}, "seed is a sequence of 3 seeds for 4 envs"),
    ({"seed": [1, 2, -3, 4]}, r"seed\[2\] -3 is negative"),
    ({"seed": 3, "options": {"indices": [1, 2, 3]}}, r"has shape \(3,\); expected \(4,\)"),
    ({"seed": 3, "options": {"indices": [1.0, 2.0, 3.0, 4.9]}}, "dtype float64, not an integer"),
    ({"seed": 3, "options": {"indices": [True, False, True, True]}}, "dtype bool"),
    ({"seed": 3, "options": {"indices": np.zeros((4, 1), np.int64)}}, r"shape \(4, 1\)"),
    ({"seed": 3, "options": {"indices": [[1, 2], [3], [4], [5]]}}, "is not an array"),
    ({"seed": 3, "options": {"indices": [0, 1293, 1294, -1]}},
     r"out of range in envs \[2, 3\] \(values \[1294, -1\]\); this split has 1294 images"),
    ({"seed": 3, "options": {"index": 1}}, r"unknown reset options \['index'\]"),
]


@pytest.mark.parametrize("observation", ["partial", "glimpses"])
@pytest.mark.parametrize(("kwargs", "message"), BAD_VECTOR_RESETS)
def test_vector_failed_reset_changes_nothing(kwargs, message, observation) -> None:
    envs = GlimpseVectorEnv(num_envs=4, glimpses=3, observation=observation)
    fresh = _vector_state(envs)
    with pytest.raises(ValueError, match=message):
        envs.reset(**kwargs)
    assert _same_vector_state(_vector_state(envs), fresh)
    with pytest.raises(glimpse_gym.errors.ResetNeeded, match="before reset"):
        envs.step(np.arange(4))
    envs.reset(seed=1)
    envs.step(np.array([5, 6, 7, 8]))
    before = _vector_state(envs)
    with pytest.raises(ValueError, match=message):
        envs.reset(**kwargs)
    assert _same_vector_state(_vector_state(envs), before)
    twin = GlimpseVectorEnv(num_envs=4, glimpses=3, observation=observation)
    twin.reset(seed=1)
    twin.step(np.array([5, 6, 7, 8]))
    actions = np.array([[1, 2, 3, 4], [9, 9, 9, 9], [0, 0, 0, 0]])
    _assert_same(_run_vector(envs, actions), _run_vector(twin, actions))


def test_numpy_integer_seeds_act_like_python_ints() -> None:
    envs = GlimpseVectorEnv(num_envs=3, glimpses=2)
    _assert_same(envs.reset(seed=np.int64(5)), envs.reset(seed=5))
    _assert_same(envs.reset(seed=np.array([5, 6, 7])), envs.reset(seed=[5, 6, 7]))
    _assert_same(envs.reset(seed=np.array(5)), envs.reset(seed=5))
    _assert_same(envs.reset(seed=[np.uint32(5), None, 7])[0]["features"][[0, 2]],
                 envs.reset(seed=5)[0]["features"][[0, 2]])
    env = gym.make("Glimpse-v0", glimpses=2)
    _assert_same(env.reset(seed=np.int32(5)), env.reset(seed=5))
    # env i of the vector env is seeded seed + i
    assert env.reset(seed=np.int64(6))[1]["index"] == envs.reset(seed=5)[1]["index"][1]


def test_through_make_a_failed_first_reset_leaves_a_usable_env() -> None:
    env = gym.make("Glimpse-v0", glimpses=2)
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"index": -1})
    with pytest.raises(ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    *_, info = env.step(3)
    assert info["cells"] == (3,)
