"""Compiled (numba) loops for the vector env's glimpse step on the CPU: fast forms of
:mod:`glimpse_gym.rules` (action check, readout), tested against it.

A glimpse step of 4096 envs done as a dozen numpy / torch calls spends most of its time
between the calls: each pass reads and writes [N] or [N, K] arrays that have left the caches,
and the argmax over 10 classes is a slow inner reduction. These loops do one env at a time in
one pass, with the same arithmetic as the tensor path (float64 sums in glimpse order, the
first maximum), so the two paths give identical results (tests run both).

The episode schedule and the coverage have their compiled loops beside their tensor forms
(:mod:`.episodes`, :mod:`.coverage`), with the same :data:`JIT` options.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

# compiled on first use, cached beside the source; no bounds checks (callers pass checked
# indices), the GIL released
JIT = {"nogil": True, "cache": True, "boundscheck": False}


@numba.njit(**JIT)
def decide(logit_sum: np.ndarray, labels: np.ndarray, i: int, prediction: np.ndarray,
           correct: np.ndarray) -> None:
    """Env ``i``'s readout: the first maximum of ``logit_sum[i]`` into ``prediction[i]``,
    whether it is ``labels[i]`` into ``correct[i]``."""
    best, value = 0, logit_sum[i, 0]
    for j in range(1, logit_sum.shape[1]):  # written as selects: no unpredictable branch
        v = logit_sum[i, j]
        greater = v > value
        best = j if greater else best
        value = v if greater else value
    prediction[i] = best
    correct[i] = best == labels[i]


@numba.njit(**JIT)
def positions(cell: np.ndarray, num_cells: int, bases: np.ndarray, out: np.ndarray) -> int:
    """Check ``cell [N]`` against ``[0, num_cells)`` and write ``out = bases + cell``
    (``[2, N]``: each env's flat position in the state tables, its bank row). Returns the
    first env whose action is out of range, or -1."""
    for i in range(len(cell)):
        if not 0 <= cell[i] < num_cells:
            return i
    for i in range(len(cell)):
        out[0, i] = bases[0, i] + cell[i]
        out[1, i] = bases[1, i] + cell[i]
    return -1


@numba.njit(**JIT)
def glimpse_state(cell: np.ndarray, t: int, flat: np.ndarray, visited: np.ndarray,
                  unvisited: np.ndarray, logits: np.ndarray, logit_sum: np.ndarray,
                  cells: np.ndarray, labels: np.ndarray, prediction: np.ndarray,
                  correct: np.ndarray) -> None:
    """Record glimpse ``t`` at ``cell [N]`` (``flat [N]``: its positions in the ``N*H*W``
    masks, from :func:`positions`): mark the cell visited, add its ``logits [N, K]``
    (gathered by the caller) to ``logit_sum [N, K]`` unless it was visited before, and write
    each env's prediction (first maximum of the sum) and whether it is ``labels``."""
    n, k = logit_sum.shape
    for i in range(n):
        pos = flat[i]
        cells[i, t] = cell[i]
        if unvisited[pos]:  # a revisit adds nothing
            unvisited[pos] = 0
            visited[pos] = 1
            for j in range(k):
                logit_sum[i, j] += logits[i, j]
        decide(logit_sum, labels, i, prediction, correct)


@numba.njit(**JIT)
def multiscale_glimpse(action: np.ndarray, t: int, parent: np.ndarray, children: np.ndarray,
                       visited: np.ndarray, mask: np.ndarray, gathered: np.ndarray,
                       valid: np.ndarray, rows: np.ndarray, logits: np.ndarray,
                       logit_sum: np.ndarray, cost_table: np.ndarray, cost: np.ndarray,
                       cells: np.ndarray, labels: np.ndarray, prediction: np.ndarray,
                       correct: np.ndarray) -> None:
    """Glimpse ``t`` of MultiScale-v0 at ``action [N]`` (checked), one env at a time. A cell
    under a closed ``parent`` is wasted: its row of ``gathered [N, D]`` (the features the
    caller gathered, to be written to the observation) is zeroed. Otherwise slot t is
    ``valid``, and a new cell is marked visited, closed in ``mask``, opens its ``children``
    and adds its logits (bank row ``rows[i]``) and its cost (``cost [3, N]``). Then each
    env's prediction (first maximum of ``logit_sum``) and whether it is ``labels``."""
    n, k = logit_sum.shape
    for i in range(n):
        a = action[i]
        cells[i, t] = a
        p = parent[a]
        if p >= 0 and not visited[i, p]:
            gathered[i, :] = 0.0
        else:
            valid[i, t] = 1
            if not visited[i, a]:  # a revisit adds nothing
                visited[i, a] = 1
                mask[i, a] = 0
                for jj in range(children.shape[1]):
                    c = children[a, jj]
                    if c >= 0:
                        mask[i, c] = 1
                row = rows[i]
                for j in range(k):
                    logit_sum[i, j] += logits[row, j]
                for j in range(cost.shape[0]):
                    cost[j, i] += cost_table[a, j]
        decide(logit_sum, labels, i, prediction, correct)


@numba.njit(**JIT)
def multiscale_clear(cells: np.ndarray, t: int, children: np.ndarray, initial: np.ndarray,
                     visited: np.ndarray, mask: np.ndarray, obs: np.ndarray,
                     partial: bool) -> None:
    """Undo what MultiScale-v0's last ``t`` glimpses set, touching only their cells: each
    glimpsed cell unvisited, its observation row (``partial``) zeroed, it and its children
    back to the ``initial`` mask; then ``cells`` back to -1. (The glimpses mode's slots and
    the sums are reset by the caller.)"""
    n, num_actions = visited.shape
    for i in range(n):
        for s in range(t):
            a = cells[i, s]
            visited[i, a] = 0
            mask[i, a] = initial[a]
            for jj in range(children.shape[1]):
                c = children[a, jj]
                if c >= 0:
                    mask[i, c] = initial[c]
            if partial:
                obs[i * num_actions + a, :] = 0.0
            cells[i, s] = -1


@numba.njit(**JIT)
def clear_episodes(cells: np.ndarray, t: int, num_cells: int, visited: np.ndarray,
                   unvisited: np.ndarray, logit_sum: np.ndarray) -> int:
    """Undo what the last ``t`` glimpses set: only the glimpsed cells are visited, so only
    they are cleared (not all ``N*H*W`` entries); every sum back to 0. Then reads one byte of
    every cache line of ``visited`` and ``unvisited`` in order (the full mode's grid gather
    has just evicted them; read in order, the prefetcher streams them back) and returns the
    sum only so that the reads stay: the first glimpse's scattered accesses then hit the
    cache (its step took 0.21-0.22 ms instead of 0.26-0.29 ms for 4096 envs here)."""
    n = cells.shape[0]
    for i in range(n):
        for j in range(t):
            pos = i * num_cells + cells[i, j]
            visited[pos] = 0
            unvisited[pos] = 1
            cells[i, j] = -1
        logit_sum[i, :] = 0.0
    warm = 0  # read one byte per cache line: the first glimpse then finds them cached
    for p in range(0, len(visited), 64):
        warm += visited[p] + unvisited[p]
    return warm


@numba.njit(**JIT)
def float16_channels_last(grids: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """``grids [B, D, C]`` (float16 bit patterns as uint16) -> ``out [B, C, D]`` float32
    through ``table`` (the float32 value of every pattern: exact, as ``astype``). One image
    at a time: its grid stays in the first-level cache while it is transposed (torch's
    strided copy of the same [4096, 32, 121] -> [4096, 121, 32] ran 3x slower here)."""
    b, d, c = grids.shape
    for i in range(b):
        for j in range(c):
            for k in range(d):
                out[i, j, k] = table[grids[i, k, j]]


@numba.njit(**JIT)
def float32_channels_last(grids: np.ndarray, out: np.ndarray) -> None:
    """``grids [B, D, C]`` -> ``out [B, C, D]``, any float type to float32."""
    b, d, c = grids.shape
    for i in range(b):
        for j in range(c):
            for k in range(d):
                out[i, j, k] = grids[i, k, j]


def channels_last(grids: np.ndarray) -> np.ndarray:
    """Bank grids ``[B, D, H, W]`` (float16 or float32) as ``[B, H*W, D] float32``."""
    b, d = grids.shape[:2]
    flat = np.ascontiguousarray(grids).reshape(b, d, -1)
    out = np.empty((b, flat.shape[2], d), np.float32)
    if flat.dtype == np.float16:
        float16_channels_last(flat.view(np.uint16), float16_values(), out)
    else:
        float32_channels_last(flat, out)
    return out


@functools.cache
def float16_values() -> np.ndarray:
    """float32 value of every float16 bit pattern (256 kB): a gather through it converts
    float16 to float32 exactly as ``astype`` does, at twice its speed."""
    return np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(
        np.float32)
