"""The native vector env: identical to SyncVectorEnv of the single env, and its own errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from glimpse_gym.envs import OBSERVATION_MODES, GlimpseVectorEnv
from glimpse_gym.errors import InvalidAction, ResetNeeded
from tests.envs.vector_check import assert_same_as_sync


@pytest.mark.parametrize("observation", OBSERVATION_MODES)
@pytest.mark.parametrize("autoreset", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("path", ["compiled", "tensor"])
def test_identical_to_sync_vector_env(observation, autoreset, path) -> None:
    """Step for step the same as SyncVectorEnv of the single env, on the CPU's compiled path
    and on the tensor path (the one CUDA runs), forced here on the CPU."""
    n, t = 6, 3
    sync = SyncVectorEnv([lambda: gym.make("Glimpse-v0", observation=observation, glimpses=t)
                          for _ in range(n)], autoreset_mode=autoreset)
    native = gym.make_vec("Glimpse-v0", num_envs=n, observation=observation, glimpses=t,
                          autoreset_mode=autoreset)
    assert isinstance(native, GlimpseVectorEnv)
    assert native._host is not None and native._cov.compiled  # the CPU default
    if path == "tensor":
        native._host, native._cov.compiled = None, False
    assert_same_as_sync(sync, native, autoreset)


def test_vector_actions_are_checked_before_anything_changes() -> None:
    envs = GlimpseVectorEnv(num_envs=4, glimpses=3)
    with pytest.raises(ResetNeeded, match="before reset"):
        envs.step(np.zeros(4, np.int64))
    envs.reset(seed=0)
    envs.step(np.array([1, 2, 3, 4]))
    before = (envs._visited.clone(), envs._cells.clone(), envs._logit_sum.clone())
    t = envs._t
    for bad, message in [(np.array([0, 1, 2]), r"shape \(4,\)"),
                         (np.array([0.0, 1.0, 2.0, 3.0]), "dtype float64"),
                         (np.array([0, 1, 100, -1]), r"envs \[2, 3\]"),
                         (np.array([True, False, True, True]), "dtype bool"),
                         ([[1, 2], [3], [4], [5]], r"are not an array \(.*\); pass 4 integer "
                                                   r"cell indices, one per env, shape \(4,\)")]:
        with pytest.raises(InvalidAction, match=message):
            envs.step(bad)
        assert envs._t == t
        assert all(torch.equal(a, b) for a, b in
                   zip(before, (envs._visited, envs._cells, envs._logit_sum), strict=True))


def test_vector_errors_are_gymnasiums_errors_and_render_mode_is_checked() -> None:
    envs = GlimpseVectorEnv(num_envs=2, glimpses=2)
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        envs.step(np.array([0, 1]))
    envs.reset(seed=0)
    with pytest.raises(gym.error.InvalidAction, match="are not an array"):
        envs.step([[1, 2], [3]])
    with pytest.raises(ValueError, match="render_mode must be None or 'rgb_array', got 'human'"):
        GlimpseVectorEnv(num_envs=1, render_mode="human")


def test_coverage_of_checks_its_cells() -> None:
    """``coverage_of`` runs a loop without bounds checks on the CPU, so it checks its input."""
    envs = GlimpseVectorEnv(num_envs=2, glimpses=3)
    assert envs.coverage_of(np.array([[0, 99], [5, 5]])).shape == (2,)
    for bad in (np.array([[0, 100]]), np.array([[-1, 3]]), np.zeros((2, 0), np.int64),
                np.array([1, 2])):
        with pytest.raises(ValueError, match=r"cell indices in \[0, 100\)"):
            envs.coverage_of(bad)


def test_torch_arrays_and_no_copy_views() -> None:
    envs = GlimpseVectorEnv(num_envs=3, observation="partial", array_type="torch", copy=False)
    obs, _ = envs.reset(seed=0)
    assert torch.is_tensor(obs["features"]) and obs["features"].shape == (3, 1600)
    obs2, reward, term, _, _ = envs.step(torch.tensor([0, 1, 2]))
    assert obs2["features"].data_ptr() == obs["features"].data_ptr()  # a view, updated
    assert reward.dtype == torch.float64 and term.dtype == torch.bool
    assert envs.action_masks().shape == (3, 100) and envs.action_masks().sum() == 297


@pytest.mark.parametrize("autoreset", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_no_copy_infos_match_copies_and_final_infos_survive(autoreset) -> None:
    """With copy=False, each step's cells / action_mask infos (views of the state) equal the
    copying env's, and the episode-ending step's infos are copies that later steps leave
    alone."""
    kw = {"num_envs": 4, "glimpses": 3, "observation": "partial", "autoreset_mode": autoreset}
    views, copies = GlimpseVectorEnv(copy=False, **kw), GlimpseVectorEnv(copy=True, **kw)
    views.reset(seed=1)
    copies.reset(seed=1)
    rng = np.random.default_rng(0)
    ended = None
    for _ in range(8):
        actions = rng.integers(0, 100, 4)
        *_, info_v = views.step(actions)
        *_, info_c = copies.step(actions)
        for key in ("cells", "action_mask"):
            assert np.array_equal(info_v[key], info_c[key])
        final_v = info_v.get("final_info", info_v) if "coverage" in info_v.get(
            "final_info", info_v) else None
        if final_v is not None:
            ended = ({k: final_v[k] for k in ("cells", "action_mask")},
                     {k: np.array(final_v[k]) for k in ("cells", "action_mask")})
        elif ended is not None:  # a later step: the ended episode's infos are unchanged
            held, snapshot = ended
            assert all(np.array_equal(held[k], snapshot[k]) for k in held)
    assert ended is not None


def test_vector_render_matches_the_single_env() -> None:
    envs = GlimpseVectorEnv(num_envs=2, glimpses=3, render_mode="rgb_array")
    single = gym.make("Glimpse-v0", glimpses=3, render_mode="rgb_array")
    envs.reset(seed=5)
    single.reset(seed=6)  # env 1 of the vector env is seeded 5 + 1
    for cell in (10, 20):
        envs.step(np.array([0, cell]))
        single.step(cell)
    frames = envs.render()
    assert len(frames) == 2 and np.array_equal(frames[1], single.render())


@pytest.mark.parametrize("observation", ["full", "partial"])
def test_vector_env_applies_a_custom_head_like_the_single_env(observation) -> None:
    src = GlimpseVectorEnv(num_envs=1).source
    rng = np.random.default_rng(0)
    head = (rng.normal(size=(src.num_classes, src.feature_dim)).astype(np.float32),
            rng.normal(size=src.num_classes).astype(np.float32))
    sync = SyncVectorEnv([lambda: gym.make("Glimpse-v0", glimpses=2, head=head,
                                           observation=observation) for _ in range(3)])
    native = GlimpseVectorEnv(num_envs=3, glimpses=2, head=head, observation=observation)
    sync.reset(seed=1)
    native.reset(seed=1)
    for _ in range(6):
        actions = rng.integers(0, 100, 3)
        o_s, r_s, _, _, i_s = sync.step(actions)
        o_n, r_n, _, _, i_n = native.step(actions)
        np.testing.assert_array_equal(i_s["prediction"], i_n["prediction"])
        np.testing.assert_array_equal(o_s["features"], o_n["features"])
        np.testing.assert_array_equal(r_s, r_n)


@pytest.mark.parametrize("observation", ["full", "partial"])
def test_float16_bank_gives_the_same_observations(observation) -> None:
    a = GlimpseVectorEnv(num_envs=5, glimpses=2, observation=observation)
    b = GlimpseVectorEnv(num_envs=5, glimpses=2, observation=observation, bank_dtype="float16")
    obs_a, _ = a.reset(seed=2)
    obs_b, _ = b.reset(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(7):
        np.testing.assert_array_equal(obs_a["features"], obs_b["features"])
        actions = rng.integers(0, 100, 5)
        obs_a, *_ = a.step(actions)
        obs_b, *_ = b.step(actions)
    with pytest.raises(ValueError, match="bank_dtype"):
        GlimpseVectorEnv(num_envs=1, bank_dtype="int8")


@pytest.mark.parametrize("bank_dtype", ["float32", "float16"])
def test_full_observation_is_the_image_grid_after_every_autoreset(bank_dtype) -> None:
    envs = GlimpseVectorEnv(num_envs=4, observation="full", glimpses=2, bank_dtype=bank_dtype)
    obs, info = envs.reset(seed=0)
    src = envs.source
    for _ in range(3):  # three episodes: reset, then two autoresets (NextStep)
        for i in range(4):
            expected = np.asarray(src.features[int(info["index"][i])], np.float32)
            got = obs["features"][i].reshape(10, 10, 16).transpose(2, 0, 1)
            np.testing.assert_array_equal(got, expected)
        for _ in range(3):
            obs, _, _, _, info = envs.step(np.array([0, 1, 2, 3]))


@pytest.mark.parametrize("observation", ["glimpses", "partial", "full", "index"])
def test_copies_held_in_any_form_are_never_overwritten(observation) -> None:
    """copy=True reuses the memory of returned arrays nobody holds any more: arrays kept
    directly, as views, inside the returned dicts or as tensors keep their values through
    later steps and episodes, and a dropped array's memory is reused."""
    envs = GlimpseVectorEnv(num_envs=3, glimpses=2, observation=observation)
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    held = {"dict": obs, "view": obs["visited"][1:], "tensor": torch.from_numpy(obs["visited"])}
    _, _, _, _, info = envs.step(rng.integers(0, 100, 3))
    held["info"] = info["action_mask"]
    def values(key):
        value = held[key]["visited"] if key == "dict" else held[key]
        return value.numpy().copy() if torch.is_tensor(value) else np.array(value)

    snapshots = {key: values(key) for key in held}
    seen = set()
    for _ in range(12):  # several episodes: every recycled buffer is written many times
        obs, *_, info = envs.step(rng.integers(0, 100, 3))
        seen.add(obs["visited"].__array_interface__["data"][0])
        del obs, info
    for key in held:
        assert np.array_equal(values(key), snapshots[key]), key
    held_memory = {held["dict"]["visited"].__array_interface__["data"][0],
                   held["info"].__array_interface__["data"][0]}
    assert not held_memory & seen
    assert len(seen) <= 2  # dropped each step: the same one or two buffers come back


