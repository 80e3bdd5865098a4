"""The native vector form of Glimpse-v0: N episodes advanced together as tensor operations.

Same dynamics, observations, rewards and infos as ``SyncVectorEnv`` of N ``GlimpseEnv``
seeded ``seed + i`` (a test checks it step for step), without a Python loop over envs: a step
is a handful of gathers and scatters on ``[N, ...]`` tensors, on the CPU or on CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from glimpse_gym.device import resolve_device
from glimpse_gym.envs.episodes import draw_key, episode_images
from glimpse_gym.envs.glimpse_env import OBSERVATION_MODES, check_head, observation_space
from glimpse_gym.envs.render import draw_glimpses
from glimpse_gym.envs.source import load_source
from glimpse_gym.errors import InvalidAction, ResetNeeded


class GlimpseVectorEnv(VectorEnv):
    """``num_envs`` Glimpse-v0 episodes at once (``gym.make_vec("Glimpse-v0", num_envs=N)``).

    Arguments are those of :class:`~glimpse_gym.envs.GlimpseEnv`, plus:

    - ``num_envs``: N.
    - ``device``: where the state lives (``"auto"``: CUDA when present). With
      ``array_type="numpy"`` (default) results come back as numpy arrays (on CPU without a
      copy); ``"torch"`` returns tensors on ``device``.
    - ``autoreset_mode``: ``"NextStep"`` (Gymnasium's default: the step after an episode
      ends resets that env and returns reward 0) or ``"SameStep"`` (the reset observation is
      returned with the final reward; the final observation is in ``info["final_obs"]``).
    - ``copy``: return copies of the observation buffers (default). With ``copy=False`` the
      arrays are views that the next ``step`` overwrites (like ``SyncVectorEnv(copy=False)``).
    - ``bank_dtype``: ``"float32"`` (default) holds the bank's features in memory as float32,
      so starting an episode is a plain copy; ``"float16"`` halves that memory (a 55,000-image
      11x11x32 bank: 426 MB instead of 852 MB) at the cost of a conversion per episode.

    Observations: ``features [N, H*W*D] float32`` (channels-last) and ``visited [N, H*W]
    int8``. Infos:
    ``label``, ``prediction``, ``correct``, ``coverage``, ``index`` ``[N]``, ``cells``
    ``[N, T]`` (-1 where not glimpsed yet), ``action_mask [N, H*W] int8``, each with its
    ``_key`` mask as in Gymnasium's vector infos. :meth:`action_masks` gives ``[N, H*W] bool``.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, bank: str | Path | None = None, *,
                 dataset: str = "digits", split: str = "train", checkpoint: str = "default",
                 seed: int = 0, glimpses: int = 6, observation: str = "full",
                 head: tuple[np.ndarray, np.ndarray] | None = None,
                 expect: dict[str, Any] | None = None, render_mode: str | None = None,
                 device: str = "cpu", array_type: str = "numpy",
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 copy: bool = True, bank_dtype: str = "float32") -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if observation not in OBSERVATION_MODES:
            raise ValueError(f"observation must be one of {OBSERVATION_MODES}, got {observation!r}")
        if array_type not in ("numpy", "torch"):
            raise ValueError(f"array_type must be 'numpy' or 'torch', got {array_type!r}")
        mode = AutoresetMode(autoreset_mode)
        if mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode must be NextStep or SameStep")
        self.device = resolve_device(device)
        self.source = load_source(bank, dataset=dataset, split=split, checkpoint=checkpoint,
                                  seed=seed, expect=expect)
        src = self.source
        h, w = src.grid
        self.num_envs, self.num_cells = num_envs, h * w
        if not isinstance(glimpses, (int, np.integer)) or not 1 <= glimpses <= self.num_cells:
            raise ValueError(f"glimpses must be an integer in [1, {self.num_cells}], got "
                             f"{glimpses!r}")
        self.glimpses, self.observation_mode = int(glimpses), observation
        self.render_mode, self.array_type, self.copy = render_mode, array_type, copy
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        d = src.feature_dim
        self.feature_shape = (h, w, d)
        self.single_observation_space = observation_space(src)
        self.single_action_space = spaces.Discrete(self.num_cells)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        dev = self.device
        # the bank in memory on the device, channels-last: [images, H*W, D] features (each
        # cell's contiguous) and [images, H*W, K] logits, so a glimpse is one row gather
        if bank_dtype not in ("float32", "float16"):
            raise ValueError(f"bank_dtype must be 'float32' or 'float16', got {bank_dtype!r}")
        self._bank = torch.from_numpy(np.array(src.features)).to(dev).flatten(2).transpose(
            1, 2).to(getattr(torch, bank_dtype)).contiguous()
        if head is not None:
            weight, bias = (torch.as_tensor(a).to(dev) for a in check_head(head, src))
            cell_logits = self._bank.float() @ weight.T + bias
        else:
            logits = torch.from_numpy(np.array(src.logits, dtype=np.float32)).to(dev)
            cell_logits = logits.flatten(2).transpose(1, 2)
        self._cell_logits = cell_logits.contiguous()  # [M, H*W, K]
        self._labels = torch.from_numpy(np.array(src.labels)).to(dev)
        self._cov = _CoverageTable(src.grid, src.rf, src.stride, src.image_shape[1:], dev)
        n = num_envs
        self._obs_features = torch.zeros((n, h * w, d), dtype=torch.float32, device=dev)
        self._staging = (torch.empty((n, h * w, d), dtype=self._bank.dtype, device=dev)
                         if observation == "full" else None)
        self._visited = torch.zeros((n, self.num_cells), dtype=torch.int8, device=dev)
        self._cells = torch.full((n, self.glimpses), -1, dtype=torch.long, device=dev)
        self._t = torch.zeros(n, dtype=torch.long, device=dev)
        self._logit_sum = torch.zeros((n, src.num_classes), dtype=torch.float64, device=dev)
        self._index = torch.zeros(n, dtype=torch.long, device=dev)
        self._keys = torch.zeros(n, dtype=torch.long, device=dev)
        self._episodes = torch.zeros(n, dtype=torch.long, device=dev)
        self._autoreset = torch.zeros(n, dtype=torch.bool, device=dev)
        self._arange = torch.arange(n, device=dev)
        self._env_cell0 = self._arange * self.num_cells  # flat offsets of env rows
        self._env_t0 = self._arange * self.glimpses
        self._env_labels = torch.zeros(n, dtype=torch.long, device=dev)
        self._started = False

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Reset all envs; ``seed`` (int: env i gets ``seed + i``, or a list) reseeds them.

        ``options={"indices": [...]}`` (one image index per env) starts each env on the given
        image instead, without advancing the envs' episode streams (for evaluating a policy
        on every image of a split exactly once).
        """
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        if seed is not None or not self._started:
            keys = []
            for s in seeds:
                rng, _ = seeding.np_random(s)
                keys.append(draw_key(rng))
            self._keys = torch.tensor(keys, dtype=torch.long, device=self.device)
            self._episodes.zero_()
        self._started = True
        images = None
        if options and "indices" in options:
            images = torch.as_tensor(np.asarray(options["indices"]), device=self.device).long()
            n = self.source.num_images
            if images.shape != (self.num_envs,) or bool(((images < 0) | (images >= n)).any()):
                raise ValueError(f"options['indices'] must hold {self.num_envs} image indices "
                                 f"in [0, {n}); got shape {tuple(images.shape)}")
        self._start_episodes(torch.ones(self.num_envs, dtype=torch.bool, device=self.device),
                             images)
        self._autoreset.zero_()
        return self._observation(), self._infos()

    def step(self, actions: Any) -> tuple[dict, Any, Any, Any, dict]:
        """Advance every env by one glimpse (or autoreset the envs whose episode ended)."""
        if not self._started:
            raise ResetNeeded("step() was called before reset(); call envs.reset() first")
        cell = self._check_actions(actions)  # [N]
        same_step = self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        resetting = self._autoreset  # NextStep: these envs reset now, ignoring their action
        # ---- glimpse, for every env at once (the resetting ones are overwritten below);
        # flat row indices and index_select/index_copy_ are the fast gathers on the CPU
        row = self._index * self.num_cells + cell  # the (image, cell) row of the bank
        newly = self._visited.view(-1).index_select(0, self._env_cell0 + cell) == 0
        self._visited.view(-1).index_fill_(0, self._env_cell0 + cell, 1)
        if self.observation_mode == "partial":  # reveal the cell (idempotent on a revisit)
            d = self._bank.shape[-1]
            self._obs_features.view(-1, d).index_copy_(
                0, self._env_cell0 + cell, self._bank.view(-1, d).index_select(0, row).float())
        self._cells.view(-1).index_copy_(
            0, self._env_t0 + self._t.clamp(max=self.glimpses - 1), cell)
        self._t += 1
        logits = self._cell_logits.view(-1, self._cell_logits.shape[-1]).index_select(0, row)
        self._logit_sum += torch.where(newly[:, None], logits.double(), 0.0)
        terminated = (self._t == self.glimpses) & ~resetting
        correct = self._logit_sum.argmax(dim=1) == self._env_labels
        rewards = (terminated & correct).double()
        # ---- autoreset
        final = {}
        if same_step and bool(terminated.any()):
            final = {"final_obs": self._final_observations(terminated),
                     "_final_obs": terminated.cpu().numpy(),
                     "final_info": self._infos(mask=terminated.cpu().numpy(),
                                               finished=terminated),
                     "_final_info": terminated.cpu().numpy()}
            self._start_episodes(terminated)
        if bool(resetting.any()):
            self._start_episodes(resetting)
        self._autoreset = terminated if not same_step else torch.zeros_like(terminated)
        infos = {**self._infos(finished=terminated if not same_step else None), **final}
        return (self._observation(), self._out(rewards), self._out(terminated),
                self._out(torch.zeros_like(terminated)), infos)

    def action_masks(self) -> np.ndarray:
        """``[N, H*W] bool``: True on the cells each env has not glimpsed yet."""
        return (self._visited == 0).cpu().numpy()

    def render(self) -> tuple[np.ndarray, ...] | None:
        """``rgb_array``: one picture per env (see :meth:`GlimpseEnv.render`)."""
        if self.render_mode != "rgb_array":
            return None
        if self.source.images is None:
            raise ValueError("this feature bank holds no images, so there is nothing to draw")
        boxes = self.source.cell_boxes()
        frames = []
        for i in range(self.num_envs):
            cells = [c for c in self._cells[i].tolist() if c >= 0]
            image = np.asarray(self.source.images[int(self._index[i])])
            frames.append(draw_glimpses(image, [tuple(boxes[c]) for c in cells]))
        return tuple(frames)

    # ------------------------------------------------------------------ helpers
    def _check_actions(self, actions: Any) -> torch.Tensor:
        a = actions if torch.is_tensor(actions) else np.asarray(actions)
        shape, dtype = tuple(a.shape), a.dtype
        integer = (not a.dtype.is_floating_point and a.dtype != torch.bool
                   and not a.dtype.is_complex) if torch.is_tensor(a) else \
            np.issubdtype(a.dtype, np.integer)
        if shape != (self.num_envs,) or not integer:
            raise InvalidAction(f"actions must be {self.num_envs} integer cell indices, shape "
                                f"({self.num_envs},); got shape {shape} dtype {dtype}")
        t = torch.as_tensor(a, device=self.device).long()
        bad = (t < 0) | (t >= self.num_cells)
        if bad.any():
            envs = self._arange[bad][:5].tolist()
            raise InvalidAction(f"actions out of range in envs {envs} (values "
                                f"{t[bad][:5].tolist()}); valid cells are 0 to "
                                f"{self.num_cells - 1} (row-major)")
        return t

    def _start_episodes(self, mask: torch.Tensor, images: torch.Tensor | None = None) -> None:
        idx = mask.nonzero()[:, 0]
        if self.observation_mode == "partial":  # blank only the cells the episode revealed
            env, cell = (self._visited[idx] != 0).nonzero(as_tuple=True)
            rows = idx[env] * self.num_cells + cell
            self._obs_features.view(-1, self._bank.shape[-1]).index_fill_(0, rows, 0.0)
        if images is None:
            images = episode_images(self._keys[idx], self._episodes[idx],
                                    self.source.num_images)
            self._episodes[idx] += 1
        self._index[idx] = images
        self._env_labels[idx] = self._labels[images]
        self._t[idx] = 0
        self._visited[idx] = 0
        self._cells[idx] = -1
        self._logit_sum[idx] = 0
        if self.observation_mode == "full":  # the bandwidth-bound part of this mode
            k = len(idx)
            if k == self.num_envs:  # every env starts (after reset, or in lockstep): one copy
                torch.index_select(self._bank, 0, images, out=self._staging)
                self._obs_features.copy_(self._staging)
            else:  # gather into a reused buffer (a fresh 60 MB one page-faults on every touch)
                staging = self._staging[:k]
                torch.index_select(self._bank, 0, images, out=staging)
                self._obs_features.index_copy_(0, idx, staging.float())  # no-op if float32

    def _observation(self) -> dict[str, Any]:
        obs = {"features": self._obs_features.view(self.num_envs, -1), "visited": self._visited}
        return {k: self._out(v, copy=self.copy) for k, v in obs.items()}

    def _final_observations(self, mask: torch.Tensor) -> np.ndarray:
        final = np.full(self.num_envs, None, dtype=object)
        feats = self._obs_features[mask].flatten(1).cpu().numpy()
        visited = self._visited[mask].cpu().numpy()
        for j, i in enumerate(mask.nonzero()[:, 0].tolist()):
            final[i] = {"features": feats[j], "visited": visited[j]}
        return final

    def _infos(self, mask: np.ndarray | None = None,
               finished: torch.Tensor | None = None) -> dict[str, Any]:
        """Vector infos of every env (``mask``: which envs the ``_key`` arrays mark).

        ``coverage`` is an end-of-episode fact: present (with ``_coverage`` marking them) for
        the envs in ``finished``, absent when none finished, as in ``SyncVectorEnv``.
        """
        label = self._env_labels
        prediction = torch.where(self._t > 0, self._logit_sum.argmax(dim=1), -1)
        values = {
            "index": self._index.clone(), "prediction": prediction,
            "label": label.clone(), "correct": prediction == label, "cells": self._cells.clone(),
            "action_mask": 1 - self._visited,
        }
        if mask is None:
            mask = np.ones(self.num_envs, bool)
        infos: dict[str, Any] = {}
        for key, value in values.items():
            infos[key] = self._out(value)
            infos[f"_{key}"] = mask.copy()
        if finished is not None and bool(finished.any()):
            coverage = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)
            coverage[finished] = self._cov.union(self._visited[finished])
            infos["coverage"] = self._out(coverage)
            infos["_coverage"] = finished.cpu().numpy() & mask
        return infos

    def _out(self, value: torch.Tensor, copy: bool = False) -> Any:
        if self.array_type == "torch":
            return value.clone() if copy else value
        array = value.detach().cpu().numpy()
        return array.copy() if copy and value.device.type == "cpu" else array


class _CoverageTable:
    """Exact union area of the glimpses' receptive fields, for many finished episodes at once.

    The edges of all receptive fields split each image axis into elementary bands, so the
    image is a grid of ``R x C`` elementary rectangles. Band r lies inside the fields of the
    cell rows ``A[:, r]`` (``A: [H, R]``), band c inside those of the cell columns
    ``B[:, c]`` (``B: [W, C]``); for an episode whose glimpsed cells are the 0/1 matrix
    ``M [H, W]``, rectangle (r, c) is covered iff ``(A^T M B)[r, c] > 0``. Two matrix
    products over the whole batch and a weighted sum of the rectangles' pixel areas give the
    covered area exactly.
    """

    def __init__(self, grid: tuple[int, int], rf: int, stride: int,
                 image_hw: tuple[int, int], device: torch.device) -> None:
        (h, w), (ih, iw) = grid, image_hw

        def bands(cells: int, size: int) -> tuple[np.ndarray, np.ndarray]:
            starts = np.arange(cells) * stride
            edges = np.unique(np.clip(np.concatenate([starts, starts + rf, [0, size]]), 0, size))
            lo, hi = edges[:-1], edges[1:]
            inside = (starts[:, None] <= lo[None, :]) & (hi[None, :] <= starts[:, None] + rf)
            return inside.astype(np.float32), np.diff(edges)

        rows, heights = bands(h, ih)
        cols, widths = bands(w, iw)
        self.grid = (h, w)
        self.rows = torch.as_tensor(rows, device=device)  # [H, R]
        self.cols = torch.as_tensor(cols, device=device)  # [W, C]
        area = np.outer(heights, widths).astype(np.float32).reshape(-1)
        self.area = torch.as_tensor(area, device=device)  # [R*C] pixels
        self.num_pixels = float(ih * iw)

    def union(self, visited: torch.Tensor) -> torch.Tensor:
        """``visited [B, H*W]`` (nonzero = glimpsed) -> covered fraction ``[B]`` float64."""
        b = visited.shape[0]
        h, w = self.grid
        m = (visited != 0).float().view(b, h, w)
        # [B, W, H] @ [H, R] -> [B, W, R]; then [B, R, W] @ [W, C] -> [B, R, C]
        m_rows = (m.transpose(1, 2).reshape(b * w, h) @ self.rows).view(b, w, -1)
        covered = (m_rows.transpose(1, 2) @ self.cols) > 0
        pixels = covered.flatten(1).float() @ self.area  # integers, exact in float32
        return pixels.double() / self.num_pixels


def make_vector_env(num_envs: int = 1, **kwargs: Any) -> GlimpseVectorEnv:
    """The ``vector_entry_point`` of Glimpse-v0."""
    return GlimpseVectorEnv(num_envs=num_envs, **kwargs)


__all__ = ["GlimpseVectorEnv", "make_vector_env"]
