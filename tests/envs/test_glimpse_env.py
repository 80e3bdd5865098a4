"""Glimpse-v0: make, dynamics, checkers, determinism, bad input and rendering."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import glimpse_gym
from glimpse_gym.envs import OBSERVATION_MODES, GlimpseEnv
from glimpse_gym.errors import BankError, InvalidAction, ResetNeeded

# the ids on the embedded default; the task ids (which need their dataset) are in test_tasks.py
ENV_IDS = [i for i, kwargs in glimpse_gym.ENV_IDS.items() if "checkpoint" not in kwargs]


def test_make_without_import_in_a_fresh_interpreter() -> None:
    code = ("import gymnasium as gym; env = gym.make('glimpse_gym:Glimpse-v0'); "
            "obs, info = env.reset(seed=0); print(env.action_space, sorted(obs))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert "Discrete(100) ['features', 'visited']" in out


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass_without_warnings(env_id) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(gym.make(env_id).unwrapped)
        sb3_check_env(gym.make(env_id), warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_id_applies_its_settings_to_the_single_and_vector_env(env_id) -> None:
    expected = {"observation": "full", **glimpse_gym.ENV_IDS[env_id]}
    single, vector = gym.make(env_id).unwrapped, gym.make_vec(env_id, num_envs=3)
    for env in (single, vector):
        assert env.observation_mode == expected["observation"]
    obs, _ = single.reset(seed=0)
    obs, *_ = single.step(7)
    unseen = obs["features"].reshape(100, -1)[np.arange(100) != 7]
    assert bool((unseen == 0).all()) == (expected["observation"] == "partial")


@pytest.mark.parametrize("observation", OBSERVATION_MODES)
def test_checkers_pass_in_every_observation_mode(observation) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(gym.make("Glimpse-v0", observation=observation).unwrapped)
        sb3_check_env(gym.make("Glimpse-v0", observation=observation), warn=True)


def _expected_prediction(env: GlimpseEnv, cells: list[int]) -> int:
    src, index = env.unwrapped.source, env.unwrapped._index
    h, w = src.grid
    distinct = list(dict.fromkeys(cells))
    logits = np.stack([src.logits[index, :, c // w, c % w] for c in distinct])
    return int(logits.mean(axis=0).argmax())


@pytest.mark.parametrize("observation", OBSERVATION_MODES)
def test_dynamics_reward_iff_mean_logit_argmax_is_the_label(observation) -> None:
    env = gym.make("Glimpse-v0", glimpses=4, observation=observation)
    src = env.unwrapped.source
    rng = np.random.default_rng(0)
    rewards = []
    for episode in range(60):
        obs, info = env.reset(seed=episode)
        full = np.asarray(src.features[info["index"]], np.float32).transpose(1, 2, 0)
        assert info["label"] == src.labels[info["index"]] and info["cells"] == ()
        assert info["action_mask"].dtype == np.int8 and info["action_mask"].all()
        cells = []
        for t in range(4):
            cell = int(rng.integers(100)) if t != 2 else cells[0]  # one revisit
            cells.append(cell)
            obs, reward, terminated, truncated, info = env.step(cell)
            assert truncated is False and terminated == (t == 3)
            visited = np.zeros(100, np.int8)
            visited[cells] = 1
            assert obs["visited"].shape == (100,) and obs["visited"].dtype == np.int8
            assert np.array_equal(obs["visited"], visited)
            assert np.array_equal(info["action_mask"], 1 - visited)
            assert np.array_equal(env.unwrapped.action_masks(), visited == 0)
            if observation == "index":  # the image's row in the bank, nothing else
                assert obs["index"].tolist() == [info["index"]] and set(obs) == {
                    "index", "visited"} and env.observation_space.contains(obs)
            elif observation == "glimpses":  # row s: glimpse s's cell (revisits too), then 0
                slots = np.zeros((4, 16), np.float32)
                slots[:t + 1] = full.reshape(100, 16)[cells]
                assert obs["features"].shape == (64,) and obs["features"].dtype == np.float32
                np.testing.assert_array_equal(obs["features"].reshape(4, 16), slots)
                assert obs["cells"].tolist() == cells + [-1] * (3 - t)
                assert obs["valid"].tolist() == [1] * (t + 1) + [0] * (3 - t)
                assert env.observation_space.contains(obs)
            else:
                expected = full if observation == "full" else full * visited.reshape(10, 10, 1)
                assert obs["features"].shape == (1600,) and obs["features"].dtype == np.float32
                np.testing.assert_array_equal(obs["features"].reshape(10, 10, 16), expected)
            assert info["cells"] == tuple(cells)
            assert info["prediction"] == _expected_prediction(env, cells)
            assert reward == (float(info["prediction"] == info["label"]) if t == 3 else 0.0)
        rewards.append(reward)
        assert 0 < info["coverage"] <= 1
    assert 0 < np.mean(rewards) < 1  # both outcomes happen


def test_coverage_is_the_union_of_receptive_fields() -> None:
    env = gym.make("Glimpse-v0", glimpses=3)
    env.reset(seed=0)
    src = env.unwrapped.source
    for cell in (0, 1, 99):
        _, _, _, _, info = env.step(cell)
    mask = np.zeros(src.image_shape[1:], bool)
    for cell in (0, 1, 99):
        top, left, bottom, right = src.cell_boxes()[cell]
        mask[top:bottom, left:right] = True
    assert info["coverage"] == mask.mean()
    # cells 0 and 1 overlap (stride 2 < rf 13): coverage is less than the sum of the boxes
    assert info["coverage"] < 3 * src.rf ** 2 / mask.size


def _rollout(env, seed: int, steps: int = 40) -> list:
    out = []
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(100)))
        out.append((*(v.copy() for v in obs.values()), reward, info["cells"],
                    info["prediction"], info.get("coverage", -1.0)))
        if terminated:
            obs, info = env.reset()
    return out


def _same(a: list, b: list) -> bool:
    return all(all(np.array_equal(x, y) for x, y in zip(p, q, strict=True))
               for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("observation", OBSERVATION_MODES)
def test_same_seed_same_rollout_and_pickle_continues(observation) -> None:
    a = _rollout(gym.make("Glimpse-v0", observation=observation), seed=3)
    b = _rollout(gym.make("Glimpse-v0", observation=observation), seed=3)
    c = _rollout(gym.make("Glimpse-v0", observation=observation), seed=4)
    assert _same(a, b) and not _same(a, c)
    env = gym.make("Glimpse-v0", observation=observation)
    env.reset(seed=5)
    env.step(3)
    clone = pickle.loads(pickle.dumps(env))
    for cell in (7, 8, 9, 10, 11, 0, 1):
        r1, r2 = env.step(cell), clone.step(cell)
        assert all(np.array_equal(r1[0][k], r2[0][k]) for k in r1[0])
        assert r1[1:4] == r2[1:4] and r1[4]["cells"] == r2[4]["cells"]
        if r1[2]:
            assert env.reset()[1]["index"] == clone.reset()[1]["index"]


def _state(env) -> tuple:
    u = env.unwrapped
    g = u._game
    return (u._index, tuple(g.cells), g.visited.tobytes(), u._features.tobytes(),
            g.logit_sum.tobytes(), u._mask.tobytes())


@pytest.mark.parametrize(
    ("action", "message"),
    [(100, "outside the grid; valid cells are 0 to 99"), (-1, "outside the grid"),
     (3.0, "not an integer"), (np.float32(2), "not an integer"), (float("nan"), "not an integer"),
     (True, "is a bool"), (np.bool_(False), "is a bool"), (np.array([1, 2]), "shape (2,)"),
     (np.array([[4]]), "shape (1, 1)"), ("5", "type str"), (None, "type NoneType")],
)
def test_bad_actions_raise_and_leave_the_state_unchanged(action, message) -> None:
    env = gym.make("Glimpse-v0", observation="partial")
    env.reset(seed=0)
    env.step(5)
    before = _state(env)
    with pytest.raises(InvalidAction, match=message.replace("(", r"\(").replace(")", r"\)")):
        env.step(action)
    assert _state(env) == before
    env.step(np.int64(6))  # still usable; numpy integers and 0-d integer arrays are fine
    env.step(np.array(7))


def test_step_before_reset_and_after_the_end() -> None:
    env = GlimpseEnv(glimpses=2)
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    env.step(0)
    env.step(1)
    before = _state(env)
    with pytest.raises(ResetNeeded, match="ended after 2 glimpses"):
        env.step(2)
    assert _state(env) == before


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_before_reset_through_make_raises_the_projects_reset_needed(env_id) -> None:
    """The ids are registered without Gymnasium's OrderEnforcing, so the env's own errors
    reach the caller, and they are Gymnasium's errors too."""
    env = gym.make(env_id)
    assert env.spec.order_enforce is False
    with pytest.raises(glimpse_gym.errors.ResetNeeded, match="before reset"):
        env.step(0)
    try:
        env.step(0)
    except gym.error.ResetNeeded as exc:  # Gymnasium's own class catches it too
        assert isinstance(exc, glimpse_gym.errors.ResetNeeded)
    else:
        pytest.fail("no ResetNeeded")
    env.reset(seed=0)
    with pytest.raises(gym.error.InvalidAction, match="outside the grid") as caught:
        env.step(100)
    assert isinstance(caught.value, glimpse_gym.errors.InvalidAction)


