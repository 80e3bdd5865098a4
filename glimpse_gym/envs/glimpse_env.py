"""Glimpse-v0: classify an image from T glimpses at cells of its BagNet feature grid."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from glimpse_gym import rules
from glimpse_gym.envs.checks import (
    MAX_INDEX,
    check_can_step,
    check_env_args,
    check_head,
    check_index,
    check_seed,
)
from glimpse_gym.envs.kernels import float16_values
from glimpse_gym.envs.render import render_cells
from glimpse_gym.envs.source import GlimpseSource, load_source
from glimpse_gym.errors import ResetNeeded


class GlimpseEnv(gym.Env):
    """Hard-attention classification: look at T cells of an image's BagNet grid, then classify.

    Each episode is one image of the chosen split, drawn with the env's seeded generator
    (``reset(options={"index": i})`` picks image i). The env plays by :mod:`glimpse_gym.rules`
    (action check, episode schedule, readout, reward, coverage).
    A BagNet (run once per image, see feature banks) gives an ``H x W`` grid of cells; cell
    ``c = row * W + col`` sees the pixels ``[row*stride, row*stride + rf) x [col*stride,
    col*stride + rf)``. After T glimpses the image is classified as the argmax of the mean of
    the BagNet logits at the glimpsed cells (Elsayed et al. 2019, Saccader).

    ## Action space
    ``Discrete(H * W)``: the cell to glimpse next, row-major. Revisiting a cell is legal but
    brings nothing new (``info["action_mask"]`` marks the unvisited cells).

    ## Observation space
    ``Dict`` of flat vectors (flat so that Stable-Baselines3 takes them as they are):
    - ``features``: ``Box(H*W*D,) float32``, the what-feature grid channels-last, ``[H, W,
      D]`` flattened in C order (``obs["features"].reshape(H, W, D)``, see
      ``env.unwrapped.feature_shape``), so each cell's D features are contiguous: every cell
      (``full``) or the cells glimpsed so far, zeros elsewhere (``partial``);
    - ``visited``: ``Box(H*W,) int8``, 1 on the cells glimpsed so far, row-major like the
      actions (Saccader's cell state ``C``).

    The compact mode ``glimpses`` observes only what was glimpsed, as a sequence padded to T
    (under a kilobyte per env on an 11x11x32 grid, against 15.5 kB for the grid):
    - ``features``: ``Box(T*D,) float32``, ``[T, D]`` flattened (``.reshape(T, D)``): row t
      the features of glimpse t (a revisit fills its row too), zeros in the rows not filled
      yet;
    - ``cells``: ``Box(T,) int64``, glimpse t's cell, -1 where not filled yet;
    - ``valid``: ``Box(T,) int8``, 1 on the filled rows;
    - ``visited`` as above.

    The mode ``index`` observes the episode by reference, for agents that read the whole
    grid from the bank themselves (``agents.extractors``: ``bank=``):
    - ``index``: ``Box(1,) int64``, the image's row in the bank (``env.unwrapped.source``);
    - ``visited`` as above.

    ## Rewards
    0 on every step but the last; 1.0 on the last if the prediction is the label, else 0.0.
    The prediction is the argmax of the mean logits over the distinct cells glimpsed (a
    revisit counts once).

    ## Episode end
    ``terminated`` after exactly T glimpses; never truncated.

    ## Info
    ``label``, ``prediction`` and ``correct`` (from the cells so far), ``cells`` (tuple of the
    glimpsed cells), ``action_mask`` (``[H*W] int8``, 1 = unvisited), ``index`` (of the
    image); on the last step also ``coverage`` (fraction of image pixels inside the
    glimpses' receptive fields) and ``label_name`` / ``prediction_name`` (the class names
    the dataset gave, carried in the bank; ``env.unwrapped.class_names`` lists them).
    :meth:`action_masks` gives the mask as bool for MaskablePPO.

    ## Arguments
    - ``bank``: a feature bank directory; None uses the embedded digits BagNet's bank of
      ``dataset``/``split``, written to the user cache by the first make on a machine.
    - ``dataset``, ``split``, ``checkpoint``, ``seed``: the images when there is no bank;
      ``checkpoint`` is a path, ``"default"`` or a task's name (its shipped BagNet).
    - ``root``, ``data_options``, ``max_images``: where the dataset's files are, its options
      and an image limit, when there is no bank. The task ids (``Glimpse-ClutteredMNIST-v0``,
      ...; see :mod:`glimpse_gym.tasks`) set dataset, options and checkpoint; ``root`` is
      needed only by the first make of a split on a machine, which writes the cached bank.
    - ``glimpses``: T, glimpses per episode (default 6).
    - ``observation``: ``"full"`` (default), ``"partial"``, ``"glimpses"`` or ``"index"``.
    - ``head``: optional ``(weight [K, D], bias [K])`` classifier applied to the glimpsed
      features instead of the bank's own logits (e.g. a head fine-tuned by Saccader).
    - ``expect``: fields a bank must match, e.g. ``{"dataset": "cluttered-mnist",
      "model_hash": ...}``; a mismatch raises :class:`~glimpse_gym.errors.BankError`.
    - ``render_mode``: None or ``"rgb_array"``.

    Invalid actions raise :class:`~glimpse_gym.errors.InvalidAction`, stepping before reset
    or after the end raises :class:`~glimpse_gym.errors.ResetNeeded`; either leaves the state
    unchanged. Both are also Gymnasium's errors of the same names, and the env enforces
    reset-before-step itself (the id is registered with ``order_enforce=False``).

    ## Reset
    ``reset(seed=None, options=None)``: ``seed`` is None or an integer >= 0 (Python or
    numpy); ``options`` is None or ``{"index": i}``, an integer image index in ``[0, N)``.
    Anything else raises ``ValueError`` before the env (its generator too) changes.

    ## Copies
    ``copy.deepcopy`` and pickling give an env that continues exactly as the original (same
    episode, same stream of images); a pickle holds the bank's path (or the dataset
    settings), not its arrays, and reopens it.

    ## Example
    >>> import gymnasium as gym
    >>> import glimpse_gym
    >>> env = gym.make("Glimpse-v0", glimpses=3)
    >>> obs, info = env.reset(seed=0)
    >>> obs["features"].shape, obs["visited"].shape, env.action_space
    ((1600,), (100,), Discrete(100))
    >>> env.unwrapped.feature_shape  # (H, W, D)
    (10, 10, 16)
    >>> for cell in (44, 45, 55):
    ...     obs, reward, terminated, truncated, info = env.step(cell)
    >>> terminated, info["cells"], int(obs["visited"].sum()), reward == float(info["correct"])
    (True, (44, 45, 55), 3, True)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, bank: str | Path | None = None, *, dataset: str = "digits",
                 split: str = "train", checkpoint: str = "default", seed: int = 0,
                 root: str | Path | None = None, data_options: dict[str, Any] | None = None,
                 max_images: int | None = None, glimpses: int = 6, observation: str = "full",
                 head: tuple[np.ndarray, np.ndarray] | None = None,
                 expect: dict[str, Any] | None = None, render_mode: str | None = None) -> None:
        spec_bank = bank if bank is None or isinstance(bank, GlimpseSource) else str(bank)
        self._spec_kwargs = dict(bank=spec_bank, dataset=dataset, split=split,
                                 checkpoint=checkpoint, seed=seed, root=root,
                                 data_options=data_options, max_images=max_images,
                                 expect=expect)
        self.source: GlimpseSource = load_source(**self._spec_kwargs)
        h, w = self.source.grid
        self.num_cells = h * w
        self.glimpses = check_env_args(observation, render_mode, glimpses, self.num_cells,
                                      self.source.num_images)
        self.observation_mode = observation
        self.render_mode = render_mode
        self.head = None if head is None else check_head(head, self.source)
        self.feature_shape = (h, w, self.source.feature_dim)
        self.class_names = self.source.class_names
        self.action_space = spaces.Discrete(self.num_cells)
        self.observation_space = observation_space(self.source, observation, self.glimpses)
        self._index: int | None = None
        self._key: int | None = None  # episode k shows image rules.episode_image(key, k, N)
        self._episode = 0
        self._game: rules.Episode | None = None  # the episode's glimpses and readout
        self._bind_source()

    def _bind_source(self) -> None:
        """Plain-array views of the source (``[N, D, H*W]`` features, ``[N, K, H*W]`` logits;
        a memory map's rows read without its per-index overhead) and the partial mode's
        observation buffer, whose revealed rows are blanked at each reset."""
        n, d, cells = self.source.num_images, self.source.feature_dim, self.num_cells
        self._feature_bank = _by_image(self.source.features, n, d, cells)
        self._logit_bank = _by_image(self.source.logits, n, -1, cells)
        self._labels = np.asarray(self.source.labels)
        if self.observation_mode == "partial" and not hasattr(self, "_features"):
            self._features = np.zeros((cells, d), np.float32)
        if self.observation_mode == "glimpses" and not hasattr(self, "_features"):
            self._features = np.zeros((self.glimpses, d), np.float32)  # one row per slot

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        """Start an episode on a random image (or ``options={"index": i}``).

        ``seed`` and ``options`` are checked before anything changes: a ValueError leaves the
        env (its generator too) as it was.
        """
        seed = check_seed(seed)
        index = check_index(options, self.source.num_images)
        super().reset(seed=seed)
        n = self.source.num_images
        # a seed starts a new stream of images, with or without an index (as in the vector env)
        if seed is not None or self._key is None:
            self._key, self._episode = rules.draw_key(self.np_random), 0
        if index is None:
            index = rules.episode_image(self._key, self._episode, n)
            self._episode += 1
        if self.observation_mode == "partial" and self._game is not None:
            self._features[self._game.cells] = 0.0  # blank the last episode's revealed rows
        elif self.observation_mode == "glimpses":
            self._features[:] = 0.0
        self._index = index
        self._mask = np.ones(self.num_cells, np.int8)  # 1 - visited, kept in step
        self._image_features = self._feature_bank[index]  # [D, H*W] float16, a view
        if self.observation_mode == "full":  # [H*W, D] float32: one row per cell
            self._features = _float32_rows(self._image_features)
        if self.head is None:  # [K, H*W]: column c holds cell c's logits (a view)
            cell_logits = self._logit_bank[index]
        else:
            weight, bias = self.head
            cell_logits = (_float32_rows(self._image_features) @ weight.T + bias).T
        self._game = rules.Episode(cell_logits, int(self._labels[index]), self.glimpses)
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        """Glimpse at one cell; the episode ends after T glimpses."""
        check_can_step(self._index is not None, self._game is not None and self._game.done,
                       self.glimpses)
        cell = rules.check_action(action, self.num_cells)  # validate before changing anything
        slot = len(self._game.cells)
        if self._game.glimpse(cell):  # a revisit brings nothing new
            self._mask[cell] = 0
            if self.observation_mode == "partial":
                self._features[cell] = self._image_features[:, cell]
        if self.observation_mode == "glimpses":  # a revisit fills its slot too
            self._features[slot] = self._image_features[:, cell]
        return (self._observation(), self._game.reward(), self._game.done, False,
                self._info())

    def action_masks(self) -> np.ndarray:
        """``[H*W] bool``: True on the cells not glimpsed yet (for MaskablePPO)."""
        if self._game is None:
            return np.ones(self.num_cells, bool)
        return self._game.visited == 0

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the image with each glimpse's receptive field outlined and numbered."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'")
            return None
        if self._index is None:
            raise ResetNeeded("render() before reset(): there is no image yet")
        return render_cells(self.source, self._index, self._game.cells)

    # ------------------------------------------------------------------ helpers
    def _observation(self) -> dict[str, np.ndarray]:
        if self.observation_mode == "index":
            return {"index": np.array([self._index], np.int64),
                    "visited": self._game.visited.copy()}
        if self.observation_mode == "glimpses":  # slot t: glimpse t (revisits too)
            cells = np.full(self.glimpses, -1, np.int64)
            cells[:len(self._game.cells)] = self._game.cells
            return {"features": self._features.reshape(-1).copy(), "cells": cells,
                    "valid": (cells >= 0).astype(np.int8),
                    "visited": self._game.visited.copy()}
        return {"features": self._features.reshape(-1).copy(),
                "visited": self._game.visited.copy()}

    def _info(self) -> dict[str, Any]:
        game = self._game
        prediction = game.prediction
        info = {"index": self._index, "label": game.label, "prediction": prediction,
                "correct": prediction == game.label, "cells": tuple(game.cells),
                "action_mask": self._mask.copy()}
        if game.done:
            src = self.source
            info["coverage"] = rules.coverage(game.cells, src.grid, src.rf, src.stride,
                                              src.image_shape[1:])
            info["label_name"] = self.class_names[game.label]
            info["prediction_name"] = self.class_names[prediction]
        return info

    # pickling: keep the spec, not the arrays (a bank is re-opened, the default re-made)
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("source", "_feature_bank", "_logit_bank", "_labels", "_image_features"):
            state[key] = None
        if self._game is not None and self.head is None:  # a view into the bank: re-bound
            state["_game"] = copy.copy(self._game)
            state["_game"].cell_logits = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.source = load_source(**self._spec_kwargs)
        self._bind_source()
        if self._index is not None:  # views into the re-opened source
            self._image_features = self._feature_bank[self._index]
            if self.head is None:
                self._game.cell_logits = self._logit_bank[self._index]


