"""A RAM-style recurrent agent (Mnih et al. 2014) on Glimpse-v0's compact ``glimpses``
observation.

At glimpse t the agent sees only what its previous glimpse revealed: the what-features of
that cell (the observation's last filled row) and where it was (a learned embedding per
cell; a "none yet" embedding before the first glimpse). A glimpse encoder (MLP over
[features, location embedding]) feeds a GRU core; from the core state a location head gives
one logit per cell (visited cells masked out) and a value head the baseline. Trained with
REINFORCE and the learned baseline by :mod:`train.reinforce`; the env classifies from the
glimpsed cells (BagNet's logits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.policies import GlimpsePolicy
from agents.saccader import build_from_checkpoint
from glimpse_gym.envs.source import GlimpseSource
from glimpse_gym.fileio import check_payload, load_payload
from glimpse_gym.rules import mask_visited

FORMAT = "glimpse-gym-reinforce/1"


class RamAgent(nn.Module):
    """Glimpse encoder + GRU core + masked location head + value head.

    Args:
        feature_dim: D. num_cells: H*W.
        hidden: GRU width. glimpse_dim: glimpse code width. location_dim: location embedding.
    """

    def __init__(self, feature_dim: int, num_cells: int, hidden: int = 128,
                 glimpse_dim: int = 128, location_dim: int = 32) -> None:
        super().__init__()
        self.feature_dim, self.num_cells = feature_dim, num_cells
        self.hidden = hidden
        self.where = nn.Embedding(num_cells + 1, location_dim)  # index num_cells: none yet
        self.encoder = nn.Sequential(nn.Linear(feature_dim + location_dim, glimpse_dim),
                                     nn.ReLU())
        self.core = nn.GRUCell(glimpse_dim, hidden)
        self.location = nn.Linear(hidden, num_cells)
        self.value = nn.Linear(hidden, 1)

    def initial_state(self, n: int, device: torch.device | str = "cpu"
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(core state [N, hidden], last features [N, D], last cell [N])`` before glimpse 1."""
        return (torch.zeros(n, self.hidden, device=device),
                torch.zeros(n, self.feature_dim, device=device),
                torch.full((n,), self.num_cells, dtype=torch.long, device=device))

    def forward(self, h: torch.Tensor, last_features: torch.Tensor, last_cell: torch.Tensor,
                visited: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step: -> ``(location logits [N, H*W] (visited masked), value [N], new h)``."""
        g = self.encoder(torch.cat([last_features, self.where(last_cell)], dim=1))
        h = self.core(g, h)
        logits = mask_visited(self.location(h), visited)
        return logits, self.value(h)[:, 0], h


def slot_features(obs_features: torch.Tensor, slot: int, feature_dim: int) -> torch.Tensor:
    """The ``[N, D]`` features of glimpse ``slot`` from the ``glimpses`` observation's flat
    ``features [N, T*D]``."""
    return obs_features.view(len(obs_features), -1, feature_dim)[:, slot]


class ReinforceAgent(GlimpsePolicy):
    """A trained :class:`RamAgent` behind the shared policy interface (argmax cells)."""

    observation = "glimpses"

    def __init__(self, net: RamAgent, name: str = "reinforce") -> None:
        self.net, self.name = net.eval(), name
        self._state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._t = 0

    def begin(self, source: GlimpseSource, indices: torch.Tensor) -> None:
        self._state = self.net.initial_state(len(indices))
        self._t = 0

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        h, last_features, last_cell = self._state
        if self._t:  # what the previous glimpse revealed
            last_features = slot_features(obs["features"].float().cpu(), self._t - 1,
                                          self.net.feature_dim)
        logits, _, h = self.net(h, last_features, last_cell, (~mask).cpu())
        cell = logits.argmax(dim=1)
        self._state = (h, last_features, cell)
        self._t += 1
        return cell.to(mask.device)


def load_reinforce(path: str | Path) -> tuple[RamAgent, dict[str, Any]]:
    """A trained agent and its checkpoint (``glimpse-gym-reinforce/1``), read with
    ``weights_only=True`` and its checksum checked (:class:`CheckpointError` otherwise)."""
    ckpt = load_payload(path, FORMAT, "REINFORCE")
    return build_from_checkpoint(RamAgent, ckpt, path), ckpt


def reinforce_from_payload(payload: dict[str, Any], path: str | Path
                           ) -> tuple[RamAgent, dict[str, Any]]:
    """:func:`load_reinforce` for a payload already read (``weights_only``) from ``path``."""
    ckpt = check_payload(payload, Path(path), FORMAT, "REINFORCE")
    return build_from_checkpoint(RamAgent, ckpt, path), ckpt


__all__ = ["FORMAT", "RamAgent", "ReinforceAgent", "load_reinforce",
           "reinforce_from_payload", "slot_features"]
