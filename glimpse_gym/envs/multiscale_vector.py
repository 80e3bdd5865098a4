"""The native vector form of MultiScale-v0: N episodes across scales as tensor operations.

Same dynamics, observations, rewards and infos as ``SyncVectorEnv`` of N
:class:`~glimpse_gym.envs.MultiScaleEnv` seeded ``seed + i`` (a test checks it step for
step), with no Python loop over envs. As in the single-scale vector env every episode lasts
exactly T glimpses and ``reset`` starts all envs together, so the envs run in lockstep.

The bank is held as tables of rows (the action cells' features ``[M*A, D]``, float32 or
``bank_dtype="float16"``, and logits ``[M*A, K]``; level 0's features ``[M, H0*W0*D]`` and
vote ``[M, K]``), so a glimpse is one gather per table. The cells that may be opened
(``info["action_mask"]``) are kept up to date: opening a cell closes it and opens its
children (a padded children table).
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
from glimpse_gym.envs.checks import check_actions, check_vector_args, raise_out_of_range
from glimpse_gym.envs.copies import Recycler
from glimpse_gym.envs.coverage import CoverageTable
from glimpse_gym.envs.episodes import episode_images
from glimpse_gym.envs.multiscale_env import MultiScaleEnv, render_opened
from glimpse_gym.envs.multiscale_tables import (
    ActionRows,
    CoarseRows,
    hold_multiscale_in_memory,
    memory_tables,
)
from glimpse_gym.envs.outputs import VectorOutputs
from glimpse_gym.errors import ResetNeeded
from glimpse_gym.multiscale import MultiScaleBank

COST_KEYS = ("pixels", "full_resolution_pixels", "flops")
_STATE = ("_visited", "_mask", "_cells", "_logit_sum", "_cost", "_obs_coarse", "_obs_features",
          "_obs_valid", "_keys", "_index", "_env_labels")


class _ActionCoverage:
    """``info["coverage"]`` of the envs' glimpses: the union of their opened finest-level
    cells; coarser cells and wasted glimpses map to a cell that covers nothing."""

    def __init__(self, env: MultiScaleEnv, visited: torch.Tensor) -> None:
        finest = env.bank.levels[-1]
        self.table = CoverageTable(finest.grid, finest.bank.rf, finest.bank.stride,
                                   env.bank.image_shape[1:], visited.device, empty_cell=True)
        self.empty = finest.num_cells
        fine = np.where(env.action_level == len(env.bank.levels) - 1, env.action_cell,
                        self.empty)
        self.fine = torch.from_numpy(fine.astype(np.int64)).to(visited.device)
        self.visited = visited  # [N, A], the env's (updated in place)

    def union(self, actions: torch.Tensor) -> torch.Tensor:
        opened = self.visited.gather(1, actions.clamp(min=0)).bool() & (actions >= 0)
        return self.table.union(torch.where(opened, self.fine[actions.clamp(min=0)],
                                            self.empty))


class MultiScaleVectorEnv(VectorOutputs, VectorEnv):
    """``num_envs`` MultiScale-v0 episodes at once (``gym.make_vec("MultiScale-v0",
    num_envs=N, bank=...)``).

    Arguments are those of :class:`~glimpse_gym.envs.MultiScaleEnv`, plus ``num_envs``,
    ``device``, ``array_type``, ``autoreset_mode`` and ``copy`` as in
    :class:`~glimpse_gym.envs.GlimpseVectorEnv`, and ``bank_dtype``: the action cells'
    features held as ``"float32"`` (default: a glimpse copies them) or ``"float16"`` (half
    the memory, converted per glimpse), and ``in_memory`` as in the single-scale vector env
    (None: the tables in memory when they take at most half the free memory, else the rows
    read from the bank's files at each step, :mod:`~glimpse_gym.envs.multiscale_tables`;
    ``envs.in_memory`` says which). Observations: the single env's, batched
    (``coarse [N, H0*W0*D]``, ``features [N, A*D]`` or ``[N, T*D]``, ``visited [N, A]``,
    ``cells`` and ``valid [N, T]``). Infos: ``index``, ``label``, ``prediction``,
    ``correct``, ``cells [N, T]`` (-1 where not glimpsed yet), ``action_mask [N, A] int8``,
    ``pixels``, ``full_resolution_pixels``, ``flops`` ``[N]``, and at the end of the
    episodes ``coverage``, ``glimpse_levels [N, T]``, ``label_name``, ``prediction_name``.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, bank: str | Path | MultiScaleBank | None = None, *,
                 task: str | None = None, split: str = "train", root: str | Path | None = None,
                 max_images: int | None = None, glimpses: int = 5, observation: str = "partial",
                 render_mode: str | None = None, device: str = "cpu",
                 array_type: str = "numpy",
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 copy: bool = True, bank_dtype: str = "float32",
                 in_memory: bool | None = None) -> None:
        mode = check_vector_args(num_envs, array_type, autoreset_mode)
        if bank_dtype not in ("float32", "float16"):
            raise ValueError(f"bank_dtype must be 'float32' or 'float16', got {bank_dtype!r}")
        # the single env checks the arguments and holds the geometry this env reads
        spec = MultiScaleEnv(bank, task=task, split=split, root=root, max_images=max_images,
                             glimpses=glimpses, observation=observation, render_mode=render_mode)
        self.spec_env, self.bank = spec, spec.bank
        self.device = dev = resolve_device(device)
        self._init_kwargs = dict(num_envs=num_envs, bank=str(spec.bank.path), glimpses=glimpses,
                                 observation=observation, render_mode=render_mode,
                                 device=str(dev),
                                 array_type=array_type, autoreset_mode=mode, copy=copy,
                                 bank_dtype=bank_dtype, in_memory=in_memory)
        self.num_envs, self.glimpses = num_envs, spec.glimpses
        self.observation_mode, self.render_mode = observation, render_mode
        self.array_type, self.copy = array_type, copy
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.num_actions, self.feature_dim = spec.num_actions, spec.feature_dim
        self.class_names = spec.class_names
        self._class_names = np.array(spec.class_names, dtype=object)
        self.single_observation_space = spec.observation_space
        self.single_action_space = spaces.Discrete(self.num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._recycler = Recycler()
        self.in_memory = hold_multiscale_in_memory(spec, bank_dtype, in_memory, dev)
        self._tables(spec, dev, getattr(torch, bank_dtype))
        n, a, d, t = num_envs, self.num_actions, self.feature_dim, self.glimpses
        k = len(self.class_names)
        rows = a if observation == "partial" else t
        self._obs_features = torch.zeros((n, rows, d), dtype=torch.float32, device=dev)
        self._obs_rows = self._obs_features.view(-1, d)
        self._obs_valid = torch.zeros((n, t), dtype=torch.int8, device=dev)
        self._obs_coarse = torch.zeros((n, self._coarse.shape[1]), dtype=torch.float32,
                                       device=dev)
        self._visited = torch.zeros((n, a), dtype=torch.int8, device=dev)
        self._mask = self._initial_mask.expand(n, a).clone()  # 1: may be opened
        self._cells = torch.full((n, t), -1, dtype=torch.long, device=dev)
        self._logit_sum = torch.zeros((n, k), dtype=torch.float64, device=dev)
        self._cost = torch.zeros((3, n), dtype=torch.long, device=dev)  # COST_KEYS rows
        self._cov = _ActionCoverage(spec, self._visited)
        self._env_base = torch.arange(n, device=dev) * a  # env i's first row in [N*A]
        self._keys = torch.zeros(n, dtype=torch.long, device=dev)
        self._index = torch.zeros(n, dtype=torch.long, device=dev)
        self._env_labels = torch.zeros(n, dtype=torch.long, device=dev)
        self._t, self._episode, self._autoreset, self._started = 0, 0, False, False
        # on the CPU one compiled pass per glimpse; the tensor path elsewhere (and on the
        # CPU when switched off, as the tests do)
        # (the compiled pass reads the logits table: in memory only)
        self.compiled = dev.type == "cpu" and self.in_memory
        self._gathered = torch.zeros((n, d), dtype=torch.float32, device=dev)
        self._staging = None if not self.in_memory or self._features.dtype == torch.float32 \
            else torch.zeros((n, d), dtype=self._features.dtype, device=dev)
        self._positions = np.zeros((2, n), dtype=np.int64)  # bank rows, state positions
        self._positions_t = torch.from_numpy(self._positions)
        self._host = {name: getattr(self, name).numpy() for name in (
            "_parent", "_children", "_visited", "_mask", "_obs_rows", "_obs_valid", "_logits",
            "_logit_sum", "_cost_table", "_cost", "_cells", "_initial_mask", "_gathered",
            "_env_base")} if self.compiled else {}
        self._views = {k: self._out(v) for k, v in self._observed().items()} \
            if dev.type == "cpu" or array_type == "torch" else None
        self._episode_info: dict[str, Any] = {}

    def _tables(self, spec: MultiScaleEnv, dev: torch.device, dtype: torch.dtype) -> None:
        """The bank as row tables on ``dev`` (or read from its files), and the per-action
        constants."""
        self._labels = torch.from_numpy(np.array(self.bank.labels)).to(dev)
        self._constants(spec, dev)
        if not self.in_memory:  # read from the bank's files at each step
            self._features = ActionRows(spec, "features", dev)
            self._logits = ActionRows(spec, "logits", dev)
            self._coarse = CoarseRows(spec, dev)
            return
        self._features, self._logits, self._coarse, self._prior = memory_tables(spec, dev,
                                                                                dtype)

    def _constants(self, spec: MultiScaleEnv, dev: torch.device) -> None:
        """The per-action constants: parents, children, costs, levels."""
        a = self.num_actions
        self._parent = torch.from_numpy(spec.parent_action).to(dev)
        children = [np.flatnonzero(spec.parent_action == p) for p in range(a)]
        width = max(1, max(len(c) for c in children))
        table = np.full((a, width), -1, np.int64)
        for p, c in enumerate(children):
            table[p, :len(c)] = c
        self._children = torch.from_numpy(table).to(dev)
        self._initial_mask = torch.from_numpy((spec.parent_action < 0).astype(np.int8)).to(dev)
        self._cost_table = torch.from_numpy(np.stack(
            [spec._pixels, spec._full_pixels, spec._flops], 1).astype(np.int64)).to(dev)
        self._reset_cost = torch.tensor([spec._reset_pixels, 0, spec._reset_flops],
                                        dtype=torch.long, device=dev)
        self._levels = torch.from_numpy(spec.action_level.astype(np.int64)).to(dev)

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Reset all envs, as :meth:`GlimpseVectorEnv.reset` (``options={"indices": ...}``
        starts each env on a given image)."""
        return self._restart(seed, options, self.bank.num_images)

    def step(self, actions: Any) -> tuple[dict, Any, Any, Any, dict]:
        """Open (or waste) one cell in every env, or autoreset the envs whose episodes ended."""
        if not self._started:
            raise ResetNeeded("step() was called before reset(); call envs.reset() first")
        a = check_actions(actions, self.num_envs)
        a = (torch.from_numpy(a.astype(np.int64, copy=False)) if isinstance(a, np.ndarray)
             else a.long()).to(self.device)
        if bool(((a < 0) | (a >= self.num_actions)).any()):
            raise_out_of_range(a, self.num_actions)
        if self._autoreset:
            self._start_episodes()
            self._autoreset = False
            return (self._observation(), *self._zeros(), self._infos())
        self._glimpse(a)
        self._t += 1
        if self._t < self.glimpses:
            return (self._observation(), *self._zeros(), self._infos())
        infos = self._infos(finished=True)
        rewards = infos["correct"].astype(np.float64) if self.array_type == "numpy" else \
            infos["correct"].double()
        n = self.num_envs
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            everyone = np.ones(n, dtype=bool)
            infos = {"final_obs": self._final_observations(), "_final_obs": everyone,
                     "final_info": infos, "_final_info": everyone.copy()}
            self._start_episodes()
            infos = {**self._infos(), **infos}
        else:
            self._autoreset = True
        return (self._observation(), rewards, self._out(torch.ones(n, dtype=torch.bool)),
                self._out(torch.zeros(n, dtype=torch.bool)), infos)

    def _glimpse(self, a: torch.Tensor) -> None:
        if self.compiled:
            return self._glimpse_compiled(a)
        flat = self._env_base + a
        parent = self._parent[a]
        visited = self._visited.view(-1)
        legal = (parent < 0) | visited[self._env_base + parent.clamp(min=0)].bool()
        old = visited[flat]
        newly = legal & (old == 0)
        visited.index_copy_(0, flat, old | legal.to(torch.int8))
        mask = self._mask.view(-1)
        mask.index_fill_(0, flat, 0)  # a cell not open to it was closed already
        kids = self._children[a]  # [N, J]: the cells a newly opened cell opens
        opened = ((kids >= 0) & newly[:, None]).to(torch.int8)
        mask.index_put_(((self._env_base[:, None] + kids.clamp(min=0)).view(-1),),
                        opened.view(-1), accumulate=True)
        rows = self._index * self.num_actions + a
        features = self._features.index_select(0, rows).float() * legal[:, None]
        if self.observation_mode == "partial":  # a wasted glimpse writes zeros on zeros
            self._obs_rows.index_copy_(0, flat, features)
        else:
            self._obs_features[:, self._t] = features
            self._obs_valid[:, self._t] = legal.to(torch.int8)
        self._logit_sum.addcmul_(self._logits.index_select(0, rows).double(), newly[:, None])
        self._cost += self._cost_table.index_select(0, a).T * newly
        self._cells[:, self._t] = a
        self._predict()

    def _glimpse_compiled(self, a: torch.Tensor) -> None:
        """The same glimpse on the CPU: the feature rows gathered and scattered by torch
        (both threads: random rows wait on memory), the rest in one compiled pass
        (:func:`~glimpse_gym.envs.kernels.multiscale_glimpse`)."""
        n, h, an = self.num_envs, self._host, a.numpy()
        rows, flat = self._positions
        np.multiply(self._index.numpy(), self.num_actions, out=rows)
        rows += an
        np.add(h["_env_base"], an, out=flat)
        gathered = self._gathered
        if self._staging is None:
            torch.index_select(self._features, 0, self._positions_t[0], out=gathered)
        else:  # a float16 table: gathered, then converted
            torch.index_select(self._features, 0, self._positions_t[0], out=self._staging)
            gathered.copy_(self._staging)
        prediction, correct = np.empty(n, np.int64), np.empty(n, bool)
        kernels.multiscale_glimpse(
            an, self._t, h["_parent"], h["_children"], h["_visited"], h["_mask"],
            h["_gathered"], h["_obs_valid"], rows, h["_logits"], h["_logit_sum"],
            h["_cost_table"], h["_cost"], h["_cells"], self._env_labels.numpy(), prediction,
            correct)
        if self.observation_mode == "partial":  # a wasted glimpse writes zeros on zeros
            self._obs_rows.index_copy_(0, self._positions_t[1], gathered)
        else:
            self._obs_features[:, self._t] = gathered
        self._prediction = self._out(torch.from_numpy(prediction))
        self._correct = self._out(torch.from_numpy(correct))

    def _predict(self) -> None:
        prediction = self._logit_sum.max(dim=1).indices  # the first maximum, as argmax
        self._prediction = self._out(prediction)
        self._correct = self._out(prediction == self._env_labels)

    def _start_episodes(self, images: torch.Tensor | None = None) -> None:
        partial = self.observation_mode == "partial"
        if self.compiled:  # touch only what the glimpses set
            h = self._host
            kernels.multiscale_clear(h["_cells"], self._t, h["_children"],
                                     h["_initial_mask"], h["_visited"], h["_mask"],
                                     h["_obs_rows"], partial)
        else:
            if partial and self._t:  # blank the glimpsed rows only
                self._obs_rows.index_fill_(
                    0, (self._env_base[:, None] + self._cells[:, :self._t]).reshape(-1), 0)
            self._visited.zero_()
            self._mask.copy_(self._initial_mask.expand_as(self._mask))
            self._cells.fill_(-1)
        if not partial and self._t:
            self._obs_features[:, :self._t] = 0
            self._obs_valid.zero_()
        if images is None:
            images = episode_images(self._keys, self._episode, self.bank.num_images)
            self._episode += 1
        images = images.to(self.device)
        self._index = images
        self._env_labels = self._labels.index_select(0, images)
        self._obs_coarse.copy_(self._coarse.index_select(0, images))
        if self.in_memory:
            torch.index_select(self._prior, 0, images, out=self._logit_sum)
        else:
            self._logit_sum.copy_(self._coarse.prior(images))
        self._cost.copy_(self._reset_cost[:, None].expand_as(self._cost))
        self._t = 0
        self._episode_info = {"index": self._out(images), "label": self._out(self._env_labels)}
        self._predict()

    # ------------------------------------------------------------------ outputs
    def _observed(self) -> dict[str, torch.Tensor]:
        n = self.num_envs
        obs = {"coarse": self._obs_coarse, "features": self._obs_features.view(n, -1),
               "visited": self._visited}
        if self.observation_mode == "glimpses":
            obs.update(cells=self._cells, valid=self._obs_valid)
        return obs

    @property
    def _unvisited(self) -> torch.Tensor:  # what VectorOutputs reports as the action mask
        return self._mask

    def _infos(self, finished: bool = False) -> dict[str, Any]:
        infos = super()._infos(finished)
        copy = self.copy or finished  # views with copy=False, as the other state mirrors
        extra = {key: self._out(self._cost[i], copy=copy, key=f"info.{key}")
                 for i, key in enumerate(COST_KEYS)}
        if finished:
            extra["glimpse_levels"] = self._out(self._levels[self._cells])
        for key, value in extra.items():
            infos[key], infos[f"_{key}"] = value, np.ones(self.num_envs, dtype=bool)
        return infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """``rgb_array``: one picture per env, its opened cells outlined and numbered (see
        :meth:`MultiScaleEnv.render`)."""
        if self.render_mode != "rgb_array":
            return None
        cells, visited = self._cells.cpu().numpy(), self._visited.cpu().numpy()
        return tuple(render_opened(self.bank, self.spec_env.boxes, int(self._index[i]),
                                   cells[i], visited[i]) for i in range(self.num_envs))

    def action_masks(self) -> np.ndarray:
        """``[N, A] bool``: True on the cells each env may open now."""
        return self._mask.bool().cpu().numpy()

    # copies and pickles: rebuilt from the arguments, then the episodes' state copied in
    def __getstate__(self) -> dict[str, Any]:
        state = {"kwargs": self._init_kwargs, "started": self._started}
        if self._started:
            state["dynamic"] = {name: getattr(self, name).cpu().clone() for name in _STATE}
            state["scalars"] = (self._t, self._episode, self._autoreset)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["kwargs"])
        if not state["started"]:
            return
        for name, value in state["dynamic"].items():
            target = getattr(self, name)
            if target.shape == value.shape:
                target.copy_(value)
            else:
                setattr(self, name, value.to(self.device))
        self._t, self._episode, self._autoreset = state["scalars"]
        self._started = True
        self._episode_info = {"index": self._out(self._index),
                              "label": self._out(self._env_labels)}
        self._predict()


def make_multiscale_vector_env(num_envs: int = 1, **kwargs: Any) -> MultiScaleVectorEnv:
    """The ``vector_entry_point`` of MultiScale-v0."""
    return MultiScaleVectorEnv(num_envs=num_envs, **kwargs)


__all__ = ["COST_KEYS", "MultiScaleVectorEnv", "make_multiscale_vector_env"]
