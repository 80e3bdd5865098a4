"""MultiScale-v0: glimpses across scales, TNet's hard attention as a Gymnasium environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from glimpse_gym import rules
from glimpse_gym.envs.checks import RENDER_MODES, check_can_step, check_index, check_seed
from glimpse_gym.envs.kernels import float16_values
from glimpse_gym.envs.multiscale_source import task_multiscale_bank
from glimpse_gym.envs.render import draw_glimpses
from glimpse_gym.errors import ResetNeeded
from glimpse_gym.multiscale import MultiScaleBank

MULTISCALE_MODES = ("partial", "glimpses")


class MultiScaleEnv(gym.Env):
    """Classify an image by opening cells across scales: the coarse level first, then finer
    cells inside the ones already open (Papadopoulos et al. 2021, TNet).

    The env reads a multi-scale bank (:mod:`glimpse_gym.multiscale`, ``glimpse
    extract-features --scales``): level 0, the whole image at the coarsest scale, is
    processed at reset and observed in full; every finer level's cell is an action. A cell of
    level 1 may be opened at any time (its parent, at level 0, is open from the start); a
    cell of level ``l > 1`` once its parent at level ``l - 1`` is open. After T glimpses the
    image is classified from the coarse level's vote and the opened cells.

    ## Action space
    ``Discrete(A)``: the cells of levels 1, 2, ... numbered level after level, row-major in
    each (``env.unwrapped.action_level`` and ``action_cell`` give an action's level and cell;
    ``offsets[l - 1]`` is the first action of level ``l``). A cell whose parent is not open
    yet is a wasted glimpse: it uses one of the T and reveals nothing. A cell already open is
    a revisit: it costs nothing and adds nothing to the readout, and its features are shown
    again (in the ``glimpses`` mode, in its slot). ``info["action_mask"]`` marks the cells
    that may be opened, new ones under open parents; :meth:`action_masks` gives it as bool for
    MaskablePPO.

    ## Observation space
    ``Dict`` of flat vectors, features channels-last:
    - ``coarse``: ``Box(H0*W0*D,) float32``, level 0's grid ``[H0, W0, D]`` flattened;
    - ``visited``: ``Box(A,) int8``, 1 on the opened cells;
    - ``partial`` (default): ``features``: ``Box(A*D,) float32``, ``[A, D]`` flattened: row
      ``a`` holds action ``a``'s cell features once opened, zeros before;
    - ``glimpses``: ``features``: ``Box(T*D,) float32``, row t the features of glimpse t
      (zeros for a wasted glimpse and the slots not filled yet); ``cells``: ``Box(T,) int64``,
      glimpse t's action (-1 not yet); ``valid``: ``Box(T,) int8``, 1 where row t holds a
      cell's features.

    ## Rewards and episode end
    0 on every step but the last; 1.0 on the last if the prediction is the label. The
    prediction is the argmax of the coarse level's image logits (the mean of its cells'
    logits, counted once) plus the logits of every distinct opened cell: TNet's average of
    its feature vectors, read by the BagNet's linear head (each level's own BagNet's where the
    levels have their own). ``terminated`` after exactly T
    glimpses; never truncated.

    ## Info
    ``index``, ``label``, ``prediction`` and ``correct`` (from the glimpses so far, the coarse
    vote alone at reset), ``cells`` (the actions so far), ``action_mask`` (``[A] int8``, 1 =
    may be opened) and the episode's cost so far: ``pixels`` (every pixel the BagNet
    processed, each at its level's resolution: level 0's whole image at reset, then an
    ``rf x rf`` patch per opened cell), ``full_resolution_pixels`` (those of the finest
    level's opened cells) and ``flops`` (the BagNet's FLOPs: level 0's pass, then one
    receptive-field-sized patch per opened cell). On the last step also ``coverage`` (the
    fraction of the image inside the union of the opened finest-level cells' receptive
    fields), ``glimpse_levels``, ``label_name`` and ``prediction_name``.

    ## Arguments
    ``bank`` (a multi-scale bank directory or a loaded :class:`MultiScaleBank`), or ``task``
    (a standard task with a shipped BagNet across scales, as the ``MultiScale-<Task>-v0`` ids
    set it) with ``split``, ``root`` (the dataset's files, needed by the first make of a split,
    which writes its bank into the user cache) and ``max_images``;
    ``glimpses`` (T, default 5), ``observation`` (``"partial"`` or ``"glimpses"``),
    ``render_mode`` (None or ``"rgb_array"``). Reset, seeding, errors, copies and pickling
    behave as ``Glimpse-v0``'s (:class:`~glimpse_gym.envs.GlimpseEnv`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, bank: str | Path | MultiScaleBank | None = None, *,
                 task: str | None = None, split: str = "train", root: str | Path | None = None,
                 max_images: int | None = None, glimpses: int = 5,
                 observation: str = "partial", render_mode: str | None = None) -> None:
        if bank is None and task is None:
            raise ValueError("MultiScale-v0 needs bank=, a multi-scale bank (glimpse "
                             "extract-features --scales ...), or task= (a standard task's)")
        if bank is None:
            bank = task_multiscale_bank(task, split, None if root is None else str(root),
                                        max_images)
        self.bank = bank if isinstance(bank, MultiScaleBank) else MultiScaleBank.load(bank)
        self._init_kwargs = dict(bank=str(self.bank.path), glimpses=glimpses,
                                 observation=observation, render_mode=render_mode)
        if observation not in MULTISCALE_MODES:
            raise ValueError(f"observation must be one of {MULTISCALE_MODES}, got "
                             f"{observation!r}")
        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        coarse, *levels = self.bank.levels
        sizes = [lv.num_cells for lv in levels]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_actions = int(self.offsets[-1])
        if (isinstance(glimpses, (bool, np.bool_)) or not isinstance(glimpses, (int, np.integer))
                or not 1 <= glimpses <= self.num_actions):
            raise ValueError(f"glimpses must be an integer in [1, {self.num_actions}], got "
                             f"{glimpses!r}")
        self.glimpses, self.observation_mode, self.render_mode = int(glimpses), observation, \
            render_mode
        self.action_level = np.repeat(np.arange(1, len(levels) + 1), sizes)
        self.action_cell = np.concatenate([np.arange(n) for n in sizes])
        # each action's parent action (-1: a level-1 cell, whose parent is open from the start)
        self.parent_action = np.concatenate(
            [np.full(sizes[0], -1)] + [self.offsets[i - 1] + lv.parent
                                       for i, lv in enumerate(levels[1:], 1)]).astype(np.int64)
        self.boxes = np.concatenate([lv.boxes for lv in levels])  # full-resolution pixels
        finest = len(levels)
        rf = np.array([lv.bank.rf for lv in levels])
        self._pixels = np.repeat(rf * rf, sizes)
        self._full_pixels = np.where(self.action_level == finest, self._pixels, 0)
        self._flops = np.repeat([lv.flops_cell for lv in levels], sizes)
        self._reset_pixels = int(np.prod(coarse.bank.meta["image_shape"][1:]))
        self._reset_flops = coarse.flops_image
        d = coarse.bank.features.shape[1]
        self.feature_dim, self.coarse_shape = d, (*coarse.grid, d)
        self.class_names = coarse.bank.meta["dataset"]["class_names"]
        self.action_space = spaces.Discrete(self.num_actions)
        self.observation_space = self._space()
        self._index: int | None = None
        self._key: int | None = None
        self._episode = 0
        self._game: rules.Episode | None = None

    def _space(self) -> spaces.Dict:
        lows, highs = zip(*(lv.bank.feature_range for lv in self.bank.levels), strict=True)
        low, high = min(0.0, *lows), max(0.0, *highs)
        box = lambda n: spaces.Box(low, high, (n,), np.float32)  # noqa: E731
        d, t, a = self.feature_dim, self.glimpses, self.num_actions
        obs = {"coarse": box(int(np.prod(self.coarse_shape))),
               "visited": spaces.Box(0, 1, (a,), np.int8)}
        if self.observation_mode == "partial":
            obs["features"] = box(a * d)
        else:
            obs.update(features=box(t * d), cells=spaces.Box(-1, a - 1, (t,), np.int64),
                       valid=spaces.Box(0, 1, (t,), np.int8))
        return spaces.Dict(obs)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        """Start an episode on a random image (or ``options={"index": i}``): level 0 is
        processed and observed."""
        seed = check_seed(seed)
        n = self.bank.num_images
        index = check_index(options, n)
        super().reset(seed=seed)
        # a seed starts a new stream of images, with or without an index (as in the vector env)
        if seed is not None or self._key is None:
            self._key, self._episode = rules.draw_key(self.np_random), 0
        if index is None:
            index = rules.episode_image(self._key, self._episode, n)
            self._episode += 1
        self._index = index
        coarse, *levels = self.bank.levels
        k = coarse.bank.num_classes
        self._coarse = _rows(coarse.bank.features[index].reshape(self.feature_dim, -1))
        prior = coarse.bank.logits[index].reshape(k, -1).mean(1, dtype=np.float64)
        cell_logits = np.concatenate([lv.bank.logits[index].reshape(k, -1) for lv in levels],
                                     axis=1)
        self._game = rules.Episode(cell_logits, int(self.bank.labels[index]), self.glimpses,
                                   prior=prior)
        rows = self.num_actions if self.observation_mode == "partial" else self.glimpses
        self._features = np.zeros((rows, self.feature_dim), np.float32)
        self._valid = np.zeros(self.glimpses, np.int8)
        self._cost = np.array([self._reset_pixels, 0, self._reset_flops], np.int64)
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        """Open one cell (or waste the glimpse); the episode ends after T glimpses."""
        check_can_step(self._index is not None, self._game is not None and self._game.done,
                       self.glimpses)
        a = rules.check_action(action, self.num_actions)
        slot = len(self._game.cells)
        if not self._open_to(a):
            self._game.waste(a)
        else:
            if self._game.glimpse(a):  # a new cell: processed and paid for
                self._cost += (self._pixels[a], self._full_pixels[a], self._flops[a])
            features = self._cell_features(a)
            if self.observation_mode == "partial":
                self._features[a] = features
            else:
                self._features[slot], self._valid[slot] = features, 1
        return (self._observation(), self._game.reward(), self._game.done, False,
                self._info())

    def _open_to(self, a: int) -> bool:
        """Whether action ``a`` may be opened: its parent is open (or it is on level 1)."""
        p = self.parent_action[a]
        return p < 0 or bool(self._game.visited[p])

    def _cell_features(self, a: int) -> np.ndarray:
        level = self.bank.levels[self.action_level[a]]
        row, col = divmod(int(self.action_cell[a]), level.grid[1])
        return level.bank.features[self._index, :, row, col].astype(np.float32)

    def action_masks(self) -> np.ndarray:
        """``[A] bool``: True on the cells that may be opened now (for MaskablePPO)."""
        if self._game is None:
            return self.parent_action < 0
        visited = self._game.visited.astype(bool)
        parent_open = np.ones(self.num_actions, bool)
        has_parent = self.parent_action >= 0
        parent_open[has_parent] = visited[self.parent_action[has_parent]]
        return parent_open & ~visited

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the image with the opened cells' receptive fields outlined and
        numbered in order (a coarse cell's box is larger than a fine one's)."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'")
            return None
        if self._index is None:
            raise ResetNeeded("render() before reset(): there is no image yet")
        return render_opened(self.bank, self.boxes, self._index, self._game.cells,
                             self._game.visited)

    # ------------------------------------------------------------------ helpers
    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"coarse": self._coarse.reshape(-1).copy(),
               "features": self._features.reshape(-1).copy(),
               "visited": self._game.visited.copy()}
        if self.observation_mode == "glimpses":
            cells = np.full(self.glimpses, -1, np.int64)
            cells[:len(self._game.cells)] = self._game.cells
            obs.update(cells=cells, valid=self._valid.copy())
        return obs

    def _info(self) -> dict[str, Any]:
        game = self._game
        prediction = game.prediction
        info = {"index": self._index, "label": game.label, "prediction": prediction,
                "correct": prediction == game.label, "cells": tuple(game.cells),
                "action_mask": self.action_masks().astype(np.int8),
                "pixels": int(self._cost[0]), "full_resolution_pixels": int(self._cost[1]),
                "flops": int(self._cost[2])}
        if game.done:
            info["coverage"] = self._coverage()
            info["glimpse_levels"] = tuple(int(self.action_level[a]) for a in game.cells)
            info["label_name"] = self.class_names[game.label]
            info["prediction_name"] = self.class_names[prediction]
        return info

    def _coverage(self) -> float:
        h, w = self.bank.image_shape[1:]
        covered = np.zeros((h, w), bool)
        finest = len(self.bank.levels) - 1
        for a in np.flatnonzero(self._game.visited):
            if self.action_level[a] == finest:
                top, left, bottom, right = (int(round(v)) for v in self.boxes[a])
                covered[top:bottom, left:right] = True
        return float(covered.mean())

    # copies and pickles keep the constructor's arguments and the episode; the bank reopens
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["bank"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.bank = MultiScaleBank.load(self._init_kwargs["bank"])


def render_opened(bank: MultiScaleBank, boxes: np.ndarray, index: int, cells: Any,
                  visited: np.ndarray) -> np.ndarray:
    """Image ``index`` with the receptive fields (``boxes`` of the actions, full-resolution
    pixels) of the opened ones among ``cells`` outlined and numbered in order of opening."""
    images = bank.levels[-1].bank.images
    if images is None:
        raise ValueError("this multi-scale bank holds no images (extracted with "
                         "--no-store-images), so there is nothing to draw")
    opened = dict.fromkeys(int(a) for a in cells if a >= 0 and visited[a])
    return draw_glimpses(np.asarray(images[index]),
                         [tuple(int(round(v)) for v in boxes[a]) for a in opened])


def _rows(grid: np.ndarray) -> np.ndarray:
    """``[D, cells]`` features (float16 or float32) -> contiguous ``[cells, D] float32``."""
    if grid.dtype == np.float16:
        return float16_values().take(np.ascontiguousarray(grid).view(np.uint16).T)
    return np.ascontiguousarray(grid.T, dtype=np.float32)


__all__ = ["MULTISCALE_MODES", "MultiScaleEnv", "render_opened"]
