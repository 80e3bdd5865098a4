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
    """A (Maskable)PPO model (or its policy), deterministic. ``observation``: the mode it
    trained on, or ``full`` for one trained by reference (``index``)."""

    def __init__(self, model: Any, name: str = "ppo", observation: str = "full") -> None:
        self.model, self.name, self.observation = model, name, observation
        self.maskable = "action_masks" in model.predict.__code__.co_varnames

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """The deterministic action straight from the policy network on the tensors: what
        ``predict`` computes, without its check of the observation against the space the
        policy trained with (which would reject a glimpse sequence longer than its T, or
        the full grids handed to a policy trained by reference: both extractors read
        them)."""
        policy = getattr(self.model, "policy", self.model)
        policy.set_training_mode(False)
        tensors = {k: v.to(policy.device) for k, v in obs.items()}
        masks = mask.cpu().numpy()
        if set(tensors) == set(policy.observation_space.spaces):
            kwargs = {"action_masks": masks} if self.maskable else {}
            actions = policy._predict(tensors, deterministic=True, **kwargs)
        else:  # full grids for a policy trained by reference: SB3's preprocessing would
            # look up each key in the training space; for Box spaces it is a float cast
            features = policy.pi_features_extractor({k: v.float() for k, v in tensors.items()})
            dist = policy._get_action_dist_from_latent(policy.mlp_extractor.forward_actor(
                features))
            if self.maskable:
                dist.apply_masking(masks)
            actions = dist.get_actions(deterministic=True)
        return actions.long().to(mask.device)


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
