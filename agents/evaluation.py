"""Accuracy and coverage at T of one policy on every image of a split exactly once.

A thin layer over :func:`agents.suite.run_policy` for the training loops: it takes either a
:class:`~agents.policies.GlimpsePolicy` or a plain function ``policy(obs, masks) -> actions``
on numpy arrays (:data:`PolicyFn`), and reports the numbers at the last glimpse.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.policies import GlimpsePolicy, SB3Policy
from agents.suite import run_policy

# policy(observations, action_masks) -> actions [N]
PolicyFn = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]


class _FunctionPolicy(GlimpsePolicy):
    """A :data:`PolicyFn` behind the shared interface (numpy in, numpy out)."""

    name = "function"

    def __init__(self, fn: PolicyFn) -> None:
        self.fn = fn

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        actions = self.fn({k: v.cpu().numpy() for k, v in obs.items()}, mask.cpu().numpy())
        return torch.as_tensor(np.asarray(actions).reshape(len(mask)), dtype=torch.long,
                               device=mask.device)


def evaluate_on_split(policy: PolicyFn | GlimpsePolicy, bank: str | Path | None = None, *,
                      glimpses: int = 6, observation: str = "full", batch: int = 1024,
                      max_images: int | None = None, **env_kwargs: Any) -> dict[str, float]:
    """Run ``policy`` for T glimpses on each image of the bank (or default split) once.

    Returns:
        ``accuracy`` (fraction of images classified right after T glimpses), ``coverage``
        (mean fraction of pixels inside the glimpses' receptive fields), ``num_images``.
    """
    if not isinstance(policy, GlimpsePolicy):
        policy = _FunctionPolicy(policy)
    policy.observation = observation
    if "head" in env_kwargs:  # the classifier the env reads the glimpses with
        policy.head = env_kwargs.pop("head")
    run = run_policy(policy, bank, max_glimpses=glimpses, batch=batch, max_images=max_images,
                     **env_kwargs)
    return {"accuracy": run.correct[:, -1].float().mean().item(),
            "coverage": run.coverage[:, -1].mean().item(), "num_images": len(run.labels)}


def sb3_policy(model: Any, deterministic: bool = True) -> GlimpsePolicy:
    """A (Maskable)PPO model as a policy (deterministic only, as evaluation needs)."""
    if not deterministic:
        raise ValueError("sb3_policy evaluates deterministic policies only")
    return SB3Policy(model)
