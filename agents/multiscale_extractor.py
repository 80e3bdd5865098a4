"""A Stable-Baselines3 features extractor for ``MultiScale-v0``'s ``partial`` observations.

:class:`MultiScaleCellExtractor` codes every action cell from what is known of it: its own
features (zeros until it is opened) and its parent's (level 0's cell for a level-1 cell,
observed from the start; the parent's row otherwise, zeros while the parent is closed),
through one small MLP shared by all cells; each code is followed by the cell's visited bit and
whether its parent is open. With no hidden policy layers each action logit is a linear
read-out of all the codes and bits, as :class:`~agents.extractors.CellExtractor` does on the
single-scale grid.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


def parent_rows(env: Any) -> list[int]:
    """For each action of a :class:`~glimpse_gym.envs.MultiScaleEnv`, its parent's row in
    ``[level 0's cells, then the actions]``."""
    coarse = env.bank.levels[0].num_cells
    level_one = env.bank.levels[1].parent  # level-1 cells' parents: level 0's cells
    rows = np.where(env.parent_action >= 0, env.parent_action + coarse, 0)
    first = env.action_level == 1
    rows[first] = level_one[env.action_cell[first]]
    return [int(r) for r in rows]


class MultiScaleCellExtractor(BaseFeaturesExtractor):
    """``{"coarse": [B, C0*D], "features": [B, A*D], "visited": [B, A]}`` ->
    ``[B, A*(code + 2)]`` (see the module).

    Args:
        observation_space: MultiScale-v0's ``partial`` Dict space.
        parents: :func:`parent_rows` of the env.
        hidden: width of the per-cell MLP's hidden layer.
        code: the MLP's output size per cell.
    """

    def __init__(self, observation_space: gym.spaces.Dict, parents: list[int],
                 hidden: int = 16, code: int = 4) -> None:
        actions = observation_space["visited"].shape[0]
        d = observation_space["features"].shape[0] // actions
        if len(parents) != actions:
            raise ValueError(f"parents has {len(parents)} rows for {actions} actions")
        super().__init__(observation_space, actions * (code + 2))
        self.feature_dim, self.coarse = d, observation_space["coarse"].shape[0] // d
        self.register_buffer("parents", torch.as_tensor(parents, dtype=torch.long))
        self.mlp = nn.Sequential(nn.Linear(2 * d, hidden), nn.ReLU(), nn.Linear(hidden, code),
                                 nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        visited = observations["visited"].float()
        b = len(visited)
        own = observations["features"].view(b, -1, self.feature_dim)
        known = torch.cat([observations["coarse"].view(b, -1, self.feature_dim), own], 1)
        parent = known[:, self.parents]
        opened = torch.cat([torch.ones(b, self.coarse, device=visited.device), visited], 1)
        codes = self.mlp(torch.cat([own, parent], -1))
        return torch.cat([codes, visited[..., None], opened[:, self.parents, None]],
                         -1).flatten(1)


def multiscale_policy_kwargs(parents: list[int], hidden: int = 16, code: int = 4
                             ) -> dict[str, Any]:
    """SB3 ``policy_kwargs``: :class:`MultiScaleCellExtractor`, a linear action read-out and
    a 64-unit value layer."""
    return {"features_extractor_class": MultiScaleCellExtractor,
            "features_extractor_kwargs": {"parents": list(parents), "hidden": hidden,
                                          "code": code},
            "net_arch": {"pi": [], "vf": [64]}}


__all__ = ["MultiScaleCellExtractor", "multiscale_policy_kwargs", "parent_rows"]
