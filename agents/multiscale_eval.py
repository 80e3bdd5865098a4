"""Policies on ``MultiScale-v0`` and their evaluation: error against glimpses and against cost.

A :class:`MultiScalePolicy` is driven through the native multi-scale vector env (torch
arrays, ``partial`` observations): ``begin(bank, indices)`` announces a batch of episodes,
then ``act(obs, mask)`` returns one action per env, ``mask [N, A] bool`` being True on the
cells that may be opened. :func:`run_multiscale` plays a policy once on every image of a bank
and records, after each glimpse, whether the env's readout is right and what the episode has
cost so far (pixels, full-resolution pixels, BagNet FLOPs); :func:`summarise_multiscale` turns
that into the error and the mean costs at each T.

Policies here: :class:`RandomLegal` (uniformly among the cells that may be opened),
:class:`OrderedLogitsAcross` (a reference that ranks the cells by their logits) and
:class:`TNetPolicy` (a trained :class:`agents.tnet.TNet`: the same top-k choices, made step by
step from what the env shows). Single-scale baselines (ordered logits, random cells of one
level) run in ``Glimpse-v0`` on that level's bank (``level<l>/`` is an ordinary bank).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.tnet import TNet
from glimpse_gym.envs import MultiScaleVectorEnv
from glimpse_gym.envs.multiscale_vector import COST_KEYS
from glimpse_gym.multiscale import MultiScaleBank
from glimpse_gym.rules import mask_visited


class MultiScalePolicy:
    """Base class: override :meth:`act` (and :meth:`begin` for per-image state)."""

    name = "policy"

    def begin(self, bank: MultiScaleBank, indices: torch.Tensor) -> None:
        """A batch of episodes starts on images ``indices`` of ``bank``."""

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """``[N]`` actions (long)."""
        raise NotImplementedError


class RandomLegal(MultiScalePolicy):
    """A cell drawn uniformly among those that may be opened, at every step."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        scores = torch.rand(mask.shape, generator=self.generator).to(mask.device)
        return mask_visited(scores, ~mask).argmax(1)


class OrderedLogitsAcross(MultiScalePolicy):
    """A reference, not a saving: among the cells that may be opened, the one with the largest
    BagNet logit of the full image's predicted class (the finest level's mean logits), as the
    multi-scale Saccader's step-2 teacher does. Ranking needs every cell's logits, so every
    level's full pass (``full_pass``: its costs are those)."""

    name = "ordered-logits (across scales)"
    full_pass = True

    def begin(self, bank: MultiScaleBank, indices: torch.Tensor) -> None:
        index = indices.cpu().numpy()
        logits = [np.asarray(lv.bank.logits[index], np.float32).reshape(len(index),
                                                                         lv.bank.num_classes, -1)
                  for lv in bank.levels]
        cls = logits[-1].mean(2).argmax(1)
        actions = np.concatenate(logits[1:], 2)  # [N, K, A]
        self._score = torch.from_numpy(actions[np.arange(len(index)), cls])

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self._score.to(mask.device).masked_fill(~mask, float("-inf")).argmax(1)


class TNetPolicy(MultiScalePolicy):
    """A trained TNet in the env: glimpse t opens the best-scored cell of its level (the
    ``locations`` schedule: ``k_1`` glimpses at level 1, then ``k_2`` at level 2, ...) among
    those that may be opened, scored from the observed features of the level above. Beyond
    the schedule's T (not TNet's own behaviour) it goes on opening the best cells of the
    last level under the opened parents."""

    name = "tnet"

    def __init__(self, net: TNet, bank: MultiScaleBank) -> None:
        self.net = net.eval()
        sizes = [lv.num_cells for lv in bank.levels[1:]]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.schedule = [level for level, k in enumerate(net.locations, 1) for _ in range(k)]
        self.dim = int(bank.levels[0].bank.features.shape[1])
        self._t = 0

    def begin(self, bank: MultiScaleBank, indices: torch.Tensor) -> None:
        self._t = 0

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        n = len(mask)
        level = self.schedule[min(self._t, len(self.schedule) - 1)]
        self._t += 1
        if level == 1:
            above = obs["coarse"].view(n, -1, self.dim)
        else:
            lo, hi = self.offsets[level - 2], self.offsets[level - 1]
            above = obs["features"].view(n, -1, self.dim)[:, lo:hi]
        scores = self.net.scores(level, above.float())
        lo, hi = self.offsets[level - 1], self.offsets[level]
        return mask_visited(scores, ~mask[:, lo:hi]).argmax(1) + int(lo)


@dataclass
class MultiScaleRun:
    """Per image (rows) and glimpse (columns): the readout's correctness and the costs."""

    correct: torch.Tensor  # [N, T] bool
    actions: torch.Tensor  # [N, T] long
    costs: dict[str, torch.Tensor]  # each [N, T] long
    labels: torch.Tensor  # [N]


def run_multiscale(policy: MultiScalePolicy, bank: MultiScaleBank, glimpses: int, *,
                   batch: int = 1024, max_images: int | None = None,
                   device: str = "cpu") -> MultiScaleRun:
    """Play ``policy`` for ``glimpses`` on each image of ``bank`` once (the first
    ``max_images``); the last batch is padded with the first images and trimmed."""
    n = bank.num_images if max_images is None else min(max_images, bank.num_images)
    size = min(batch, n)
    envs = MultiScaleVectorEnv(size, bank, glimpses=glimpses, array_type="torch", copy=False,
                               device=device)
    correct, actions, labels = [], [], []
    costs: dict[str, list[torch.Tensor]] = {k: [] for k in COST_KEYS}
    for start in range(0, n, size):
        images = torch.arange(start, start + size) % n
        obs, info = envs.reset(options={"indices": images.numpy()})
        policy.begin(bank, images)
        step_correct, step_costs = [], {k: [] for k in COST_KEYS}
        for _ in range(glimpses):
            mask = info["action_mask"].bool()
            obs, _, _, _, info = envs.step(policy.act(obs, mask))
            step_correct.append(info["correct"].clone())
            for k in COST_KEYS:
                step_costs[k].append(info[k].clone())
        valid = min(size, n - start)
        correct.append(torch.stack(step_correct, 1)[:valid])
        actions.append(info["cells"][:valid].clone())
        labels.append(info["label"][:valid].clone())
        for k in COST_KEYS:
            costs[k].append(torch.stack(step_costs[k], 1)[:valid])
    return MultiScaleRun(torch.cat(correct).cpu(), torch.cat(actions).cpu(),
                         {k: torch.cat(v).cpu() for k, v in costs.items()},
                         torch.cat(labels).cpu())


def summarise_multiscale(run: MultiScaleRun) -> dict[str, Any]:
    """Error and mean costs (pixels, full-resolution pixels, FLOPs) at each T = 1..Tmax."""
    tmax = run.correct.shape[1]
    out: dict[str, Any] = {"error": {}, **{k: {} for k in COST_KEYS}}
    for t in range(1, tmax + 1):
        out["error"][t] = 1 - run.correct[:, t - 1].float().mean().item()
        for k in COST_KEYS:
            out[k][t] = run.costs[k][:, t - 1].double().mean().item()
    return out


__all__ = ["MultiScalePolicy", "MultiScaleRun", "OrderedLogitsAcross", "RandomLegal",
           "TNetPolicy", "run_multiscale", "summarise_multiscale"]
