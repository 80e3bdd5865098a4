"""Deep copies and pickles of the native vector env that continue like the original."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

# what a copy takes over (see CopyByRebuild.__getstate__): Gymnasium's attributes, and
# the state tensors that reset and step change (the first three reset replaces, the others
# it writes in place)
_COPIED_ATTRIBUTES = ("spec", "closed", "_np_random", "_np_random_seed")
_REPLACED_TENSORS = ("_keys", "_index", "_env_labels")
_DYNAMIC_TENSORS = (*_REPLACED_TENSORS, "_visited", "_unvisited", "_cells", "_logit_sum",
                    "_obs_features", "_obs_valid", "_obs_index")


def copy_value(value: Any) -> Any:
    """A copy of a tensor or numpy array."""
    return value.clone() if torch.is_tensor(value) else value.copy()


TORCH_COPY_BYTES = 2**18  # copies at least this large use torch's threads


class Recycler:
    """Copies that are new arrays to their holder, in memory reused once nobody holds them.

    ``copy=True`` must hand back arrays that no later step changes. A fresh array per copy
    does that, but a step of 4096 envs would then allocate megabytes that the kernel maps and
    zeroes page by page (and that leave the caches). The recycler keeps up to ``keep``
    buffers per output; a copy goes into one that only the recycler still references
    (``sys.getrefcount``: whoever keeps the array, a view of it, a dict holding it or a
    tensor made by ``torch.from_numpy`` holds a reference), else into a new one. A large
    copy is torch's (both threads: 3 MB in 134 us against numpy's 320 us here). A raw
    pointer kept without a reference to the array (``arr.ctypes.data``) is not seen: copy
    such arrays yourself.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._buffers: dict[str, list[np.ndarray]] = {}

    def copy(self, key: str, src: np.ndarray) -> np.ndarray:
        buffers = self._buffers.setdefault(key, [])
        for i in range(len(buffers)):
            # 2: the list's reference and getrefcount's argument; nobody else holds it
            if sys.getrefcount(buffers[i]) == 2 and buffers[i].shape == src.shape \
                    and buffers[i].dtype == src.dtype:
                out = buffers[i]
                break
        else:
            out = np.empty_like(src)
            if len(buffers) < self.keep:
                buffers.append(out)
        if src.nbytes >= TORCH_COPY_BYTES:  # both threads (worth their start-up)
            torch.from_numpy(out).copy_(torch.from_numpy(src))
        else:
            np.copyto(out, src)
        return out


class CopyByRebuild:
    """Pickling and ``copy.deepcopy`` keep the constructor's arguments and the dynamic state;
    the copy re-runs ``__init__`` (the bank is reopened) and writes the state into its own
    tensors, so that the compiled loops' numpy views (``_host``, ``_views``, ``_positions``)
    are views of the copy's memory, not of the original's."""

    def __getstate__(self) -> dict[str, Any]:
        attributes = {k: self.__dict__[k] for k in _COPIED_ATTRIBUTES if k in self.__dict__}
        state = {"kwargs": self._init_kwargs, "attributes": attributes,
                 "tensor_path": self._host is None, "compiled_coverage": self._cov.compiled}
        if self._started:
            tensors = {name: getattr(self, name).cpu().clone() for name in _DYNAMIC_TENSORS}
            state["dynamic"] = {
                **tensors, "bank_rows": self._bases[1].cpu().clone(), "t": self._t,
                "episode": self._episode, "autoreset": self._autoreset,
                "prediction": copy_value(self._prediction), "correct": copy_value(self._correct)}
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

