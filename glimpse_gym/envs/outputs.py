"""What the native vector env hands back: observations, rewards and infos as numpy arrays or
tensors, copies or views (``array_type`` and ``copy``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from glimpse_gym.envs.checks import check_indices, check_seeds
from glimpse_gym.envs.copies import copy_value
from glimpse_gym.rules import seed_keys


class VectorOutputs:
    """The output side of :class:`~glimpse_gym.envs.GlimpseVectorEnv` (a mixin: it reads the
    env's state tensors)."""

    def _restart(self, seed: Any, options: dict[str, Any] | None,
                 num_images: int) -> tuple[dict, dict]:
        """``reset``: checks ``seed`` and ``options`` before anything changes, reseeds the
        episode streams (with a seed, or at the first reset) and starts every env's episode."""
        seeds = check_seeds(seed, self.num_envs)
        images = check_indices(options, self.num_envs, num_images, self.device)
        if seed is not None or not self._started:
            self._keys = seed_keys(seeds, self.device)
            self._episode = 0
        self._started = True
        self._start_episodes(images)
        self._autoreset = False
        return self._observation(), self._infos()

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
        return {k: self._out(v, copy=self.copy, key=k) for k, v in self._observed().items()}

    def _final_observations(self) -> np.ndarray:
        final = np.full(self.num_envs, None, dtype=object)
        arrays = {k: v.cpu().numpy().copy() for k, v in self._observed().items()}
        for i in range(self.num_envs):
            final[i] = {k: v[i] for k, v in arrays.items()}
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
            "index": self._copy("info.index", index) if self.copy else index,
            "prediction": self._prediction,
            "label": self._copy("info.label", label) if self.copy else label,
            "correct": self._correct,
            "cells": self._out(self._cells, copy=copy, key="info.cells"),
            "action_mask": self._out(self._unvisited, copy=copy, key="info.action_mask"),
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

    def _out(self, value: torch.Tensor, copy: bool = False, key: str | None = None) -> Any:
        """``value`` as the outputs' array type; ``copy``: a copy (on the CPU, recycled
        under ``key``: see :class:`~glimpse_gym.envs.copies.Recycler`)."""
        if self.array_type == "torch":
            return value.clone() if copy else value.to(self.device)
        array = value.detach().cpu().numpy()
        if not copy or value.device.type != "cpu":  # from CUDA, .cpu() made a new array
            return array
        return self._copy(key, array) if key is not None else array.copy()

    def _copy(self, key: str, value: Any) -> Any:
        """A copy of a numpy array (recycled) or a tensor."""
        return self._recycler.copy(key, value) if isinstance(value, np.ndarray) else \
            copy_value(value)


def _host_array(value: Any) -> np.ndarray:
    return value.cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
