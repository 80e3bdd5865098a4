"""Evaluating any glimpse policy on every image of a split exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from glimpse_gym.envs import GlimpseVectorEnv, load_source

# policy(observations, action_masks) -> actions [N]
PolicyFn = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]


def evaluate_on_split(policy: PolicyFn, bank: str | Path | None = None, *, glimpses: int = 6,
                      observation: str = "full", batch: int = 1024,
                      max_images: int | None = None, **env_kwargs: Any) -> dict[str, float]:
    """Run ``policy`` for T glimpses on each image of the bank (or default split) once.

    Returns:
        ``accuracy`` (fraction of images classified right after T glimpses), ``coverage``
        (mean fraction of pixels inside the glimpses' receptive fields), ``num_images``.
    """
    source_kwargs = {k: v for k, v in env_kwargs.items()
                     if k in ("dataset", "split", "checkpoint", "seed", "expect")}
    total = load_source(bank, **source_kwargs).num_images
    n = total if max_images is None else min(max_images, total)
    size = min(batch, n)
    envs = GlimpseVectorEnv(size, bank, glimpses=glimpses, observation=observation,
                            **env_kwargs)
    correct, coverage = [], []
    for start in range(0, n, size):
        images = np.arange(start, start + size) % n
        obs, _ = envs.reset(options={"indices": images})
        for _ in range(glimpses):
            actions = np.asarray(policy(obs, envs.action_masks())).reshape(size)
            obs, rewards, terminated, _, infos = envs.step(actions)
        valid = min(size, n - start)
        correct.append(rewards[:valid])
        coverage.append(infos["coverage"][:valid])
    return {"accuracy": float(np.concatenate(correct).mean()),
            "coverage": float(np.concatenate(coverage).mean()), "num_images": n}


def sb3_policy(model: Any, deterministic: bool = True) -> PolicyFn:
    """A :data:`PolicyFn` from a (Maskable)PPO model."""
    maskable = "action_masks" in model.predict.__code__.co_varnames

    def act(obs: dict[str, np.ndarray], masks: np.ndarray) -> np.ndarray:
        if maskable:
            return model.predict(obs, deterministic=deterministic, action_masks=masks)[0]
        return model.predict(obs, deterministic=deterministic)[0]

    return act
