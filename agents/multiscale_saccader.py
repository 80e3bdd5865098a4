"""The Saccader across scales: Elsayed et al.'s location network on ``MultiScale-v0``.

On one grid (:mod:`agents.saccader`) the Saccader's where network reads the whole
what-feature grid, which would cost every full-resolution pixel. Across scales it reads only
what the env shows: level 0 (the whole image at the coarsest scale, observed at reset) and
the cells opened so far.

- the *where* network (the Saccader's: two groups of 1x1 conv and dilated 3x3 conv, batch
  norm, ReLU) runs on level 0's grid ``[B, D, H0, W0]``;
- each *action* cell (levels 1, 2, ...) is described by the where features of its level-0
  ancestor, the what-features of its parent (a level-0 cell for level 1, an opened cell
  otherwise) and a fixed code of its centre and level (sinusoids, as :mod:`agents.tnet`'s);
  a two-layer *mixing* MLP turns that into the mixed features ``M [B, C, A]``;
- the *Saccader cell* (:func:`agents.saccader.saccader_cell`) picks one cell at a time with
  every cell that may not be chosen masked: opened ones, and those whose parent is closed.
  A masked cell gets no weight anywhere in the cell, so the features of closed parents,
  which the env does not show, never matter: playing from the env's observations gives the
  same cells as playing from the bank (tested).

The classifier is the env's readout (the BagNet's head, each level's own, on level 0's vote
and the opened cells), so the policy is judged by what ``MultiScale-v0`` rewards. Training
(:mod:`train.multiscale_saccader`) follows the Saccader's steps 2 and 3 on fixed banks:

2. *locations*: cross-entropy of each glimpse's location logits against a greedy teacher that
   opens, among the cells that may be opened, the one with the largest BagNet logit of the
   full image's predicted class (the ordered-logits rule across scales; the cell state
   follows the teacher);
3. *policy*: REINFORCE, reward 1 when the readout after T sampled glimpses is right,
   advantage = reward - batch mean, plus L2 on the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.multiscale_eval import MultiScalePolicy
from agents.saccader import Rollout, roll, saccader_cell, where_network
from agents.tnet import Geometry, sinusoids, trained_for
from glimpse_gym.multiscale import MultiScaleBank

FORMAT = "glimpse-gym-multiscale-saccader/1"


class MultiScaleSaccader(nn.Module):
    """The Saccader's location network over a multi-scale bank's action cells (see the
    module).

    >>> g = Geometry([np.full((4, 2), 0.5), np.full((16, 2), 0.5)],
    ...              [None, np.repeat(np.arange(4), 4)], 8, 3, [(2, 2), (4, 4)])
    >>> net = MultiScaleSaccader(g, where_channels=8, mixed_channels=8)
    >>> levels = [torch.randn(5, 4, 8), torch.randn(5, 16, 8)]
    >>> r = net.rollout(levels, glimpses=3, sample=False)
    >>> r.cells.shape, r.location_logits.shape
    (torch.Size([5, 3]), torch.Size([5, 3, 16]))
    """

    def __init__(self, geometry: Geometry, where_channels: int = 64, mixed_channels: int = 64,
                 bands: int = 8) -> None:
        super().__init__()
        if len(geometry.centres) < 2 or len(geometry.grids) != len(geometry.centres):
            raise ValueError("a multi-scale Saccader needs at least two levels and each "
                             "level's grid")
        self.geometry, self.bands = geometry, bands
        self.where_channels, self.mixed_channels = where_channels, mixed_channels
        d = geometry.feature_dim
        coarse = len(geometry.centres[0])
        ancestors, parent_rows, codes = [], [], []
        above = np.arange(coarse)  # each cell of the level above: its level-0 ancestor
        offset, levels = 0, len(geometry.centres)
        for level in range(1, levels):
            parent = np.asarray(geometry.parents[level], dtype=np.int64)
            ancestors.append(above[parent])
            # parent rows in [level 0's cells, then the actions]
            parent_rows.append(parent if level == 1 else coarse + offset + parent)
            if level > 1:
                offset += len(geometry.centres[level - 1])
            above = above[parent]
            yx = torch.as_tensor(geometry.centres[level], dtype=torch.float32)
            codes.append(sinusoids(torch.cat([yx, torch.full((len(yx), 1),
                                                             level / (levels - 1))], 1), bands))
        action_level = np.concatenate([np.full(len(c), lv) for lv, c
                                       in enumerate(geometry.centres[1:], 1)])
        sizes = [len(c) for c in geometry.centres[1:]]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        parent_action = np.concatenate(
            [np.full(sizes[0], -1)] + [starts[lv - 2] + np.asarray(geometry.parents[lv])
                                       for lv in range(2, levels)]).astype(np.int64)
        self.register_buffer("ancestor", torch.as_tensor(np.concatenate(ancestors)))
        self.register_buffer("parent_row", torch.as_tensor(np.concatenate(parent_rows)))
        self.register_buffer("parent_action", torch.as_tensor(parent_action))
        self.register_buffer("code", torch.cat(codes))
        self.action_level = action_level
        self.num_actions = len(action_level)
        self.where = where_network(d, where_channels)
        self.mix = nn.Sequential(nn.Linear(where_channels + d + self.code.shape[1],
                                           mixed_channels), nn.ReLU(),
                                 nn.Linear(mixed_channels, mixed_channels))
        self.spatial = nn.Conv1d(mixed_channels, 1, 1, bias=False)

    def mixed(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """``levels`` (``[B, cells_l, D]`` per level; only level 0 and the parents of cells
        that may be opened are read) -> mixed features ``M [B, C, A]``."""
        coarse = levels[0]
        b, _, d = coarse.shape
        h, w = self.geometry.grids[0]
        where = self.where(coarse.transpose(1, 2).reshape(b, d, h, w)).flatten(2)
        known = torch.cat(levels[:-1], 1)  # the rows parents can be in
        x = torch.cat([where.transpose(1, 2)[:, self.ancestor], known[:, self.parent_row],
                       self.code.expand(b, -1, -1)], -1)
        return self.mix(x).transpose(1, 2)

    def blocked(self, visited: torch.Tensor) -> torch.Tensor:
        """``[B, A] bool``: the cells that may not be opened (opened, or parent closed)."""
        visited = visited.bool()
        has_parent = self.parent_action >= 0
        parent_open = visited[:, self.parent_action.clamp(min=0)] | ~has_parent
        return visited | ~parent_open

    def location_logits(self, mixed: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        return saccader_cell(mixed, blocked, self.spatial.weight)

    def rollout(self, levels: list[torch.Tensor], glimpses: int, sample: bool,
                generator: torch.Generator | None = None,
                teacher: torch.Tensor | None = None) -> Rollout:
        """``glimpses`` steps from nothing opened (``cells`` are action indices); ``sample``,
        ``teacher`` as :meth:`agents.saccader.Saccader.rollout`."""
        mixed = self.mixed(levels)
        visited = torch.zeros(len(mixed), self.num_actions, dtype=torch.bool,
                              device=mixed.device)
        return roll(lambda v: self.location_logits(mixed, self.blocked(v)), visited, glimpses,
                    sample, generator, teacher)

    def describe(self) -> dict[str, Any]:
        return {"where_channels": self.where_channels, "mixed_channels": self.mixed_channels,
                "bands": self.bands}


def greedy_targets(net: MultiScaleSaccader, action_logits: torch.Tensor,
                   finest_logits: torch.Tensor, glimpses: int) -> torch.Tensor:
    """Step 2's teacher: ``[B, T]`` cells, each the one with the largest logit of the full
    image's predicted class among the cells that may be opened then. ``action_logits
    [B, A, K]``: every action cell's BagNet logits; ``finest_logits [B, cells, K]``: the
    finest level's (their mean is the full image's)."""
    cls = finest_logits.mean(1).argmax(1)
    score = action_logits.gather(2, cls[:, None, None].expand(-1, action_logits.shape[1], 1))
    score = score[..., 0]
    visited = torch.zeros_like(score, dtype=torch.bool)
    cells = []
    for _ in range(glimpses):
        cell = score.masked_fill(net.blocked(visited), float("-inf")).argmax(1)
        cells.append(cell)
        visited = visited.scatter(1, cell[:, None], True)
    return torch.stack(cells, 1)


def readout_correct(prior: torch.Tensor, action_logits: torch.Tensor, cells: torch.Tensor,
                    labels: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: the env's readout (``prior [B, K]``, level 0's mean logits, plus the
    logits of the distinct ``cells [B, T]``) is the label. Cells from :meth:`rollout` are
    distinct (opened cells are masked)."""
    picked = action_logits.gather(1, cells[..., None].expand(-1, -1, action_logits.shape[2]))
    return (prior + picked.sum(1)).argmax(1) == labels


