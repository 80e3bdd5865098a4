"""The rules of the Glimpse environments, each stated once in plain code.

:class:`~glimpse_gym.envs.GlimpseEnv` plays by these functions. The native vector env has
fast forms of them (compiled loops in ``envs/kernels.py``, ``envs/episodes.py`` and
``envs/coverage.py``, and the tensor operations of ``envs/vector.py``), and
``tests/envs/test_rules.py`` checks every fast form against this module: change a rule here
and those tests fail until the fast forms follow.

The rules, for a grid of ``H x W`` cells (numbered row-major, ``c = row * W + col``):

- **action**: one integer cell index in ``[0, H*W)`` (:func:`check_action`); revisits are
  legal and bring nothing new.
- **episode schedule**: an env seeded with a generator draws one key (:func:`draw_key`);
  its k-th episode shows image :func:`episode_image` ``(key, k, N)``.
- **readout**: after the glimpses so far, the prediction is the first argmax of the sum of
  the logits of the distinct glimpsed cells (the mean, up to a positive factor), summed in
  float64 in glimpse order (:meth:`Episode.glimpse`, :func:`readout`).
- **reward**: 1.0 on the last glimpse when the prediction is the label, else 0.0
  (:func:`reward`); every episode lasts exactly T glimpses.
- **coverage**: the fraction of the image's pixels inside the union of the glimpsed cells'
  receptive fields (:func:`coverage`); cell ``(i, j)`` sees pixels ``[i*stride, i*stride +
  rf) x [j*stride, j*stride + rf)`` (:func:`receptive_field`).
- **masking constant**: a policy that must not revisit subtracts :data:`VISITED_PENALTY`
  from its logits on visited cells (:func:`mask_visited`), as the Saccader does.

Across scales (``MultiScale-v0``, :mod:`glimpse_gym.envs.multiscale_env`) the same episode
has a **prior**, the coarse level's vote counted once from the start (the readout is the
argmax of prior + the distinct opened cells' logits), and a glimpse at a cell that may not be
opened yet (its parent is closed) is **wasted**: it uses one of the T glimpses and reveals
nothing (:meth:`Episode.waste`). Its fast forms (``envs/multiscale_vector.py`` and its
compiled loops) are checked against the single env, which plays by this module, in
``tests/envs/test_multiscale_env.py``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding

from glimpse_gym.errors import InvalidAction

VISITED_PENALTY = 1e5
"""Subtracted from a policy's logits on visited cells (Elsayed et al. 2019): their
probability underflows to 0 and they never win an argmax."""


# ---------------------------------------------------------------------------------- action
def check_action(action: Any, num_cells: int) -> int:
    """The cell index of ``action``, or :class:`~glimpse_gym.errors.InvalidAction`.

    Valid: a Python or numpy integer (or a 0-d integer array) in ``[0, num_cells)``. Invalid:
    bools, floats (even whole ones), NaN, arrays with a shape, out-of-range or negative values.
    """
    if isinstance(action, (bool, np.bool_)):
        raise InvalidAction(f"action {action!r} is a bool; expected an integer cell index in "
                            f"[0, {num_cells}) (row-major)")
    if isinstance(action, (list, tuple)):
        raise InvalidAction(f"action {reprlib.repr(action)} is a {type(action).__name__}; "
                            f"expected one integer cell index in [0, {num_cells}) (row-major) "
                            "per step (a list of actions, one per env, is for the vector env, "
                            "gym.make_vec)")
    if isinstance(action, np.ndarray):
        if action.shape != () or not np.issubdtype(action.dtype, np.integer):
            raise InvalidAction(f"action is an array of shape {action.shape} and dtype "
                                f"{action.dtype}; expected one integer cell index in "
                                f"[0, {num_cells})")
        action = action.item()
    if not isinstance(action, (int, np.integer)):
        raise InvalidAction(f"action {action!r} of type {type(action).__name__} is not an "
                            f"integer; expected a cell index in [0, {num_cells}) (row-major)")
    cell = int(action)
    if not 0 <= cell < num_cells:
        raise InvalidAction(f"action {cell} is outside the grid; valid cells are 0 to "
                            f"{num_cells - 1} (row-major)")
    return cell


# -------------------------------------------------------------------------- episode schedule
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def draw_key(rng: np.random.Generator) -> int:
    """The episode key of a freshly seeded generator: a 63-bit integer."""
    return int(rng.integers(0, 1 << 63))


def seed_keys(seeds: Sequence[int | None], device: torch.device | str) -> torch.Tensor:
    """The episode keys of envs reset with ``seeds`` (None: fresh entropy), each drawn as a
    single env seeded the same way draws its own: a long tensor on ``device``."""
    keys = [draw_key(seeding.np_random(s)[0]) for s in seeds]
    return torch.tensor(keys, dtype=torch.long, device=device)


def episode_image(key: int, episode: int, num_images: int) -> int:
    """Image shown in episode ``episode`` (0, 1, ...) of an env with ``key``: SplitMix64 of
    ``key + (episode + 1) * golden``, shifted to 63 bits, modulo ``num_images``."""
    z = (key + (episode + 1) * GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    z ^= z >> 31
    return (z >> 1) % num_images


# ------------------------------------------------------------------------- readout, reward
def readout(logit_sum: np.ndarray) -> int:
    """The prediction from ``logit_sum [K]`` (the summed logits of the distinct glimpsed
    cells): its first argmax."""
    return int(np.argmax(logit_sum))


def reward(prediction: int, label: int) -> float:
    """The reward on the last glimpse: 1.0 for a right prediction, else 0.0."""
    return float(prediction == label)


class Episode:
    """One episode under the rules: the glimpses so far and what they add up to.

    Args:
        cell_logits: ``[K, H*W]`` logits of the image's cells (column ``c`` is cell ``c``).
        label: the image's class.
        glimpses: T, the episode's length.
        prior: ``[K]`` logits counted in the readout from the start (None: no prior, and no
            prediction before the first glimpse).
    """

    def __init__(self, cell_logits: np.ndarray, label: int, glimpses: int,
                 prior: np.ndarray | None = None) -> None:
        self.cell_logits, self.label, self.glimpses = cell_logits, label, glimpses
        self.cells: list[int] = []
        self.visited = np.zeros(cell_logits.shape[1], np.int8)  # 1 on glimpsed cells
        self.logit_sum = np.zeros(cell_logits.shape[0], np.float64)
        self.has_prior = prior is not None
        if prior is not None:
            self.logit_sum += prior

    def glimpse(self, cell: int) -> bool:
        """Glimpse at ``cell`` (checked by :func:`check_action`); True when it is new. A
        revisit adds nothing to the readout."""
        self.cells.append(cell)
        if self.visited[cell]:
            return False
        self.visited[cell] = 1
        self.logit_sum += self.cell_logits[:, cell]
        return True

    def waste(self, cell: int) -> None:
        """A glimpse that uses one of the T and reveals nothing (a cell not open to it)."""
        self.cells.append(cell)

    @property
    def prediction(self) -> int:
        """The readout of the glimpses so far (-1 before the first, unless there is a prior)."""
        return readout(self.logit_sum) if self.cells or self.has_prior else -1

    @property
    def done(self) -> bool:
        """True after T glimpses."""
        return len(self.cells) == self.glimpses

    def reward(self) -> float:
        """The step's reward: :func:`reward` on the last glimpse, 0.0 before it."""
        return reward(self.prediction, self.label) if self.done else 0.0


