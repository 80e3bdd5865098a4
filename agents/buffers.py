"""Rollout buffers for PPO and MaskablePPO on Dict observations, with fewer copies.

:class:`GlimpseRolloutBuffer` and :class:`MaskableGlimpseRolloutBuffer` are drop-in
``rollout_buffer_class`` es that make the same minibatches as SB3's Dict buffers (a test
checks it) with fewer copies; ``glimpse train ppo`` and ``glimpse train maskable-ppo`` use
them. They work for any Dict observation space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sb3_contrib.common.maskable.buffers import (
    MaskableDictRolloutBuffer,
    MaskableDictRolloutBufferSamples,
)
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples

from glimpse_gym.envs.memory import large_empty


class _FlatMinibatches:
    """``get`` / ``_get_samples`` of a Dict rollout buffer without SB3's two big copies.

    SB3's buffers first copy every array into env-major order (``swap_and_flatten``: for
    Glimpse-v0's full observations, 1024 envs x 12 steps x 16 kB = 200 MB per rollout), then
    build each minibatch with a numpy fancy index followed by ``torch.tensor`` (two more
    copies). Here the ``[steps, envs, ...]`` arrays are read as ``[steps * envs, ...]`` views
    (no copy; a random permutation makes the order irrelevant) and each minibatch is a single
    ``torch.index_select`` per array (multi-threaded). The minibatches hold the same kind of
    samples, drawn with the same ``np.random.permutation`` as SB3's.

    ``rollout_buffer_kwargs={"env_minibatches": True}`` keeps each env's steps of a rollout
    together in one minibatch (the envs are shuffled, as a recurrent PPO does): all steps of
    an episode then share a minibatch (when ``n_steps`` is a multiple of T), so a policy
    that computes something once per image (the Saccader's where network, by reference) does
    it once per episode instead of once per step. ``batch_size`` must be a multiple of
    ``n_steps``.

    A minibatch's observation tensors live in buffers that the next minibatch overwrites:
    use each one before drawing the next, as PPO's and MaskablePPO's ``train`` do (clone
    what you keep). On the CPU, that is; ``.to(device)`` copies elsewhere.
    """

    _fields = ("actions", "values", "log_probs", "advantages", "returns")
    _samples: Any

    def __init__(self, *args: Any, env_minibatches: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env_minibatches = env_minibatches

    def _permutation(self) -> np.ndarray:
        """The order of the samples: a random permutation of them all (SB3's), or with
        ``env_minibatches`` a random permutation of the envs, each env's steps together."""
        total = self.buffer_size * self.n_envs
        if not self.env_minibatches:
            return np.random.permutation(total)
        envs = np.random.permutation(self.n_envs)  # sample (step, env) sits at step*n_envs+env
        return (np.arange(self.buffer_size)[None, :] * self.n_envs + envs[:, None]).reshape(-1)

    def get(self, batch_size: int | None = None):  # noqa: ANN201 (a generator of samples)
        assert self.full, "the rollout buffer is not full yet"
        total = self.buffer_size * self.n_envs
        if self.env_minibatches and batch_size and batch_size % self.buffer_size:
            raise ValueError(f"env_minibatches keeps each env's {self.buffer_size} steps "
                             f"together: batch_size ({batch_size}) must be a multiple of "
                             f"n_steps ({self.buffer_size})")
        indices = self._permutation()
        if not self.generator_ready:
            self._flat = {f"obs/{k}": torch.from_numpy(v.reshape(total, *v.shape[2:]))
                          for k, v in self.observations.items()}
            for name in self._fields:
                array = getattr(self, name)
                self._flat[name] = torch.from_numpy(array.reshape(total, *array.shape[2:]))
            self.generator_ready = True
        batch_size = batch_size or total
        for start in range(0, total, batch_size):
            yield self._get_samples(indices[start:start + batch_size])

    def reset(self) -> None:
        """SB3's ``reset``, but the observation arrays are allocated once (on huge pages, see
        :func:`~glimpse_gym.envs.memory.large_empty`) and kept between rollouts.

        SB3 allocates them afresh with ``np.zeros`` at every rollout, and writing 200 MB of
        fresh pages costs ~50,000 page faults per rollout (~80 ms here, about a tenth of a
        rollout). Every slot is written by ``add`` before ``get`` reads it (``get`` asserts
        a full buffer), so the old contents are never seen. Action masks are refilled with
        ones in place, as SB3 would.
        """
        kept = getattr(self, "observations", None)
        masks = getattr(self, "action_masks", None)
        self._reused: dict[str, torch.Tensor] = getattr(self, "_reused", {})
        super().reset()  # fresh np.zeros arrays: untouched, so dropping them costs nothing
        if kept is None:
            kept = {k: _zeros(v.shape, v.dtype) for k, v in self.observations.items()}
        self.observations = kept
        if masks is not None:
            masks.fill(1)
            self.action_masks = masks

    def add(self, obs: dict[str, np.ndarray], *args: Any, **kwargs: Any) -> None:
        """SB3's ``add``, writing each observation array once (SB3 copies it, then writes)."""
        for key, store in self.observations.items():
            store[self.pos] = np.reshape(obs[key], store.shape[1:])
        stores, self.observations = self.observations, {}  # SB3's add: everything else
        try:
            super().add(obs, *args, **kwargs)
        finally:
            self.observations = stores

    def _take(self, name: str, index: torch.Tensor) -> torch.Tensor:
        source = self._flat[name]
        if not name.startswith("obs/"):
            return source.index_select(0, index).to(self.device)
        # observations: into a buffer reused by every minibatch (a fresh 63 MB tensor per
        # minibatch costs page faults: 6 ms became 15-75 ms here)
        out = self._reused.get(name)
        if out is None or len(out) < len(index):
            out = self._reused[name] = large_empty((len(index), *source.shape[1:]),
                                                   source.dtype)
        out = torch.index_select(source, 0, index, out=out[:len(index)])
        return out.to(self.device)

    def _columns(self, index: torch.Tensor) -> dict[str, Any]:
        return {
            "observations": {k: self._take(f"obs/{k}", index) for k in self.observations},
            "actions": self._take("actions", index).float(),
            "old_values": self._take("values", index).flatten(),
            "old_log_prob": self._take("log_probs", index).flatten(),
            "advantages": self._take("advantages", index).flatten(),
            "returns": self._take("returns", index).flatten(),
        }

    def _get_samples(self, batch_inds: np.ndarray, env: Any = None) -> Any:
        index = torch.from_numpy(np.ascontiguousarray(batch_inds, dtype=np.int64))
        return self._samples(**self._columns(index))


def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.zeros`` on huge pages (for arrays of 2 MB or more)."""
    torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    return large_empty(tuple(shape), torch_dtype).zero_().numpy()


class GlimpseRolloutBuffer(_FlatMinibatches, DictRolloutBuffer):
    """PPO's ``DictRolloutBuffer`` with fewer copies (``rollout_buffer_class=`` of PPO)."""

    _samples = DictRolloutBufferSamples


class MaskableGlimpseRolloutBuffer(_FlatMinibatches, MaskableDictRolloutBuffer):
    """MaskablePPO's ``MaskableDictRolloutBuffer`` with fewer copies."""

    _fields = (*_FlatMinibatches._fields, "action_masks")
    _samples = MaskableDictRolloutBufferSamples

    def _columns(self, index: torch.Tensor) -> dict[str, Any]:
        columns = super()._columns(index)
        columns["action_masks"] = self._take("action_masks", index).reshape(-1, self.mask_dims)
        return columns