def policy_loss(net: MultiScaleSaccader, levels: list[torch.Tensor], prior: torch.Tensor,
                action_logits: torch.Tensor, labels: torch.Tensor, glimpses: int, l2: float,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Step 3: REINFORCE (batch-mean baseline) on the readout's correctness + L2."""
    rollout = net.rollout(levels, glimpses, sample=True, generator=generator)
    reward = readout_correct(prior, action_logits, rollout.cells, labels).float()
    advantage = reward - reward.mean()
    reinforce = -(advantage[:, None] * rollout.log_probs).sum(1).mean()
    decay = sum((p ** 2).sum() for n, p in net.named_parameters()
                if n.endswith("weight") and p.dim() > 1)
    loss = reinforce + l2 * decay
    return loss, {"reward": reward.mean().item(), "reinforce": reinforce.item(),
                  "entropy": rollout.entropy.mean().item()}


def location_loss(net: MultiScaleSaccader, levels: list[torch.Tensor],
                  action_logits: torch.Tensor, finest_logits: torch.Tensor,
                  glimpses: int) -> torch.Tensor:
    """Step 2: cross-entropy of each glimpse's location logits against :func:`greedy_targets`."""
    targets = greedy_targets(net, action_logits, finest_logits, glimpses)
    rollout = net.rollout(levels, glimpses, sample=False, teacher=targets)
    return F.cross_entropy(rollout.location_logits.flatten(0, 1), targets.flatten())


class MultiScaleSaccaderPolicy(MultiScalePolicy):
    """A trained :class:`MultiScaleSaccader` in the env: at each step the argmax of its
    location logits over the cells the env's mask allows, from the observed level 0 and the
    opened cells' features (``partial`` observations)."""

    name = "saccader"

    def __init__(self, net: MultiScaleSaccader) -> None:
        self.net = net.eval()
        self.sizes = [len(c) for c in net.geometry.centres]

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        n, d = len(mask), self.net.geometry.feature_dim
        device = self.net.code.device
        coarse = obs["coarse"].view(n, -1, d).float().to(device)
        opened = obs["features"].view(n, -1, d).float().to(device)
        levels = [coarse, *opened.split(self.sizes[1:], dim=1)]
        logits = self.net.location_logits(self.net.mixed(levels), ~mask.to(device))
        return logits.argmax(1).to(mask.device)


def load_multiscale_saccader(path: str | Path, bank: MultiScaleBank,
                             device: torch.device | str = "cpu") -> MultiScaleSaccader:
    """A checkpoint of ``glimpse train multiscale-saccader`` for ``bank``:
    :class:`~glimpse_gym.errors.CheckpointError` when it is damaged or of another kind,
    :class:`~glimpse_gym.errors.UsageError` when it was trained on other levels or another
    BagNet."""
    from glimpse_gym.fileio import load_payload

    ckpt = load_payload(path, FORMAT, "multi-scale Saccader", device)
    net = MultiScaleSaccader(trained_for(ckpt, bank, path), **ckpt["net"]).to(device)
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


__all__ = ["FORMAT", "MultiScaleSaccader", "MultiScaleSaccaderPolicy", "greedy_targets",
           "load_multiscale_saccader", "location_loss", "policy_loss", "readout_correct"]