def predictions(cell_logits: np.ndarray, cells: Sequence[int]) -> list[int]:
    """The prediction after each glimpse of ``cells`` on an image with ``cell_logits
    [K, H*W]`` (what a fast form must reproduce step by step)."""
    episode = Episode(cell_logits, label=-1, glimpses=len(cells))
    out = []
    for cell in cells:
        episode.glimpse(int(cell))
        out.append(episode.prediction)
    return out


# --------------------------------------------------------------------------------- coverage
def receptive_field(cell: int, grid: tuple[int, int], rf: int,
                    stride: int) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` pixels seen by ``cell`` (bottom and right exclusive)."""
    row, col = divmod(cell, grid[1])
    return row * stride, col * stride, row * stride + rf, col * stride + rf


def coverage(cells: Sequence[int], grid: tuple[int, int], rf: int, stride: int,
             image_hw: tuple[int, int]) -> float:
    """Fraction of the ``image_hw`` pixels inside the union of the cells' receptive fields
    (revisits count once)."""
    covered = np.zeros(image_hw, dtype=bool)
    for cell in cells:
        top, left, bottom, right = receptive_field(int(cell), grid, rf, stride)
        covered[top:bottom, left:right] = True
    return float(covered.mean())


# --------------------------------------------------------------------------------- masking
def mask_visited(logits: torch.Tensor, visited: torch.Tensor) -> torch.Tensor:
    """``logits [B, H*W]`` with :data:`VISITED_PENALTY` subtracted where ``visited [B, H*W]``
    (0/1 or bool) is set."""
    return logits - VISITED_PENALTY * visited.to(logits.dtype)


__all__ = ["VISITED_PENALTY", "Episode", "check_action", "coverage", "draw_key",
           "episode_image", "mask_visited", "predictions", "readout", "receptive_field",
           "reward"]