@pytest.mark.parametrize("action", [[[1, 2], [3]], [4], (4, 5)])
def test_a_list_of_actions_is_refused_with_a_hint(action) -> None:
    env = gym.make("Glimpse-v0")
    env.reset(seed=0)
    with pytest.raises(InvalidAction, match=r"expected one integer cell index in \[0, 100\).*"
                                            r"one per env, is for the vector env"):
        env.step(action)


def test_bad_arguments_and_mismatched_banks(tmp_path) -> None:
    with pytest.raises(ValueError, match="observation must be one of"):
        GlimpseEnv(observation="fovea")
    with pytest.raises(ValueError, match=r"glimpses must be an integer in \[1, 100\]"):
        GlimpseEnv(glimpses=0)
    with pytest.raises(ValueError, match=r"head must be \(weight \[10, 16\]"):
        GlimpseEnv(head=(np.zeros((10, 3)), np.zeros(10)))
    with pytest.raises(BankError, match="no feature bank at"):
        GlimpseEnv(bank=str(tmp_path / "missing"))
    env = GlimpseEnv()
    with pytest.raises(ValueError, match=r"options\['index'\]"):
        env.reset(options={"index": 10**6})


def test_bank_from_another_dataset_or_bagnet_is_refused(tmp_path) -> None:
    from train.extract_features import ExtractConfig, extract_features

    extract_features(ExtractConfig(out=str(tmp_path), split=["val"], device="cpu",
                                   progress=False))
    bank = str(tmp_path / "val")
    env = GlimpseEnv(bank=bank, expect={"dataset": "digits"})
    assert env.reset(seed=0)[0]["features"].shape == (1600,)
    with pytest.raises(BankError, match="dataset: bank has 'digits', expected 'cluttered-mnist'"):
        GlimpseEnv(bank=bank, expect={"dataset": "cluttered-mnist"})
    with pytest.raises(BankError, match="model_hash"):
        GlimpseEnv(bank=bank, expect={"model_hash": "0123456789abcdef"})


