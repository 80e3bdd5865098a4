"""Stable-Baselines3 features extractors for Glimpse-v0's observations.

:class:`CellExtractor` runs one small MLP on every cell's D features and hands the per-cell
codes, each followed by the cell's visited bit, flattened in cell order, to the policy: with
no hidden policy layers (``net_arch=dict(pi=[], vf=[64])``) each action logit is a linear
read-out of the cells' codes and visited bits. It is cheap, which matters because PPO's
updates dominate its running time: the MLP reads the features grid as it is (a view, no
copy), and the visited bits join only the small codes.

:class:`GridExtractor` treats the observation as the grid it is: the what-features ``[H, W,
D]`` and the visited mask become a ``[D + 1, H, W]`` image, a small conv net mixes
neighbouring cells, and a linear layer maps the result to ``features_dim``. It keeps the
cells' spatial layout (a flat MLP over the whole grid would have to learn it).
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class CellExtractor(BaseFeaturesExtractor):
    """``{"features": [B, H*W*D], "visited": [B, H*W]}`` -> ``[B, H*W*(code + 1)]``.

    Args:
        observation_space: Glimpse-v0's Dict space.
        hidden: width of the per-cell MLP's hidden layer.
        code: the MLP's output size per cell (the visited bit is appended to it).
    """

    def __init__(self, observation_space: gym.spaces.Dict, hidden: int = 16,
                 code: int = 4) -> None:
        cells = observation_space["visited"].shape[0]
        total = observation_space["features"].shape[0]
        if total % cells:
            raise ValueError(f"{total} feature values do not split into {cells} cells")
        super().__init__(observation_space, (code + 1) * cells)
        self.feature_dim = total // cells
        self.mlp = nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, code), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        b = observations["visited"].shape[0]
        codes = self.mlp(observations["features"].view(b, -1, self.feature_dim))
        visited = observations["visited"].to(codes.dtype).view(b, -1, 1)
        return torch.cat([codes, visited], dim=2).flatten(1)


class GridExtractor(BaseFeaturesExtractor):
    """``{"features": [B, H*W*D], "visited": [B, H*W]}`` -> ``[B, features_dim]``.

    Args:
        observation_space: Glimpse-v0's Dict space.
        grid: ``(H, W)`` of the cell grid (``env.unwrapped.feature_shape[:2]``).
        channels: width of the conv layers.
        features_dim: output size.
    """

    def __init__(self, observation_space: gym.spaces.Dict, grid: tuple[int, int],
                 channels: int = 32, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        h, w = grid
        cells = observation_space["visited"].shape[0]
        total = observation_space["features"].shape[0]
        if h * w != cells or total % cells:
            raise ValueError(f"grid {grid} does not fit the observation space ({cells} cells, "
                             f"{total} feature values)")
        self.grid, self.feature_dim = (h, w), total // cells
        self.conv = nn.Sequential(  # per-cell mixing, then one 3x3 over neighbouring cells
            nn.Conv2d(self.feature_dim + 1, channels, 1), nn.ReLU(),
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
        )
        self.linear = nn.Sequential(nn.Linear(16 * h * w, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        h, w = self.grid
        b = observations["visited"].shape[0]
        features = observations["features"].view(b, h, w, self.feature_dim).permute(0, 3, 1, 2)
        visited = observations["visited"].float().view(b, 1, h, w)
        x = self.conv(torch.cat([features, visited], dim=1))
        return self.linear(x.flatten(1))


EXTRACTORS = ("cell", "grid")


def extractor_policy_kwargs(extractor: str, grid: tuple[int, int], channels: int = 16,
                            code: int = 4, features_dim: int = 128) -> dict:
    """SB3 ``policy_kwargs`` for ``"cell"`` (:class:`CellExtractor`, linear action read-out,
    a 64-unit value layer) or ``"grid"`` (:class:`GridExtractor` and SB3's default heads).

    ``channels`` is the per-cell MLP's hidden width (cell) or the conv width (grid); ``code``
    the cell code size (cell only); ``features_dim`` the grid extractor's output size.
    """
    if extractor == "cell":
        return {"features_extractor_class": CellExtractor,
                "features_extractor_kwargs": {"hidden": channels, "code": code},
                "net_arch": {"pi": [], "vf": [64]}}
    if extractor == "grid":
        return {"features_extractor_class": GridExtractor,
                "features_extractor_kwargs": {"grid": tuple(grid), "features_dim": features_dim,
                                              "channels": channels}}
    raise ValueError(f"extractor must be one of {EXTRACTORS}, got {extractor!r}")
