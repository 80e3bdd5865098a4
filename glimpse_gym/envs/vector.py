"""The native vector form of Glimpse-v0: N episodes advanced together as tensor operations.

Same dynamics, observations, rewards and infos as ``SyncVectorEnv`` of N ``GlimpseEnv``
seeded ``seed + i`` (a test checks it step for step), without a Python loop over envs: a step
is a few gathers and scatters on ``[N, ...]`` tensors (both CPU threads, or CUDA) and, on the
CPU, one compiled pass over the envs for the small per-env state (:mod:`.kernels`; on CUDA
the same as tensor operations). Every
episode lasts exactly T glimpses and ``reset`` starts all envs together, so the envs run in
lockstep: the glimpse counter is one Python int, every env ends on the same step, and the
next step (or the same one, with ``SameStep``) starts N new episodes at once.
"""

from __future__ import annotations

import math
import reprlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from glimpse_gym.device import resolve_device
from glimpse_gym.envs import kernels
from glimpse_gym.envs.checks import check_head, check_indices, check_seeds
from glimpse_gym.envs.coverage import CoverageTable
from glimpse_gym.envs.episodes import draw_key, episode_images
from glimpse_gym.envs.glimpse_env import OBSERVATION_MODES, observation_space
from glimpse_gym.envs.memory import large_empty
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
      arrays are views that the next ``step`` overwrites (like ``SyncVectorEnv(copy=False)``),
      and so are ``info["cells"]`` and ``info["action_mask"]`` except on the step that ends
      the episodes.
    - ``bank_dtype``: ``"float32"`` (default) holds the bank's features in memory as float32,
      so starting an episode is a plain copy; ``"float16"`` halves that memory (a 55,000-image
      11x11x32 bank: 426 MB instead of 852 MB) at the cost of a conversion per episode.

    Observations: ``features [N, H*W*D] float32`` (channels-last) and ``visited [N, H*W]
    int8``. Infos:
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
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        mode = AutoresetMode(autoreset_mode)
        if mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode must be NextStep or SameStep")
        self.device = resolve_device(device)
        # what a copy re-runs __init__ with (see __getstate__): a bank by its path
        self._init_kwargs = dict(
            num_envs=num_envs,
            bank=str(Path(bank).expanduser().resolve()) if isinstance(bank, (str, Path)) else bank,
            dataset=dataset, split=split, checkpoint=checkpoint, seed=seed, glimpses=glimpses,
            observation=observation, head=head, expect=expect, render_mode=render_mode,
            device=str(self.device), array_type=array_type, autoreset_mode=mode, copy=copy,
            bank_dtype=bank_dtype)
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
        self.class_names = src.class_names
        self._class_names = np.array(src.class_names, dtype=object)  # names[labels]: [N]
        self.single_observation_space = observation_space(src)
        self.single_action_space = spaces.Discrete(self.num_cells)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        dev = self.device
        if bank_dtype not in ("float32", "float16"):
            raise ValueError(f"bank_dtype must be 'float32' or 'float16', got {bank_dtype!r}")
        # The bank in memory on the device, channels-last, one row per (image, cell): a
        # glimpse is one row gather. The rows a glimpse reads form one table: [features |
        # logits] in the partial mode with a float32 bank (a cell's features and logits share
        # cache lines), else the logits alone (the full mode reads the whole grid per
        # episode instead).
        k, m = src.num_classes, src.num_images
        combined = observation == "partial" and bank_dtype == "float32"
        if combined:
            table = _channels_last(src.features, torch.float32, dev, width=d + k)
            self._bank, self._logit_offset = table[..., :d], d
        else:
            self._bank = _channels_last(src.features, getattr(torch, bank_dtype), dev)
            table = large_empty((m, h * w, k), torch.float32, dev)
            self._logit_offset = 0
        self._cell_logits = table[..., self._logit_offset:self._logit_offset + k]  # [M, H*W, K]
        if head is not None:
            weight, bias = (torch.as_tensor(a).to(dev) for a in check_head(head, src))
            for start in range(0, m, _CHUNK):
                self._cell_logits[start:start + _CHUNK] = torch.addmm(
                    bias, self._bank[start:start + _CHUNK].flatten(0, 1).float(),
                    weight.T).view(-1, h * w, k)
        else:
            _load_channels_last(src.logits, self._cell_logits)
        self._rows = table.view(m * h * w, -1)  # what a glimpse gathers
        self._labels = torch.from_numpy(np.array(src.labels)).to(dev)
        self._cov = CoverageTable(src.grid, src.rf, src.stride, src.image_shape[1:], dev)
        n = num_envs
        self._obs_features = large_empty((n, h * w, d), torch.float32, dev).zero_()
        # one row per (env, cell): float32 for a glimpse's scatter (4096 rows of 32 values are
        # enough elements for torch to split the copy over two threads; as 8 wide elements
        # they are not), wide for the reset's blanking of every revealed row
        self._obs_rows = self._obs_features.view(-1, d)
        self._obs_blank = _wide(self._obs_rows)
        self._staging = (torch.empty((n, h * w, d), dtype=self._bank.dtype, device=dev)
                         if observation == "full" and bank_dtype != "float32" else None)
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
        self._host = _HostViews(self) if dev.type == "cpu" else None
        # the observations as views (for copy=False), where they are views: on the CPU, or
        # as tensors (from CUDA, numpy arrays are copies to the host)
        self._views = None
        if dev.type == "cpu" or array_type == "torch":
            self._views = {"features": self._out(self._obs_features.view(n, -1)),
                           "visited": self._out(self._visited)}
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
        seeds = check_seeds(seed, self.num_envs)
        images = check_indices(options, self.num_envs, self.source.num_images, self.device)
        if seed is not None or not self._started:
            keys = []
            for s in seeds:
                rng, _ = seeding.np_random(s)
                keys.append(draw_key(rng))
            self._keys = torch.tensor(keys, dtype=torch.long, device=self.device)
            self._episode = 0
        self._started = True
        self._start_episodes(images)
        self._autoreset = False
        return self._observation(), self._infos()

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
        (idempotent on a revisit); ``both`` holds the gathered table rows."""
        if self.observation_mode != "partial":
            return
        d = self.feature_shape[2]
        if self._logit_offset:  # the features came with the logits
            features = both[:, :d]
        else:
            features = self._bank.view(-1, d).index_select(0, row).float()
        self._obs_rows.index_copy_(0, flat, features)

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
        if self.source.images is None:
            raise ValueError("this feature bank holds no images, so there is nothing to draw")
        boxes = self.source.cell_boxes()
        frames = []
        for i in range(self.num_envs):
            cells = [c for c in self._cells[i].tolist() if c >= 0]
            image = np.asarray(self.source.images[int(self._index[i])])
            frames.append(draw_glimpses(image, [tuple(boxes[c]) for c in cells]))
        return tuple(frames)

    # ------------------------------------------------------------------ copies
    # Pickling and copy.deepcopy keep the constructor's arguments and the dynamic state; the
    # copy re-runs __init__ (the bank is reopened) and writes the state into its own tensors,
    # so that the compiled loops' numpy views (_host, _views, _positions) are views of the
    # copy's memory, not of the original's.
    def __getstate__(self) -> dict[str, Any]:
        attributes = {k: self.__dict__[k] for k in _COPIED_ATTRIBUTES if k in self.__dict__}
        state = {"kwargs": self._init_kwargs, "attributes": attributes,
                 "tensor_path": self._host is None, "compiled_coverage": self._cov.compiled}
        if self._started:
            tensors = {name: getattr(self, name).cpu().clone() for name in _DYNAMIC_TENSORS}
            state["dynamic"] = {
                **tensors, "bank_rows": self._bases[1].cpu().clone(), "t": self._t,
                "episode": self._episode, "autoreset": self._autoreset,
                "prediction": _copy(self._prediction), "correct": _copy(self._correct)}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["kwargs"])
        self.__dict__.update(state["attributes"])
        if state["tensor_path"]:
            self._host = None
        self._cov.compiled = state["compiled_coverage"]
        dynamic = state.get("dynamic")
        if dynamic is None:  # not reset yet: the fresh env is the state
            return
        for name in _DYNAMIC_TENSORS:
            if name in _REPLACED_TENSORS:  # reset assigns these anew: no views to keep
                setattr(self, name, dynamic[name].to(self.device))
            else:  # copied in place: the views of these tensors stay valid
                getattr(self, name).copy_(dynamic[name])
        self._bases[1].copy_(dynamic["bank_rows"])
        self._t, self._episode = dynamic["t"], dynamic["episode"]
        self._autoreset, self._started = dynamic["autoreset"], True
        self._prediction, self._correct = dynamic["prediction"], dynamic["correct"]
        self._episode_info = {"index": self._out(self._index),
                              "label": self._out(self._env_labels)}

    # ------------------------------------------------------------------ helpers
    def _check_actions(self, actions: Any) -> torch.Tensor:
        try:
            a = actions if torch.is_tensor(actions) else np.asarray(actions)
        except (ValueError, TypeError) as exc:  # ragged lists
            raise InvalidAction(f"actions {reprlib.repr(actions)} are not an array ({exc}); "
                                f"pass {self.num_envs} integer cell indices, one per env, "
                                f"shape ({self.num_envs},)") from None
        shape, dtype = tuple(a.shape), a.dtype
        integer = (not a.dtype.is_floating_point and a.dtype != torch.bool
                   and not a.dtype.is_complex) if torch.is_tensor(a) else \
            np.issubdtype(a.dtype, np.integer)
        if shape != (self.num_envs,) or not integer:
            raise InvalidAction(f"actions must be {self.num_envs} integer cell indices, shape "
                                f"({self.num_envs},); got shape {shape} dtype {dtype}")
        if self._host is not None:  # CPU: one compiled pass checks and places the actions
            a = a.detach().cpu().numpy() if torch.is_tensor(a) else a
            a = a.astype(np.int64, copy=False)
            if kernels.positions(a, self.num_cells, self._host.bases, self._positions) >= 0:
                self._raise_out_of_range(torch.from_numpy(a))
            return a
        if isinstance(a, np.ndarray):  # check on the host side (no device synchronisation)
            a = a.astype(np.int64, copy=False)
            if (a.view(np.uint64) >= self.num_cells).any():  # negatives wrap to huge values
                self._raise_out_of_range(torch.from_numpy(a))
            return torch.from_numpy(a).to(self.device)
        t = a.to(self.device).long()
        if bool(((t < 0) | (t >= self.num_cells)).any()):
            self._raise_out_of_range(t)
        return t

    def _raise_out_of_range(self, t: torch.Tensor) -> None:
        bad = ((t < 0) | (t >= self.num_cells)).cpu()
        envs = torch.arange(len(t))[bad][:5].tolist()
        raise InvalidAction(f"actions out of range in envs {envs} (values "
                            f"{t.cpu()[bad][:5].tolist()}); valid cells are 0 to "
                            f"{self.num_cells - 1} (row-major)")

    def _start_episodes(self, images: torch.Tensor | None = None) -> None:
        """Start a new episode in every env (on ``images``, or the next of each env's stream)."""
        if self.observation_mode == "partial" and self._t:  # blank only the revealed cells
            rows = (self._env_cell0[:, None] + self._cells[:, :self._t]).reshape(-1)
            self._obs_blank.index_fill_(0, rows, 0)
        if images is None:
            images = episode_images(self._keys, self._episode, self.source.num_images)
            self._episode += 1
        if self.observation_mode == "full":  # the bandwidth-bound part of this
            # mode, first: the small state below is then in the caches for the first glimpse
            if self._staging is None:  # float32 bank: gather straight into the observation
                torch.index_select(self._bank, 0, images, out=self._obs_features)
            else:  # float16: gather into a reused buffer (a fresh one page-faults), convert
                torch.index_select(self._bank, 0, images, out=self._staging)
                self._obs_features.copy_(self._staging)
        self._index = images
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

    def _zeros(self) -> tuple[Any, Any, Any]:
        """Rewards, terminated and truncated of a step that ends no episode (fresh arrays)."""
        n = self.num_envs
        if self.array_type == "numpy":
            return np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        return (torch.zeros(n, dtype=torch.float64, device=self.device),
                torch.zeros(n, dtype=torch.bool, device=self.device),
                torch.zeros(n, dtype=torch.bool, device=self.device))

    def _observation(self) -> dict[str, Any]:
        if not self.copy and self._views is not None:  # the same views every step
            return dict(self._views)
        obs = {"features": self._obs_features.view(self.num_envs, -1), "visited": self._visited}
        return {k: self._out(v, copy=self.copy) for k, v in obs.items()}

    def _final_observations(self) -> np.ndarray:
        final = np.full(self.num_envs, None, dtype=object)
        feats = self._obs_features.flatten(1).cpu().numpy().copy()
        visited = self._visited.cpu().numpy().copy()
        for i in range(self.num_envs):
            final[i] = {"features": feats[i], "visited": visited[i]}
        return final

    def _infos(self, finished: bool = False) -> dict[str, Any]:
        """Vector infos of every env, each key with its all-True ``_key`` mask.

        ``coverage`` is an end-of-episode fact: present only on the step that ends the
        episodes (``finished``), as in ``SyncVectorEnv``.
        """
        # the state mirrors: views with copy=False (overwritten by the next step, like the
        # observations), except at an episode's end (a SameStep autoreset overwrites them
        # within the step)
        copy = self.copy or finished
        index, label = self._episode_info["index"], self._episode_info["label"]
        values = {  # index and label: per-episode arrays the env never writes to
            "index": _copy(index) if self.copy else index, "prediction": self._prediction,
            "label": _copy(label) if self.copy else label, "correct": self._correct,
            "cells": self._out(self._cells, copy=copy),
            "action_mask": self._out(self._unvisited, copy=copy),
        }
        if finished:
            values["coverage"] = self._out(self._cov.union(self._cells))
            names = self._class_names
            values["label_name"] = names[_host_array(self._episode_info["label"])]
            values["prediction_name"] = names[_host_array(self._prediction)]
        masks = np.ones((len(values), self.num_envs), dtype=bool)  # one allocation, rows
        infos: dict[str, Any] = {}
        for (key, value), mask in zip(values.items(), masks, strict=True):
            infos[key] = value
            infos[f"_{key}"] = mask
        return infos

    def _out(self, value: torch.Tensor, copy: bool = False) -> Any:
        if self.array_type == "torch":
            return value.clone() if copy else value.to(self.device)
        array = value.detach().cpu().numpy()
        return array.copy() if copy and value.device.type == "cpu" else array


class _HostViews:
    """numpy views of a CPU vector env's step state (no copies: writes go to the tensors)."""

    def __init__(self, env: GlimpseVectorEnv) -> None:
        self.bases = env._bases.numpy()
        self.visited = env._visited.view(-1).numpy()
        self.unvisited = env._unvisited.view(-1).numpy()
        self.cells = env._cells.numpy()
        self.logit_sum = env._logit_sum.numpy()


def _host_array(value: Any) -> np.ndarray:
    return value.cpu().numpy() if torch.is_tensor(value) else np.asarray(value)


def _copy(value: Any) -> Any:
    return value.clone() if torch.is_tensor(value) else value.copy()


_CHUNK = 1024  # images per block when loading the bank

# what a copy takes over (see GlimpseVectorEnv.__getstate__): Gymnasium's attributes, and
# the state tensors that reset and step change (the first three reset replaces, the others
# it writes in place)
_COPIED_ATTRIBUTES = ("spec", "closed", "_np_random", "_np_random_seed")
_REPLACED_TENSORS = ("_keys", "_index", "_env_labels")
_DYNAMIC_TENSORS = (*_REPLACED_TENSORS, "_visited", "_unvisited", "_cells", "_logit_sum",
                    "_obs_features")


def _channels_last(array: Any, dtype: torch.dtype, device: torch.device,
                   width: int | None = None) -> torch.Tensor:
    """A bank array ``[M, C, H, W]`` (memory-mapped) as an in-memory ``[M, H*W, width]``
    tensor (``width`` defaults to C; columns past C are left for the caller to fill),
    converted block by block (no second full copy; huge pages on the CPU)."""
    m, c = array.shape[:2]
    out = large_empty((m, math.prod(array.shape[2:]), c if width is None else width), dtype,
                      device)
    _load_channels_last(array, out[..., :c])
    return out


def _load_channels_last(array: Any, out: torch.Tensor) -> None:
    """Write a bank array ``[M, C, H, W]`` into ``out [M, H*W, C]`` (a view; any dtype and
    device) block by block."""
    for start in range(0, len(array), _CHUNK):
        block = torch.from_numpy(np.array(array[start:start + _CHUNK]))  # a writable copy
        out[start:start + _CHUNK] = block.to(out.device).flatten(2).transpose(1, 2)


def _wide(rows: torch.Tensor) -> torch.Tensor:
    """A float32 row table ``[R, C]`` viewed as ``[R, C/4] complex128`` when C is a multiple
    of 4 (else as it is): the same bytes, 16 to an element. torch's index_fill_ works element
    by element, and blanking the partial mode's revealed 128-byte rows through this view took
    about a third of the time here. (Gathers and scatters of 4096 rows stay float32: as
    wide elements they fall under torch's grain size for using both threads.)"""
    try:
        return rows.view(torch.complex128)
    except RuntimeError:
        return rows


def make_vector_env(num_envs: int = 1, **kwargs: Any) -> GlimpseVectorEnv:
    """The ``vector_entry_point`` of Glimpse-v0."""
    return GlimpseVectorEnv(num_envs=num_envs, **kwargs)


__all__ = ["GlimpseVectorEnv", "make_vector_env"]
