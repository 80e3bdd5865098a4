"""The checks of what a user passes to the environments: constructor arguments, seeds, reset
options, classifier heads and the vector env's actions (one action is checked by the rule
:func:`glimpse_gym.rules.check_action`). Each raises an error that says what was passed, what
is valid and what to do, before the environment changes anything."""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from glimpse_gym.envs.source import GlimpseSource
from glimpse_gym.errors import InvalidAction, ResetNeeded

OBSERVATION_MODES = ("full", "partial", "glimpses", "index")
# the index mode's bound: SB3 reads observations as float32, exact for integers up to 2**24
MAX_INDEX = 2**24 - 1
RENDER_MODES = (None, "rgb_array")


def check_env_args(observation: Any, render_mode: Any, glimpses: Any, num_cells: int,
                   num_images: int = 0) -> int:
    """Check the constructor arguments both envs share; returns T as a Python int."""
    if observation not in OBSERVATION_MODES:
        raise ValueError(f"observation must be one of {OBSERVATION_MODES}, got {observation!r}")
    if observation == "index" and num_images > MAX_INDEX + 1:
        raise ValueError(f"observation='index' numbers images up to {MAX_INDEX} (SB3 reads "
                         f"observations as float32); this bank has {num_images}: split it, "
                         "or use another observation mode")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
    if (isinstance(glimpses, (bool, np.bool_)) or not isinstance(glimpses, (int, np.integer))
            or not 1 <= glimpses <= num_cells):
        raise ValueError(f"glimpses must be an integer in [1, {num_cells}], got {glimpses!r}")
    return int(glimpses)


def check_vector_args(num_envs: Any, array_type: Any, autoreset_mode: Any) -> AutoresetMode:
    """A native vector env's own arguments; returns the autoreset mode (NextStep or SameStep)."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if array_type not in ("numpy", "torch"):
        raise ValueError(f"array_type must be 'numpy' or 'torch', got {array_type!r}")
    mode = AutoresetMode(autoreset_mode)
    if mode == AutoresetMode.DISABLED:
        raise ValueError("autoreset_mode must be NextStep or SameStep")
    return mode


def check_can_step(started: bool, done: bool, glimpses: int) -> None:
    """A single env's step: refused before the first reset and after the episode's end."""
    if not started:
        raise ResetNeeded("step() was called before reset(); call env.reset() first")
    if done:
        raise ResetNeeded(f"the episode ended after {glimpses} glimpses; call env.reset() to "
                          "start a new one")


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


def check_index(options: Any, n: int) -> int | None:
    """The image of a single env's ``reset(options={"index": i})`` (None without one), or a
    ValueError saying what is valid: an integer in ``[0, n)``."""
    index = check_options(options, "index", f'options={{"index": i}}, i in [0, {n})')
    if options is None or "index" not in options:
        return None
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"options['index'] {index!r} of type {type(index).__name__} is "
                         f"not an integer; pass an image index in [0, {n})")
    if not 0 <= index < n:
        raise ValueError(f"options['index'] {index} is outside [0, {n}); this split has "
                         f"{n} images, pass an index in [0, {n})")
    return int(index)


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


def check_actions(actions: Any, n: int) -> np.ndarray | torch.Tensor:
    """``actions`` for ``n`` envs as an integer array or tensor of shape ``(n,)`` (not yet
    range-checked: see :func:`raise_out_of_range`), or :class:`InvalidAction`."""
    try:
        a = actions if torch.is_tensor(actions) else np.asarray(actions)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise InvalidAction(f"actions {reprlib.repr(actions)} are not an array ({exc}); "
                            f"pass {n} integer cell indices, one per env, shape ({n},)") from None
    if torch.is_tensor(a):
        integer = not (a.dtype.is_floating_point or a.dtype.is_complex or a.dtype == torch.bool)
    else:
        integer = np.issubdtype(a.dtype, np.integer)
    if tuple(a.shape) != (n,) or not integer:
        raise InvalidAction(f"actions must be {n} integer cell indices, shape ({n},); got "
                            f"shape {tuple(a.shape)} dtype {a.dtype}")
    return a


def raise_out_of_range(actions: torch.Tensor, num_cells: int) -> None:
    """Raise :class:`InvalidAction` naming the envs whose actions are outside the grid."""
    bad = ((actions < 0) | (actions >= num_cells)).cpu()
    envs = torch.arange(len(actions))[bad][:5].tolist()
    raise InvalidAction(f"actions out of range in envs {envs} (values "
                        f"{actions.cpu()[bad][:5].tolist()}); valid cells are 0 to "
                        f"{num_cells - 1} (row-major)")
