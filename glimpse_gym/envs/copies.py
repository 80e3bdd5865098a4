"""Deep copies and pickles of the native vector env that continue like the original."""

from __future__ import annotations

from typing import Any

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

