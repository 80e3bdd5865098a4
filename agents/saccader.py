"""The Saccader (Elsayed, Kornblith and Le, NeurIPS 2019) on a BagNet feature grid.

The network reads the whole what-feature grid ``[B, D, H, W]`` of an image (BagNet's
features, from a feature bank or a live BagNet) and picks cells one at a time:

- the *where* network: two groups of (1x1 conv, 3x3 conv with dilation 2), each conv followed
  by batch norm and ReLU;
- a 1x1 *mixing* conv over ``concat(where, what)`` gives the mixed features ``M [B, C, H, W]``;
- the *Saccader cell*, at each glimpse with cell state ``S`` (1 on the visited cells):
  spatial logits = (1x1 conv of M to one channel, no bias) / sqrt(C) - 1e5 S; their softmax over
  cells weights M into a channel summary whose softmax over channels gives channel weights;
  location logits = sum over channels of (M * channel weights) - 1e5 S. Visited cells are
  masked in both, so they can never win. Training samples a cell from the softmax of the
  location logits; evaluation takes the argmax;
- the *classifier*: a linear head on the what-features of the chosen cells (initialised from
  BagNet's own 1x1 head, so at first it reproduces BagNet's per-cell logits); the per-glimpse
  logits are averaged over the glimpses for the prediction.

``M`` does not depend on the cell state, so a T-glimpse rollout runs the conv nets once and the
cell T times. Training (:mod:`train.saccader`) follows the paper's three steps; the same network
is an SB3 policy in :mod:`agents.sb3_saccader`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glimpse_gym.errors import CheckpointError
from glimpse_gym.fileio import check_payload, load_payload
from glimpse_gym.rules import mask_visited

FORMAT = "glimpse-gym-saccader/1"  # checkpoints of ``glimpse train saccader``


@dataclass
class Rollout:
    """One batch of glimpse sequences.

    Attributes:
        cells: ``[B, T]`` chosen cells (row-major).
        log_probs: ``[B, T]`` log-probability of each choice under the policy.
        location_logits: ``[B, T, H*W]`` masked location logits at each glimpse.
        entropy: ``[B, T]`` entropy of each glimpse's distribution.
    """

    cells: torch.Tensor
    log_probs: torch.Tensor
    location_logits: torch.Tensor
    entropy: torch.Tensor


def roll(location_logits: Callable[[torch.Tensor], torch.Tensor], visited: torch.Tensor,
         glimpses: int, sample: bool, generator: torch.Generator | None = None,
         teacher: torch.Tensor | None = None) -> Rollout:
    """``glimpses`` choices from ``location_logits(visited)`` (masked logits ``[B, N]``),
    ``visited [B, N]`` (float or bool) updated after each: drawn from the softmax
    (``sample``), the argmax, or the ``teacher [B, T]``'s cells (see
    :meth:`Saccader.rollout`)."""
    cells, log_probs, logits_seq, entropy = [], [], [], []
    for t in range(glimpses):
        logits = location_logits(visited)
        log_p = logits.log_softmax(dim=1)
        if teacher is not None:
            cell = teacher[:, t]
        elif sample:
            cell = torch.multinomial(log_p.exp(), 1, generator=generator)[:, 0]
        else:
            cell = logits.argmax(dim=1)
        cells.append(cell)
        log_probs.append(log_p.gather(1, cell[:, None])[:, 0])
        entropy.append(-(log_p.exp() * log_p).sum(dim=1))
        logits_seq.append(logits)
        visited = visited.scatter(1, cell[:, None], True if visited.dtype == torch.bool else 1.0)
    return Rollout(torch.stack(cells, 1), torch.stack(log_probs, 1),
                   torch.stack(logits_seq, 1), torch.stack(entropy, 1))


def saccader_cell(mixed: torch.Tensor, state: torch.Tensor,
                  spatial_weight: torch.Tensor) -> torch.Tensor:
    """The Saccader cell on mixed features ``M [B, C, N]`` of ``N`` cells with ``state
    [B, N]`` (1 = masked: visited, or not to be chosen) and the spatial 1x1 conv's weight
    ``[1, C, ...]`` -> masked location logits ``[B, N]`` (see the module)."""
    state = state.to(mixed.dtype)
    spatial = mask_visited(F.conv1d(mixed, spatial_weight.reshape(1, -1, 1))[:, 0]
                           / math.sqrt(mixed.shape[1]), state)
    weights = spatial.softmax(dim=1)  # [B, N]
    channel = torch.einsum("bcn,bn->bc", mixed, weights).softmax(dim=1)  # [B, C]
    return mask_visited(torch.einsum("bcn,bc->bn", mixed, channel), state)


def where_network(feature_dim: int, channels: int) -> nn.Sequential:
    """The where network: two groups of (1x1 conv, 3x3 conv with dilation 2), each conv
    followed by batch norm and ReLU."""
    return nn.Sequential(*_where_group(feature_dim, channels), *_where_group(channels, channels))


def _where_group(c_in: int, channels: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU()]


class Saccader(nn.Module):
    """The Saccader network for a ``D``-channel what-feature grid and ``K`` classes.

    Args:
        feature_dim: D, channels of the what-features.
        num_classes: K.
        where_channels: width of the where network.
        mixed_channels: C, channels of the mixed features M.
        head: optional ``(weight [K, D], bias [K])`` to initialise the classifier with
            (BagNet's own head, e.g. a feature bank's ``head.npz``).

    >>> net = Saccader(feature_dim=8, num_classes=3, where_channels=16, mixed_channels=16)
    >>> grid = torch.randn(2, 8, 5, 5)
    >>> r = net.rollout(grid, glimpses=4, sample=False)
    >>> r.cells.shape, net.classify(grid, r.cells).shape
    (torch.Size([2, 4]), torch.Size([2, 4, 3]))
    >>> bool((r.cells.sort(dim=1).values.diff(dim=1) > 0).all())  # never the same cell twice
    True
    """

    def __init__(self, feature_dim: int, num_classes: int, where_channels: int = 64,
                 mixed_channels: int = 64,
                 head: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.feature_dim, self.num_classes = feature_dim, num_classes
        self.mixed_channels = mixed_channels
        self.where = where_network(feature_dim, where_channels)
        self.mix = nn.Conv2d(where_channels + feature_dim, mixed_channels, 1)
        self.spatial = nn.Conv2d(mixed_channels, 1, 1, bias=False)
        self.classifier = nn.Linear(feature_dim, num_classes)
        if head is not None:
            weight, bias = (torch.as_tensor(h, dtype=torch.float32) for h in head)
            with torch.no_grad():
                self.classifier.weight.copy_(weight)
                self.classifier.bias.copy_(bias)

    # ------------------------------------------------------------------ the policy
    def mixed(self, what: torch.Tensor) -> torch.Tensor:
        """``what [B, D, H, W]`` -> mixed features ``M [B, C, H*W]``."""
        m = self.mix(torch.cat([self.where(what), what], dim=1))
        return m.flatten(2)

    def location_logits(self, mixed: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The Saccader cell: ``M [B, C, H*W]``, ``state [B, H*W]`` (1 = visited) ->
        masked location logits ``[B, H*W]``."""
        return saccader_cell(mixed, state, self.spatial.weight)

    def rollout(self, what: torch.Tensor, glimpses: int, sample: bool,
                state: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                teacher: torch.Tensor | None = None) -> Rollout:
        """Run ``glimpses`` steps of the cell on ``what [B, D, H, W]``.

        ``sample``: draw each cell from the policy (training) or take the argmax
        (evaluation). ``state``: initial cell state (default: nothing visited).
        ``teacher [B, T]``: visit these cells instead (the state follows them; the log-probs
        and logits are those of the policy at each step), for step 2's supervised targets.
        """
        b, _, h, w = what.shape
        mixed = self.mixed(what)
        state = (torch.zeros(b, h * w, device=what.device) if state is None
                 else state.to(what.device, torch.float32).clone())
        return roll(lambda visited: self.location_logits(mixed, visited), state, glimpses,
                    sample, generator, teacher)

    # ------------------------------------------------------------------ the classifier
    def classify(self, what: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Per-glimpse class logits ``[B, T, K]``: the classifier on the cells' features."""
        b, d = what.shape[:2]
        feats = what.flatten(2).gather(2, cells[:, None, :].expand(-1, d, -1))  # [B, D, T]
        return self.classifier(feats.transpose(1, 2))

    def predict(self, what: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """``[B]`` predictions: argmax of the mean per-glimpse logits."""
        return self.classify(what, cells).mean(dim=1).argmax(dim=1)

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier as ``(weight [K, D], bias [K])`` (for ``Glimpse-v0``'s ``head=``)."""
        return (self.classifier.weight.detach().cpu().clone(),
                self.classifier.bias.detach().cpu().clone())

    def policy_parameters(self) -> list[nn.Parameter]:
        """The location network's parameters (everything but the classifier)."""
        return [p for n, p in self.named_parameters() if not n.startswith("classifier.")]


def load_saccader(path: str | Path, map_location: str | torch.device = "cpu"
                  ) -> tuple[Saccader, dict[str, Any]]:
    """A trained Saccader and its checkpoint dict (``glimpse-gym-saccader/1``, written by
    ``glimpse train saccader``), read with ``weights_only=True`` and its checksum checked.

    Raises:
        CheckpointError: naming the file, when it is missing, damaged or of another kind.
    """
    ckpt = load_payload(path, FORMAT, "Saccader", map_location)
    return build_from_checkpoint(Saccader, ckpt, path), ckpt


def saccader_from_payload(payload: dict[str, Any], path: str | Path
                          ) -> tuple[Saccader, dict[str, Any]]:
    """:func:`load_saccader` for a payload already read (``weights_only``) from ``path``."""
    ckpt = check_payload(payload, Path(path), FORMAT, "Saccader")
    return build_from_checkpoint(Saccader, ckpt, path), ckpt


def build_from_checkpoint(cls: type[nn.Module], ckpt: dict[str, Any],
                          path: str | Path) -> nn.Module:
    """``cls(**ckpt["net"])`` with ``ckpt["state_dict"]`` loaded; a checkpoint whose sizes or
    weights do not fit raises :class:`CheckpointError` naming ``path``."""
    try:
        net = cls(**ckpt["net"])
        net.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the network it describes cannot be rebuilt "
                              f"({type(exc).__name__}: {exc})") from None
    return net


__all__ = ["FORMAT", "Rollout", "Saccader", "build_from_checkpoint", "load_saccader",
           "roll", "saccader_cell", "saccader_from_payload", "where_network"]
