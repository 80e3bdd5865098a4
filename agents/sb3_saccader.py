"""The Saccader as a Stable-Baselines3 policy: ``PPO(SaccaderPolicy, env)`` and
``MaskablePPO(MaskableSaccaderPolicy, env)`` on Glimpse-v0 (``observation="full"``, or
``"index"`` with ``bank=`` in policy_kwargs: by reference).

How it plugs into SB3's actor-critic layout (the worked example of a custom policy):

- the *features extractor* (:class:`SaccaderExtractor`) holds the :class:`~agents.saccader.
  Saccader` network. It turns the env's flat observation back into the what-feature grid
  ``[B, D, H, W]``, takes the env's ``visited`` vector as the Saccader cell state, and returns
  the cell's masked location logits ``[B, H*W]`` next to a summary for the critic (the mixed
  features pooled over cells and the fraction of cells visited);
- the *mlp extractor* (:class:`_SplitHeads`) only splits that vector: the actor's latent is the
  location logits, the critic's the summary;
- the *action net* is the identity (the location logits are the action logits) and the value
  net a linear layer.

The Saccader's own classifier is not used by the policy: the env classifies (pass
``head=net.head()`` to Glimpse-v0 to classify with the Saccader's fine-tuned classifier).
:func:`load_saccader_weights` copies a network trained by ``glimpse train saccader`` into the
policy; its deterministic actions are then the trainer's argmax glimpses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents.extractors import BankGrids, BankSpec, PerImage, grid_size
from agents.saccader import Saccader, load_saccader


def _grid(observation_space: gym.spaces.Dict, grid: tuple[int, int] | None,
          bank: BankSpec | None = None, feature_dim: int | None = None
          ) -> tuple[int, int, int, BankGrids | None]:
    cells, d, grids = grid_size(observation_space, bank, feature_dim, "SaccaderExtractor")
    if grid is None:
        side = math.isqrt(cells)
        if side * side != cells:
            raise ValueError(f"{cells} cells are not a square grid; pass grid=(H, W) in "
                             "policy_kwargs")
        grid = (side, side)
    h, w = grid
    if h * w != cells:
        raise ValueError(f"grid {grid} does not fit the observation space ({cells} cells)")
    return h, w, d, grids


class SaccaderExtractor(PerImage, BaseFeaturesExtractor):
    """Glimpse-v0 observation -> ``[B, H*W + C + 1]``: location logits, then the critic's
    summary. Arguments after ``observation_space`` are those of :class:`Saccader`, then
    ``bank`` and ``feature_dim`` for the ``index`` observation (by reference).

    By reference the where network runs once per distinct image of a batch (the T steps of
    an episode share it; in training its BatchNorm statistics are over those images, as in
    ``glimpse train saccader``), and while collecting rollouts (no gradient) the mixed
    features of the batch's images are kept from one step to the next until the weights
    change."""

    def __init__(self, observation_space: gym.spaces.Dict, num_classes: int = 10,
                 grid: tuple[int, int] | None = None, where_channels: int = 64,
                 mixed_channels: int = 64, bank: BankSpec | None = None,
                 feature_dim: int | None = None) -> None:
        h, w, d, self.grids = _grid(observation_space, grid, bank, feature_dim)
        super().__init__(observation_space, h * w + mixed_channels + 1)
        self.grid, self.feature_dim = (h, w), d
        self.saccader = Saccader(d, num_classes, where_channels, mixed_channels)

    def _mixed_by_reference(self, index: torch.Tensor) -> torch.Tensor:
        """The mixed features ``[B, C, H*W]`` of the images ``index [B]`` refers to."""
        return self.per_image(self.saccader, index, lambda rows: self.saccader.mixed(
            self.grids(rows, channels_first=True)))

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        h, w = self.grid
        b = observations["visited"].shape[0]
        state = observations["visited"].float()
        if "features" in observations:
            what = observations["features"].view(b, h, w, self.feature_dim).permute(0, 3, 1, 2)
            mixed = self.saccader.mixed(what.contiguous())
        else:
            if self.grids is None:
                raise ValueError("an 'index' observation, but this extractor has no bank to "
                                 "read the grids from (bank=...)")
            mixed = self._mixed_by_reference(observations["index"])
        logits = self.saccader.location_logits(mixed, state)
        summary = torch.cat([mixed.mean(dim=2), state.mean(dim=1, keepdim=True)], dim=1)
        return torch.cat([logits, summary], dim=1)


class _SplitHeads(nn.Module):
    """SB3's "mlp extractor" slot: splits the extractor's output into actor and critic parts."""

    def __init__(self, cells: int, summary: int) -> None:
        super().__init__()
        self.cells = cells
        self.latent_dim_pi, self.latent_dim_vf = cells, summary

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, :self.cells]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, self.cells:]


class _SaccaderLayout:
    """What both policies share: the extractor, the split, an identity action net."""

    def _saccader_kwargs(self, kwargs: dict[str, Any], observation_space: gym.spaces.Dict
                         ) -> dict[str, Any]:
        extractor_kwargs = {key: kwargs.pop(key) for key in
                            ("num_classes", "grid", "where_channels", "mixed_channels",
                             "bank", "feature_dim") if key in kwargs}
        kwargs.setdefault("features_extractor_class", SaccaderExtractor)
        kwargs.setdefault("features_extractor_kwargs", extractor_kwargs)
        kwargs.setdefault("ortho_init", False)  # keep the Saccader's own initialisation
        kwargs.setdefault("share_features_extractor", True)
        return kwargs

    def _build_mlp_extractor(self) -> None:
        cells = self.observation_space["visited"].shape[0]
        self.mlp_extractor = _SplitHeads(cells, self.features_dim - cells)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()  # the location logits are the action logits
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),
                                              **self.optimizer_kwargs)

    @property
    def saccader(self) -> Saccader:
        """The Saccader network inside the policy."""
        return self.features_extractor.saccader


class SaccaderPolicy(_SaccaderLayout, ActorCriticPolicy):
    """``PPO(SaccaderPolicy, env, policy_kwargs={"num_classes": K, ...})``.

    policy_kwargs: ``num_classes`` (default 10), ``grid`` ``(H, W)`` (default: square),
    ``where_channels``, ``mixed_channels`` (default 64), ``bank`` and ``feature_dim`` (for
    the ``index`` observation: the bank to read the grids from), and SB3's own.
    """

    def __init__(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Discrete,
                 lr_schedule: Any, **kwargs: Any) -> None:
        kwargs = self._saccader_kwargs(kwargs, observation_space)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class MaskableSaccaderPolicy(_SaccaderLayout, MaskableActorCriticPolicy):
    """``MaskablePPO(MaskableSaccaderPolicy, env, ...)``; same policy_kwargs as
    :class:`SaccaderPolicy`."""

    def __init__(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Discrete,
                 lr_schedule: Any, **kwargs: Any) -> None:
        kwargs = self._saccader_kwargs(kwargs, observation_space)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


def load_saccader_weights(policy: SaccaderPolicy | MaskableSaccaderPolicy,
                          source: str | Path | Saccader | dict[str, torch.Tensor]) -> None:
    """Copy a trained Saccader (a ``glimpse train saccader`` checkpoint path, a network or a
    state dict) into the policy's network. Shapes must match (same D, K, widths)."""
    if isinstance(source, (str, Path)):
        source = load_saccader(source)[0]
    state = source.state_dict() if isinstance(source, nn.Module) else source
    policy.saccader.load_state_dict(state)


__all__ = ["MaskableSaccaderPolicy", "SaccaderExtractor", "SaccaderPolicy",
           "load_saccader_weights"]
