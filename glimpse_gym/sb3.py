"""Stable-Baselines3 glue: the native vector env as an SB3 ``VecEnv`` (needs the ``rl`` extra:
``pip install '.[rl]'`` in the source folder; nothing else in :mod:`glimpse_gym` imports SB3).

SB3 does not take Gymnasium vector envs; :class:`SB3VecEnv` adapts
:class:`~glimpse_gym.envs.GlimpseVectorEnv` (same-step autoreset, as SB3 expects: a finished
env's info holds ``terminal_observation`` and the returned observation is the next episode's
first). Wrap it in ``VecMonitor`` for episode statistics; ``env_method("action_masks")``
serves MaskablePPO.

The rollout buffers that make PPO faster on these observations live with the agents
(:mod:`agents.buffers`).

>>> from stable_baselines3.common.vec_env import VecMonitor
>>> from glimpse_gym.sb3 import SB3VecEnv
>>> venv = VecMonitor(SB3VecEnv(num_envs=8, glimpses=2))
>>> obs = venv.reset()
>>> obs["features"].shape, obs["visited"].shape
((8, 1600), (8, 100))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from glimpse_gym.envs.multiscale_vector import MultiScaleVectorEnv
from glimpse_gym.envs.vector import GlimpseVectorEnv

# per-episode facts copied into a finished env's info (VecMonitor adds "episode")
EPISODE_KEYS = ("label", "prediction", "correct", "coverage", "index", "pixels",
                "full_resolution_pixels", "flops")


class SB3VecEnv(VecEnv):
    """``num_envs`` Glimpse episodes as one SB3 ``VecEnv`` (keyword arguments as the vector env;
    ``multiscale=True``: MultiScale-v0's, :class:`~glimpse_gym.envs.MultiScaleVectorEnv`).

    ``get_attr`` / ``set_attr`` / ``env_method`` reach the vector env's attributes and methods;
    ``env_method("action_masks")`` returns one ``[H*W] bool`` mask per env.
    """

    def __init__(self, num_envs: int = 1, *, multiscale: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("copy", False)  # SB3 copies observations into its own buffers
        vector_env = MultiScaleVectorEnv if multiscale else GlimpseVectorEnv
        self.venv = vector_env(num_envs=num_envs, autoreset_mode="SameStep",
                               array_type="numpy", **kwargs)
        self.render_mode = self.venv.render_mode
        super().__init__(num_envs, self.venv.single_observation_space,
                         self.venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> dict[str, np.ndarray]:
        seeds = None if all(s is None for s in self._seeds) else [
            s if s is not None else int(np.random.randint(2**31)) for s in self._seeds]
        obs, infos = self.venv.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = self._split(infos, np.ones(self.num_envs, bool))
        return {k: v.copy() for k, v in obs.items()}

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict]]:
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final = infos["final_info"]
            for i in np.nonzero(dones)[0]:
                info = out[i]
                info["terminal_observation"] = infos["final_obs"][i]
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                for key in EPISODE_KEYS:
                    if key in final:  # the costs: multi-scale envs only
                        info[key] = final[key][i].item()
        obs = {k: v.copy() for k, v in obs.items()}
        return obs, rewards.astype(np.float32), dones, out

    def _split(self, infos: dict[str, Any], mask: np.ndarray) -> list[dict[str, Any]]:
        return [{k: infos[k][i] for k in EPISODE_KEYS if k in infos} if mask[i] else {}
                for i in range(self.num_envs)]

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    # ---------------------------------------------------------------- attribute access
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if indices is not None and len(self._indices(indices)) != self.num_envs:
            raise ValueError("set_attr on a subset of envs is not supported: the envs share "
                             "one vector state")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        idx = self._indices(indices)
        if method_name == "action_masks":
            masks = self.venv.action_masks()
            return [masks[i] for i in idx]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]