def test_recycled_copies_equal_fresh_copies() -> None:
    """Outputs through recycled buffers are the values copy=False shows at that step."""
    kw = {"num_envs": 5, "glimpses": 3, "observation": "glimpses"}
    views, copies = GlimpseVectorEnv(copy=False, **kw), GlimpseVectorEnv(**kw)
    views.reset(seed=2)
    copies.reset(seed=2)
    rng = np.random.default_rng(1)
    for _ in range(9):
        actions = rng.integers(0, 100, 5)
        obs_v, *_, info_v = views.step(actions)
        obs_c, *_, info_c = copies.step(actions)
        for key in obs_v:
            assert np.array_equal(obs_v[key], obs_c[key])
            assert not np.shares_memory(obs_v[key], obs_c[key])
        for key in ("cells", "action_mask", "index", "label"):
            assert np.array_equal(info_v[key], info_c[key])


def test_a_seed_with_an_index_restarts_the_stream_as_in_the_single_env() -> None:
    from glimpse_gym.envs import GlimpseEnv

    singles = [GlimpseEnv(split="test", glimpses=2) for _ in range(3)]
    native = GlimpseVectorEnv(3, split="test", glimpses=2)
    for env in singles:
        env.reset(seed=9)
    native.reset(seed=9)
    for i, env in enumerate(singles):
        env.reset(seed=3 + i, options={"index": 5})
    native.reset(seed=3, options={"indices": [5, 5, 5]})
    assert [env.reset()[1]["index"] for env in singles] == native.reset()[1]["index"].tolist()
