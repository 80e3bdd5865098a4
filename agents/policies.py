"""The one interface every glimpse policy shares, and the non-learned policies.

A :class:`GlimpsePolicy` is driven by :func:`agents.evaluation.run_policy` through the native
vector env (torch arrays): ``begin(source, indices)`` announces a batch of episodes on the given
images, then ``act(obs, mask)`` is called once per glimpse and returns one cell per env. ``mask
[N, H*W] bool`` is True on the cells not glimpsed yet. A policy says which observation mode it
needs (``observation``) and which classifier the env should read its glimpses with (``head``:
None for BagNet's own logits).

Non-learned policies here: :class:`RandomPolicy`, :class:`CentrePolicy`,
:class:`OrderedLogitsPolicy`, and the oracle :class:`TrueLabelPolicy`; the full-image BagNet
(:data:`FULL_IMAGE`) is the reference row, not a glimpse policy. Trained agents:
:class:`SB3Policy` (PPO, MaskablePPO), :class:`SaccaderAgent`, and
:class:`agents.reinforce.ReinforceAgent`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.saccader import Saccader
from glimpse_gym.envs.source import GlimpseSource
from glimpse_gym.readout import class_scores, ordered_logit_scores
from glimpse_gym.rules import mask_visited

FULL_IMAGE = "full-image"  # the name of the upper-bound row in evaluations


class GlimpsePolicy:
    """Base class: override :meth:`act` (and :meth:`begin` for per-image state)."""

    name = "policy"
    observation = "full"
    head: tuple[np.ndarray, np.ndarray] | None = None

    def begin(self, source: GlimpseSource, indices: torch.Tensor) -> None:
        """A batch of episodes starts on images ``indices`` of ``source``."""

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """``[N]`` cells to glimpse (long)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _masked_argmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return mask_visited(scores, ~mask).argmax(dim=1)


class RandomPolicy(GlimpsePolicy):
    """Cells in a random order drawn for each image when its episode begins (uniformly among
    the cells not glimpsed yet at every step). The order does not depend on how many glimpses
    are taken, so T glimpses are the first T of any longer run with the same seed."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self._scores: torch.Tensor | None = None

    def begin(self, source: GlimpseSource, indices: torch.Tensor) -> None:
        cells = source.grid[0] * source.grid[1]
        self._scores = torch.rand((len(indices), cells), generator=self.generator)

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return _masked_argmax(self._scores.to(mask.device), mask)


class CentrePolicy(GlimpsePolicy):
    """The cells nearest the grid's centre first (ties in row-major order)."""

    name = "centre"

    def __init__(self) -> None:
        self._rank: torch.Tensor | None = None

    def begin(self, source: GlimpseSource, indices: torch.Tensor) -> None:
        h, w = source.grid
        rows, cols = np.divmod(np.arange(h * w), w)
        dist = (rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2
        order = np.lexsort((np.arange(h * w), dist))  # nearest first
        rank = np.empty(h * w)
        rank[order] = np.arange(h * w)
        self._rank = torch.as_tensor(-rank, dtype=torch.float32)  # higher = earlier

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return _masked_argmax(self._rank.to(mask.device).expand(mask.shape), mask)


class OrderedLogitsPolicy(GlimpsePolicy):
    """Elsayed et al.'s "ordered logits": the cells with the largest BagNet logit of the class
    the whole image predicts, best first (greedy, no learning; it reads the full image)."""

    name = "ordered-logits"

    def __init__(self) -> None:
        self._scores: torch.Tensor | None = None

    def begin(self, source: GlimpseSource, indices: torch.Tensor) -> None:
        self._scores = ordered_logit_scores(_logits(source, indices))

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return _masked_argmax(self._scores.to(mask.device), mask)


class TrueLabelPolicy(GlimpsePolicy):
    """An oracle: the cells with the largest BagNet logit of the image's true label, best
    first. It reads the label, so it is a reference for what ranking cells by this
    classifier's logits can reach, not a policy one could deploy."""

    name = "true-label"

    def __init__(self) -> None:
        self._scores: torch.Tensor | None = None

    def begin(self, source: GlimpseSource, indices: torch.Tensor) -> None:
        labels = torch.from_numpy(np.asarray(source.labels[indices.cpu().numpy()]))
        self._scores = class_scores(_logits(source, indices), labels)

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return _masked_argmax(self._scores.to(mask.device), mask)


def _logits(source: GlimpseSource, indices: torch.Tensor) -> torch.Tensor:
    """``[N, K, H, W]`` float32 BagNet logits of images ``indices``."""
    return torch.from_numpy(np.asarray(source.logits[indices.cpu().numpy()], dtype=np.float32))


class SB3Policy(GlimpsePolicy):
    """A (Maskable)PPO model, deterministic. ``observation`` must be the one it trained on."""

    def __init__(self, model: Any, name: str = "ppo", observation: str = "full") -> None:
        self.model, self.name, self.observation = model, name, observation
        self.maskable = "action_masks" in model.predict.__code__.co_varnames

    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        np_obs = {k: v.cpu().numpy() for k, v in obs.items()}
        kwargs = {"action_masks": mask.cpu().numpy()} if self.maskable else {}
        actions, _ = self.model.predict(np_obs, deterministic=True, **kwargs)
        return torch.as_tensor(np.asarray(actions), dtype=torch.long, device=mask.device)


class SaccaderAgent(GlimpsePolicy):
    """A trained :class:`~agents.saccader.Saccader`: argmax cells, its own classifier (or
    BagNet's logits with ``own_head=False``). The where network runs once per image."""

    def __init__(self, net: Saccader, name: str = "saccader", own_head: bool = True,
                 device: str | torch.device = "cpu") -> None:
        self.net, self.name, self.device = net.eval().to(device), name, torch.device(device)
        if own_head:
            weight, bias = net.head()
            self.head = (weight.numpy(), bias.numpy())
        self._mixed: torch.Tensor | None = None

    @torch.no_grad()
    def begin(self, source: GlimpseSource, indices: torch.Tensor) -> None:
        what = torch.from_numpy(np.asarray(source.features[indices.cpu().numpy()],
                                           dtype=np.float32)).to(self.device)
        self._mixed = self.net.mixed(what)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        state = (~mask).float().to(self.device)
        return self.net.location_logits(self._mixed, state).argmax(dim=1).to(mask.device)


__all__ = ["FULL_IMAGE", "CentrePolicy", "GlimpsePolicy", "OrderedLogitsPolicy",
           "RandomPolicy", "SB3Policy", "SaccaderAgent", "TrueLabelPolicy"]
