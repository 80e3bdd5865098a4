"""The native vector form of Glimpse-v0: N episodes advanced together as tensor operations.

Its step, readout, coverage and episode schedule are fast forms of :mod:`glimpse_gym.rules`,
tested against it in ``tests/envs/test_rules.py``.

Same dynamics, observations, rewards and infos as ``SyncVectorEnv`` of N ``GlimpseEnv``
seeded ``seed + i`` (a test checks it step for step), without a Python loop over envs: a step
is a few gathers and scatters on ``[N, ...]`` tensors (both CPU threads, or CUDA) and, on the
CPU, one compiled pass over the envs for the small per-env state (:mod:`.kernels`; on CUDA
the same as tensor operations). Every episode lasts exactly T glimpses and ``reset`` starts
all envs together, so the envs run in lockstep: the glimpse counter is one Python int, every
env ends on the same step, and the next step (or the same one, with ``SameStep``) starts N
new episodes at once. The bank tables, the outputs and the copies live in :mod:`.tables`,
:mod:`.outputs` and :mod:`.copies`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from glimpse_gym.device import resolve_device
from glimpse_gym.envs import kernels
from glimpse_gym.envs.checks import (
    check_actions,
    check_env_args,
    check_head,
    check_vector_args,
    raise_out_of_range,
)
from glimpse_gym.envs.copies import CopyByRebuild, Recycler
from glimpse_gym.envs.coverage import CoverageTable
from glimpse_gym.envs.episodes import episode_images
from glimpse_gym.envs.glimpse_env import observation_space
from glimpse_gym.envs.memory import large_empty
from glimpse_gym.envs.outputs import VectorOutputs
from glimpse_gym.envs.render import render_cells
from glimpse_gym.envs.source import load_source
from glimpse_gym.envs.tables import HostViews, bank_tables, hold_in_memory, mapped_tables, wide
from glimpse_gym.errors import ResetNeeded


class GlimpseVectorEnv(CopyByRebuild, VectorOutputs, VectorEnv):
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
      arrays are views that the next ``step`` overwrites (like ``SyncVectorEnv(copy=False)``),
      and so are ``info["cells"]`` and ``info["action_mask"]`` except on the step that ends
      the episodes.
    - ``bank_dtype``: ``"float32"`` (default) holds the bank's features in memory as float32,
      so starting an episode is a plain copy; ``"float16"`` halves that memory (a 55,000-image
      11x11x32 bank: 426 MB instead of 852 MB) at the cost of a conversion per episode.
    - ``in_memory``: hold the bank in memory as above (``True``; a :class:`MemoryError` if
      its tables take more than half the free memory), or read each step's cells from the
      bank's memory-mapped files (``False``; for a bank larger than memory: a bank written
      ``--channels-last`` reads one page per glimpse). Default ``None``: in memory when it
      fits, so (always on CUDA). ``envs.in_memory`` says which.

    Observations: those of the single env, batched (``full``/``partial``: ``features [N,
    H*W*D] float32`` channels-last and ``visited [N, H*W] int8``; ``glimpses`` adds ``cells``
    and ``valid [N, T]`` to ``features [N, T*D]``; ``index``: ``index [N, 1]``). Infos:
    ``label``, ``prediction``, ``correct``, ``coverage``, ``index`` ``[N]``, ``cells``
    ``[N, T]`` (-1 where not glimpsed yet), ``action_mask [N, H*W] int8``, and at the end of
    the episodes ``label_name`` / ``prediction_name`` (object arrays of class names), each with its
    ``_key`` mask as in Gymnasium's vector infos. :meth:`action_masks` gives ``[N, H*W] bool``.

    ``reset(seed=None, options=None)``: ``seed`` is None, an integer >= 0 (Python or numpy;
    env i gets ``seed + i``) or a sequence of N such seeds (or None); ``options`` is None or
    ``{"indices": [...]}``, N integer indices of the split's M images, in ``[0, M)``.
    Anything else raises ``ValueError`` before the envs change. ``render_mode`` is None or
    ``"rgb_array"``.
    Actions that are not N integer cell indices (ragged lists, floats, bools, out of range)
    raise :class:`~glimpse_gym.errors.InvalidAction` and leave the state unchanged.

    ``copy.deepcopy`` and pickling give an env that continues exactly as the original: the
    copy is built anew from the constructor's arguments (a bank is reopened from its path)
    and takes over the episodes' state.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, bank: str | Path | None = None, *,
                 dataset: str = "digits", split: str = "train", checkpoint: str = "default",
                 seed: int = 0, root: str | Path | None = None,
                 data_options: dict[str, Any] | None = None, max_images: int | None = None,
                 glimpses: int = 6, observation: str = "full",
                 head: tuple[np.ndarray, np.ndarray] | None = None,
                 expect: dict[str, Any] | None = None, render_mode: str | None = None,
                 device: str = "cpu", array_type: str = "numpy",
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 copy: bool = True, bank_dtype: str = "float32",
                 in_memory: bool | None = None) -> None:
        mode = check_vector_args(num_envs, array_type, autoreset_mode)
        self.device = resolve_device(device)
        # what a copy re-runs __init__ with (see __getstate__): a bank by its path
        self._init_kwargs = dict(
            num_envs=num_envs,
            bank=str(Path(bank).expanduser().resolve()) if isinstance(bank, (str, Path)) else bank,
            dataset=dataset, split=split, checkpoint=checkpoint, seed=seed, root=root,
            data_options=data_options, max_images=max_images, glimpses=glimpses,
            observation=observation, head=head, expect=expect, render_mode=render_mode,
            device=str(self.device), array_type=array_type, autoreset_mode=mode, copy=copy,
            bank_dtype=bank_dtype, in_memory=in_memory)
        self.source = load_source(bank, dataset=dataset, split=split, checkpoint=checkpoint,
                                  seed=seed, root=root, data_options=data_options,
                                  max_images=max_images, expect=expect)
        src = self.source
        h, w = src.grid
        self.num_envs, self.num_cells = num_envs, h * w
        self.glimpses = check_env_args(observation, render_mode, glimpses, self.num_cells,
                                      self.source.num_images)
        self.observation_mode = observation
        self.render_mode, self.array_type, self.copy = render_mode, array_type, copy
        self._recycler = Recycler()  # the buffers of copy=True's copies
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        d = src.feature_dim
        self.feature_shape = (h, w, d)
        self.class_names = src.class_names
        self._class_names = np.array(src.class_names, dtype=object)  # names[labels]: [N]
        self.single_observation_space = observation_space(src, observation, self.glimpses)
        self.single_action_space = spaces.Discrete(self.num_cells)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        dev = self.device
        if bank_dtype not in ("float32", "float16"):
            raise ValueError(f"bank_dtype must be 'float32' or 'float16', got {bank_dtype!r}")
        head = None if head is None else check_head(head, src)
        self.in_memory = hold_in_memory(src, observation, bank_dtype, in_memory, dev)
        self._bank, self._rows, self._logit_offset = (
            bank_tables(src, observation, bank_dtype, head, dev) if self.in_memory
            else mapped_tables(src, observation, head, dev))
        self._labels = torch.from_numpy(np.array(src.labels)).to(dev)
        self._cov = CoverageTable(src.grid, src.rf, src.stride, src.image_shape[1:], dev)
        n = num_envs
        # the observed features: [N, H*W, D] (full, partial) or [N, T, D] (glimpses: one
        # row per glimpse slot); `valid` marks the filled slots (kept in every mode: small)
        # (none in the index mode, which observes each env's image row, `_obs_index`)
        rows = {"glimpses": self.glimpses, "index": 0}.get(observation, h * w)
        self._obs_features = large_empty((n, rows, d), torch.float32, dev).zero_()
        self._obs_valid = torch.zeros((n, self.glimpses), dtype=torch.int8, device=dev)
        self._obs_index = torch.zeros((n, 1), dtype=torch.long, device=dev)
        # one row per (env, cell or slot): float32 for a glimpse's scatter (4096 rows of 32
        # values are enough elements for torch to split the copy over two threads; as 8 wide
        # elements they are not), wide for the reset's blanking of every revealed row
        self._obs_rows = self._obs_features.view(-1, d)
        self._obs_blank = wide(self._obs_rows)
        self._staging = (torch.empty((n, h * w, d), dtype=self._bank.dtype, device=dev)
                         if observation == "full" and bank_dtype != "float32"
                         and self.in_memory else None)
        self._visited = torch.zeros((n, self.num_cells), dtype=torch.int8, device=dev)
        self._unvisited = torch.ones((n, self.num_cells), dtype=torch.int8, device=dev)  # mask
        self._cells = torch.full((n, self.glimpses), -1, dtype=torch.long, device=dev)
        self._logit_sum = torch.zeros((n, src.num_classes), dtype=torch.float64, device=dev)
        self._index = torch.zeros(n, dtype=torch.long, device=dev)
        # [2, N]: each env's first row in the [N*H*W] state tables (fixed) and its image's
        # first row in the bank (per episode), so that one addition gives both row indices
        self._bases = torch.zeros((2, n), dtype=torch.long, device=dev)
        self._keys = torch.zeros(n, dtype=torch.long, device=dev)
        self._env_labels = torch.zeros(n, dtype=torch.long, device=dev)
        self._env_cell0 = self._bases[0]  # flat offsets of env rows (a view)
        self._env_cell0.copy_(torch.arange(n, device=dev) * self.num_cells)
        # on the CPU, numpy views of the step's state (the same memory) for the compiled
        # glimpse (`_glimpse_compiled`); None elsewhere, or to run the tensor path on the CPU
        self._host = HostViews(self) if dev.type == "cpu" else None
        # the observations as views (for copy=False), where they are views: on the CPU, or
        # as tensors (from CUDA, numpy arrays are copies to the host)
        self._views = None
        if dev.type == "cpu" or array_type == "torch":
            self._views = {k: self._out(v) for k, v in self._observed().items()}
        # [2, N]: the step's positions in the [N*H*W] state tables and rows in the bank
        self._positions = np.zeros((2, n), dtype=np.int64)
        self._positions_t = torch.from_numpy(self._positions)
        # Every episode lasts exactly T glimpses and all envs start together on reset(), so
        # the envs run in lockstep: the glimpse count, the episode count and "ended last
        # step" are one number for all of them, kept as Python scalars.
        self._t = 0
        self._episode = 0
        self._autoreset = False
        self._started = False
        self._episode_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Reset all envs; ``seed`` (int: env i gets ``seed + i``, or a list) reseeds them.

        ``options={"indices": [...]}`` (one image index per env) starts each env on the given
        image instead, without advancing the envs' episode streams (for evaluating a policy
        on every image of a split exactly once).

        ``seed`` and ``options`` are checked before anything changes: a ValueError leaves the
        envs as they were (before the first reset, ``step`` still raises ResetNeeded).
        """
        return self._restart(seed, options, self.source.num_images)

    def step(self, actions: Any) -> tuple[dict, Any, Any, Any, dict]:
        """Advance every env by one glimpse (or autoreset the envs, whose episodes ended)."""
        if not self._started:
            raise ResetNeeded("step() was called before reset(); call envs.reset() first")
        cell = self._check_actions(actions)  # [N]: numpy on the CPU, else a tensor
        n = self.num_envs
        if self._autoreset:  # NextStep: all episodes ended last step; start new ones
            self._start_episodes()
            self._autoreset = False
            return (self._observation(), *self._zeros(), self._infos())
        if isinstance(cell, np.ndarray):
            self._glimpse_compiled(cell)
        else:
            self._glimpse_tensor(cell)
        self._t += 1
        if self._t < self.glimpses:
            return (self._observation(), *self._zeros(), self._infos())
        # ---- the last glimpse of every episode
        infos = self._infos(finished=True)
        rewards = infos["correct"].astype(np.float64) if self.array_type == "numpy" else \
            infos["correct"].double()
        done = torch.ones(n, dtype=torch.bool)
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            everyone = np.ones(n, dtype=bool)
            infos = {"final_obs": self._final_observations(), "_final_obs": everyone,
                     "final_info": infos, "_final_info": everyone.copy()}
            self._start_episodes()
            infos = {**self._infos(), **infos}
        else:
            self._autoreset = True
        return (self._observation(), rewards,
                self._out(done),
                self._out(torch.zeros(n, dtype=torch.bool)), infos)

    def _glimpse_tensor(self, cell: torch.Tensor) -> None:
        """The glimpse of every env as tensor operations (any device); flat row indices
        and index_select / index_fill_ / index_copy_ are the fast gathers and scatters."""
        flat, row = self._bases + cell  # [N] positions in visited [N*H*W]; bank rows
        newly = self._unvisited.view(-1).index_select(0, flat)  # 0 on a revisit: adds nothing
        self._visited.view(-1).index_fill_(0, flat, 1)
        self._unvisited.view(-1).index_fill_(0, flat, 0)
        both = self._rows.index_select(0, row)
        self._reveal(flat, row, both)
        self._cells[:, self._t] = cell
        k, offset = self.source.num_classes, self._logit_offset
        self._logit_sum.addcmul_(both[:, offset:offset + k], newly[:, None])
        # max's indices: the first maximum, as argmax, in half argmax's time on the CPU
        self._prediction = self._out(self._logit_sum.max(dim=1).indices)
        self._correct = self._prediction == self._episode_info["label"]

    def _glimpse_compiled(self, cell: np.ndarray) -> None:
        """The same glimpse on the CPU: the table rows gathered by torch (both threads: the
        rows are random, so the gather waits on memory), the rest in one compiled pass
        (:func:`~glimpse_gym.envs.kernels.glimpse_state`, a third of the tensor ops' time)."""
        h = self._host
        flat, row = self._positions_t  # placed by _check_actions
        both = self._rows.index_select(0, row)
        self._reveal(flat, row, both)
        k, offset = self.source.num_classes, self._logit_offset
        prediction, correct = np.empty(self.num_envs, np.int64), np.empty(self.num_envs, bool)
        kernels.glimpse_state(cell, self._t, self._positions[0], h.visited, h.unvisited,
                              both.numpy()[:, offset:offset + k], h.logit_sum, h.cells,
                              self._env_labels.numpy(), prediction, correct)
        self._prediction = self._out(torch.from_numpy(prediction))
        self._correct = self._out(torch.from_numpy(correct))

    def _reveal(self, flat: torch.Tensor, row: torch.Tensor, both: torch.Tensor) -> None:
        """Partial mode: copy the glimpsed cells' features into the observation
        (idempotent on a revisit); glimpses mode: into slot t, and mark it valid. ``both``
        holds the gathered table rows."""
        if self.observation_mode in ("full", "index"):
            return
        d = self.feature_shape[2]
        if self._logit_offset:  # the features came with the logits
            features = both[:, :d]
        else:
            features = self._bank.view(-1, d).index_select(0, row).float()
        if self.observation_mode == "partial":
            self._obs_rows.index_copy_(0, flat, features)
        else:
            self._obs_features[:, self._t] = features
            self._obs_valid[:, self._t] = 1

    def _observed(self) -> dict[str, torch.Tensor]:
        """The observation's state tensors, by key (see ``single_observation_space``)."""
        n = self.num_envs
        if self.observation_mode == "index":
            return {"index": self._obs_index, "visited": self._visited}
        if self.observation_mode == "glimpses":
            return {"features": self._obs_features.view(n, -1), "cells": self._cells,
                    "valid": self._obs_valid, "visited": self._visited}
        return {"features": self._obs_features.view(n, -1), "visited": self._visited}

    def coverage_of(self, cells: torch.Tensor) -> torch.Tensor:
        """Covered fraction of the image ``[B]`` for glimpse sequences ``cells [B, t]``
        (cell indices, revisits allowed): the same number ``info["coverage"]`` reports."""
        cells = torch.as_tensor(cells, device=self.device).long()
        if cells.dim() != 2 or cells.shape[1] < 1 or bool(
                ((cells < 0) | (cells >= self.num_cells)).any()):
            raise ValueError(f"cells must be [B, t] cell indices in [0, {self.num_cells}) with "
                             f"t >= 1; got shape {tuple(cells.shape)}")
        return self._cov.union(cells)

    def action_masks(self) -> np.ndarray:
        """``[N, H*W] bool``: True on the cells each env has not glimpsed yet."""
        return self._unvisited.bool().cpu().numpy()

    def render(self) -> tuple[np.ndarray, ...] | None:
        """``rgb_array``: one picture per env (see :meth:`GlimpseEnv.render`)."""
        if self.render_mode != "rgb_array":
            return None
        return tuple(render_cells(self.source, int(self._index[i]),
                                  [c for c in self._cells[i].tolist() if c >= 0])
                     for i in range(self.num_envs))

    # ------------------------------------------------------------------ helpers
    def _check_actions(self, actions: Any) -> np.ndarray | torch.Tensor:
        a = check_actions(actions, self.num_envs)
        if self._host is not None:  # CPU: one compiled pass checks and places the actions
            a = a.detach().cpu().numpy() if torch.is_tensor(a) else a
            a = a.astype(np.int64, copy=False)
            if kernels.positions(a, self.num_cells, self._host.bases, self._positions) >= 0:
                raise_out_of_range(torch.from_numpy(a), self.num_cells)
            return a
        if isinstance(a, np.ndarray):  # check on the host side (no device synchronisation)
            a = a.astype(np.int64, copy=False)
            if (a.view(np.uint64) >= self.num_cells).any():  # negatives wrap to huge values
                raise_out_of_range(torch.from_numpy(a), self.num_cells)
            return torch.from_numpy(a).to(self.device)
        t = a.to(self.device).long()
        if bool(((t < 0) | (t >= self.num_cells)).any()):
            raise_out_of_range(t, self.num_cells)
        return t

    def _start_episodes(self, images: torch.Tensor | None = None) -> None:
        """Start a new episode in every env (on ``images``, or the next of each env's stream)."""
        if self.observation_mode == "partial" and self._t:  # blank only the revealed cells
            rows = (self._env_cell0[:, None] + self._cells[:, :self._t]).reshape(-1)
            self._obs_blank.index_fill_(0, rows, 0)
        elif self.observation_mode == "glimpses" and self._t:  # blank the filled slots
            self._obs_features[:, :self._t] = 0
            self._obs_valid.zero_()
        if images is None:
            images = episode_images(self._keys, self._episode, self.source.num_images)
            self._episode += 1
        if self.observation_mode == "full":  # the bandwidth-bound part of this
            # mode, first: the small state below is then in the caches for the first glimpse
            if not self.in_memory:  # read from the memory-mapped bank
                self._bank.select_into(images, self._obs_features)
            elif self._staging is None:  # float32 bank: gather straight into the observation
                torch.index_select(self._bank, 0, images, out=self._obs_features)
            else:  # float16: gather into a reused buffer (a fresh one page-faults), convert
                torch.index_select(self._bank, 0, images, out=self._staging)
                self._obs_features.copy_(self._staging)
        self._index = images
        self._obs_index[:, 0] = images
        torch.mul(images, self.num_cells, out=self._bases[1])
        self._env_labels = self._labels.index_select(0, images)
        if self._host is not None:  # clear only the glimpsed cells
            h = self._host
            kernels.clear_episodes(h.cells, self._t, self.num_cells, h.visited, h.unvisited,
                                   h.logit_sum)
        else:
            self._visited.zero_()
            self._unvisited.fill_(1)
            self._cells.fill_(-1)
            self._logit_sum.zero_()
        self._t = 0
        # the per-episode infos, converted once per episode
        self._episode_info = {"index": self._out(images), "label": self._out(self._env_labels)}
        self._prediction = self._out(torch.full((self.num_envs,), -1, device=self.device))
        self._correct = self._out(torch.zeros(self.num_envs, dtype=torch.bool,
                                              device=self.device))

def make_vector_env(num_envs: int = 1, **kwargs: Any) -> GlimpseVectorEnv:
    """The ``vector_entry_point`` of Glimpse-v0."""
    return GlimpseVectorEnv(num_envs=num_envs, **kwargs)


__all__ = ["GlimpseVectorEnv", "make_vector_env"]
