"""The check that a native vector env is step for step SyncVectorEnv of the single env."""

from __future__ import annotations

import numpy as np
from gymnasium.vector import AutoresetMode

INFO_KEYS = ("index", "label", "prediction", "correct", "action_mask")


def _cells_array(cells_info: np.ndarray, glimpses: int) -> np.ndarray:
    out = np.full((len(cells_info), glimpses), -1)
    for i, cells in enumerate(cells_info):
        out[i, :len(cells)] = cells
    return out


def assert_same_as_sync(sync, native, autoreset: AutoresetMode, steps: int = 25) -> None:
    """Reset both with one seed, step both with the same random actions (revisits included)
    and compare observations, rewards, flags and infos at every step; at least two rounds of
    episodes must end."""
    n, t = native.num_envs, native.glimpses
    cells = native.single_action_space.n
    assert native.single_observation_space == sync.single_observation_space
    assert native.observation_space == sync.observation_space
    obs_s, info_s = sync.reset(seed=11)
    obs_n, info_n = native.reset(seed=11)
    rng = np.random.default_rng(0)
    episodes_ended = 0
    keys = tuple(sync.single_observation_space.keys())
    last = rng.integers(0, cells, n)
    for step in range(steps):
        assert set(obs_n) == set(keys)
        for key in keys:
            np.testing.assert_array_equal(obs_s[key], obs_n[key], err_msg=f"{key} @ {step}")
        for key in INFO_KEYS:
            np.testing.assert_array_equal(np.asarray(info_s[key]), info_n[key],
                                          err_msg=f"info {key} @ {step}")
        np.testing.assert_array_equal(_cells_array(info_s["cells"], t), info_n["cells"])
        assert ("coverage" in info_s) == ("coverage" in info_n)
        if "coverage" in info_s:  # end-of-episode keys: same envs marked, same values
            for key in ("coverage", "label_name", "prediction_name"):
                np.testing.assert_array_equal(info_s[f"_{key}"], info_n[f"_{key}"])
                np.testing.assert_array_equal(info_s[key], info_n[key])
        if "final_info" in info_s:
            for key in (*INFO_KEYS, "coverage", "label_name", "prediction_name"):
                np.testing.assert_array_equal(info_s["final_info"][key],
                                              info_n["final_info"][key], err_msg=key)
        actions = rng.integers(0, cells, n)
        actions[0] = actions[1]  # two envs with the same action
        if n > 2:  # env 2 revisits its cell at every step of an episode but the first
            actions[2] = last[2]
        last = actions
        obs_s, r_s, term_s, trunc_s, info_s = sync.step(actions)
        obs_n, r_n, term_n, trunc_n, info_n = native.step(actions)
        np.testing.assert_array_equal(r_s, r_n)
        np.testing.assert_array_equal(term_s, term_n)
        np.testing.assert_array_equal(trunc_s, trunc_n)
        if autoreset == AutoresetMode.SAME_STEP and term_s.any():
            for i in np.nonzero(term_s)[0]:
                for key in keys:
                    np.testing.assert_array_equal(info_s["final_obs"][i][key],
                                                  info_n["final_obs"][i][key])
        episodes_ended += int(term_s.sum())
    assert episodes_ended >= 2 * n
