"""The checks of what a user passes to the environments: actions, seeds, reset options and
classifier heads. Each raises an error that says what was passed, what is valid and what to
do, before the environment changes anything."""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np
import torch

from glimpse_gym.envs.source import GlimpseSource
from glimpse_gym.errors import InvalidAction


def check_action(action: Any, num_cells: int) -> int:
    """The cell index of ``action``, or :class:`InvalidAction` saying what is valid.

    Valid: a Python or numpy integer (or a 0-d integer array) in ``[0, num_cells)``. Invalid:
    bools, floats (even whole ones), NaN, arrays with a shape, out-of-range or negative values.
    """
    if isinstance(action, (bool, np.bool_)):
        raise InvalidAction(f"action {action!r} is a bool; expected an integer cell index in "
                            f"[0, {num_cells}) (row-major)")
    if isinstance(action, (list, tuple)):
        raise InvalidAction(f"action {reprlib.repr(action)} is a {type(action).__name__}; "
                            f"expected one integer cell index in [0, {num_cells}) (row-major) "
                            "per step (a list of actions, one per env, is for the vector env, "
                            "gym.make_vec)")
    if isinstance(action, np.ndarray):
        if action.shape != () or not np.issubdtype(action.dtype, np.integer):
            raise InvalidAction(f"action is an array of shape {action.shape} and dtype "
                                f"{action.dtype}; expected one integer cell index in "
                                f"[0, {num_cells})")
        action = action.item()
    if not isinstance(action, (int, np.integer)):
        raise InvalidAction(f"action {action!r} of type {type(action).__name__} is not an "
                            f"integer; expected a cell index in [0, {num_cells}) (row-major)")
    cell = int(action)
    if not 0 <= cell < num_cells:
        raise InvalidAction(f"action {cell} is outside the grid; valid cells are 0 to "
                            f"{num_cells - 1} (row-major)")
    return cell


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """``seed`` as a Python int (Gymnasium's seeding takes no numpy integers) or None, else a
    ValueError saying what is valid: None or an integer >= 0 (Python or numpy, not a bool)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)):
        raise ValueError(f"{name} {seed!r} is a bool; pass None or an integer >= 0")
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{name} {seed!r} of type {type(seed).__name__} is not an integer; "
                         "pass None or an integer >= 0 (Python or numpy)")
    if seed < 0:
        raise ValueError(f"{name} {seed} is negative; pass None or an integer >= 0")
    return int(seed)


def check_options(options: Any, key: str, usage: str) -> Any:
    """``options[key]`` (None when absent) after checking that ``options`` is None or a dict
    with no other key; ``usage`` shows the valid form in the error."""
    if options is None:
        return None
    if not isinstance(options, dict):
        raise ValueError(f"options must be None or a dict, got {type(options).__name__} "
                         f"{reprlib.repr(options)}; pass {usage}")
    unknown = [k for k in options if k != key]
    if unknown:
        raise ValueError(f"unknown reset options {unknown}; the only option is {key!r}: pass "
                         f"{usage}")
    return options.get(key)


def check_seeds(seed: Any, n: int) -> list[int | None]:
    """One seed per env (Python ints or None) from ``reset``'s ``seed``, or a ValueError."""
    if seed is None:
        return [None] * n
    if isinstance(seed, np.ndarray) and seed.ndim == 0:
        seed = seed.item()
    if isinstance(seed, (list, tuple, np.ndarray)):
        if len(seed) != n:
            raise ValueError(f"seed is a sequence of {len(seed)} seeds for {n} envs; pass "
                             f"one seed per env, or one integer (env i gets seed + i)")
        return [check_seed(s, f"seed[{i}]") for i, s in enumerate(seed)]
    first = check_seed(seed)
    return [first + i for i in range(n)]

def check_indices(options: Any, n: int, m: int, device: torch.device) -> torch.Tensor | None:
    """The images of ``options={"indices": [...]}`` (``n`` indices into ``m`` images) as a new
    tensor on ``device`` (the infos hand it out, so it must not be the caller's array), or
    None; or a ValueError."""
    usage = f'options={{"indices": [...]}}, {n} integer image indices in [0, {m})'
    indices = check_options(options, "indices", usage)
    if options is None or "indices" not in options:
        return None
    try:
        a = indices.detach().cpu().numpy() if torch.is_tensor(indices) else \
            np.asarray(indices)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"options['indices'] {reprlib.repr(indices)} is not an array of "
                         f"indices ({exc}); pass {usage}") from None
    if a.shape != (n,):
        raise ValueError(f"options['indices'] has shape {a.shape}; expected ({n},), one "
                         f"image index per env: pass {usage}")
    if not np.issubdtype(a.dtype, np.integer):  # bools are not integers here
        raise ValueError(f"options['indices'] has dtype {a.dtype}, not an integer "
                         f"dtype (no rounding, no bools): pass {usage}")
    bad = (a < 0) | (a >= m)
    if bad.any():
        raise ValueError(f"options['indices'] out of range in envs "
                         f"{np.flatnonzero(bad)[:5].tolist()} (values {a[bad][:5].tolist()});"
                         f" this split has {m} images, pass indices in [0, {m})")
    return torch.tensor(a.astype(np.int64), dtype=torch.long, device=device)


def check_head(head: tuple[np.ndarray, np.ndarray],
                source: GlimpseSource) -> tuple[np.ndarray, np.ndarray]:
    weight, bias = (np.asarray(h, dtype=np.float32) for h in head)
    k, d = source.num_classes, source.feature_dim
    if weight.shape != (k, d) or bias.shape != (k,):
        raise ValueError(f"head must be (weight [{k}, {d}], bias [{k}]) for this bank; got "
                         f"{weight.shape} and {bias.shape}")
    return weight, bias