def _by_image(array: Any, *shape: int) -> Any:
    """A bank array reshaped without a copy (a memory map as a plain array, so a row reads
    without the memory map's per-index overhead; a bank of parts part by part, a compact
    bank's decoding views as views)."""
    if isinstance(array, np.ndarray):
        return np.asarray(array).reshape(*shape)
    return array.reshape(*shape)


def _float32_rows(grid: np.ndarray) -> np.ndarray:
    """``[D, H*W]`` features (float16 or float32) -> contiguous ``[H*W, D] float32``."""
    if grid.dtype == np.float16:
        return float16_values().take(grid.view(np.uint16).T)
    return np.ascontiguousarray(grid.T, dtype=np.float32)


def observation_space(source: GlimpseSource, observation: str = "full",
                      glimpses: int = 6) -> spaces.Dict:
    """The observation space of a mode (``glimpses``: T, used by the ``glimpses`` mode).

    ``full`` and ``partial``: ``features: Box(H*W*D,) float32`` and ``visited: Box(H*W,)
    int8``. ``glimpses``: ``features: Box(T*D,) float32`` (``[T, D]`` flattened, row t:
    glimpse t's features),
    ``cells: Box(T,) int64`` (-1 in the slots not filled yet), ``valid: Box(T,) int8`` (1 on
    the filled slots) and ``visited``. ``index``: ``index: Box(1,) int64`` (the image's row
    in the bank, below 2**24) and ``visited``. Features are bounded by the bank's range and 0,
    the value of an unseen cell or empty slot."""
    low, high = source.feature_range
    d, (h, w) = source.feature_dim, source.grid
    low, high = min(0.0, low), max(0.0, high, low + 1e-6)
    visited = spaces.Box(0, 1, (h * w,), np.int8)
    if observation == "index":  # the same space for every split (the bound is fixed)
        return spaces.Dict({"index": spaces.Box(0, MAX_INDEX, (1,), np.int64),
                            "visited": visited})
    if observation == "glimpses":
        return spaces.Dict({
            "features": spaces.Box(low, high, (glimpses * d,), np.float32),
            "cells": spaces.Box(-1, h * w - 1, (glimpses,), np.int64),
            "valid": spaces.Box(0, 1, (glimpses,), np.int8),
            "visited": visited,
        })
    return spaces.Dict({"features": spaces.Box(low, high, (d * h * w,), np.float32),
                        "visited": visited})