def test_a_custom_head_changes_the_classifier() -> None:
    env = GlimpseEnv(glimpses=1)
    src = env.source
    k = src.num_classes
    # a head that always says class 3
    bias = np.full(k, -10.0, np.float32)
    bias[3] = 10.0
    fixed = GlimpseEnv(glimpses=1, head=(np.zeros((k, src.feature_dim), np.float32), bias))
    fixed.reset(seed=1)
    assert fixed.step(50)[4]["prediction"] == 3
    # the bank's own head reproduces the bank's logits
    own = GlimpseEnv(glimpses=1, head=(src.head_weight, src.head_bias))
    for seed in range(20):
        env.reset(seed=seed)
        own.reset(seed=seed)
        assert env.step(44)[4]["prediction"] == own.step(44)[4]["prediction"]


def test_render_outlines_each_glimpse_on_its_receptive_field() -> None:
    env = gym.make("Glimpse-v0", render_mode="rgb_array", glimpses=3)
    env.reset(seed=0)
    src = env.unwrapped.source
    plain = env.render()
    cells = (0, 55, 99)
    for cell in cells:
        env.step(cell)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == plain.shape and frame.shape[2] == 3
    s = frame.shape[0] // src.image_shape[1]
    from glimpse_gym.envs.render import PALETTE

    for k, cell in enumerate(cells):
        top, left, bottom, right = (v * s for v in src.cell_boxes()[cell])
        colour = PALETTE[k]
        # the four corners of the receptive field carry the glimpse's colour ...
        for y, x in ((top, left), (top, right - 1), (bottom - 1, left), (bottom - 1, right - 1)):
            assert np.array_equal(frame[y, x], colour), (k, y, x)
        # ... and the pixel just outside the box's right edge does not (unless another box)
        if right < frame.shape[1] and k == 2:
            assert not np.array_equal(frame[bottom - 1, right], colour)
    assert not np.array_equal(frame, plain)


def test_expect_is_checked_on_the_embedded_default_and_on_sources() -> None:
    gym.make("Glimpse-v0", expect={"dataset": "digits", "grid": (10, 10), "num_classes": 10})
    with pytest.raises(BankError, match="dataset: bank has 'digits', expected 'cluttered-mnist'"):
        gym.make("Glimpse-v0", expect={"dataset": "cluttered-mnist"})
    from glimpse_gym.envs.toy import toy_source
    with pytest.raises(BankError, match="grid"):
        gym.make("Glimpse-v0", bank=toy_source(), expect={"grid": [10, 10]})
