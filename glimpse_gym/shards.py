"""Arrays stored in parts along their first axis and read as one.

A sharded bank keeps each array as several ``.npy`` files of consecutive images (written by
parts, for example one process per part under ``torchrun``). :class:`ShardedArray` puts the
memory-mapped parts back together without reading them: indexing the first axis with an
integer, a slice or an integer array reads only the rows asked for, from the parts that hold
them, so a bank larger than memory stays on disk. ``np.asarray(a)`` is the one operation that
reads the whole array into memory.

>>> import numpy as np
>>> a = ShardedArray([np.arange(6).reshape(3, 2), np.arange(6, 10).reshape(2, 2)])
>>> a.shape, a[3].tolist(), a[[4, 0]].tolist(), a[2:4, 1].tolist()
((5, 2), [6, 7], [[8, 9], [0, 1]], [5, 7])
"""

from __future__ import annotations

import contextlib
import math
import mmap
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class ShardedArray:
    """``[N, ...]`` read from parts ``[n_i, ...]`` (memory maps, usually) stacked on axis 0.

    Supports ``shape``, ``dtype``, ``ndim``, ``len``, ``nbytes``, ``np.asarray`` (a full
    copy in memory) and indexing whose first element is an integer, a slice or an integer
    (or boolean) array, followed by integers and slices (or by anything numpy takes on one
    part, after an integer).
    """

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        if not parts:
            raise ValueError("a sharded array needs at least one part")
        rest, dtype = parts[0].shape[1:], parts[0].dtype
        for i, p in enumerate(parts):
            if p.shape[1:] != rest or p.dtype != dtype:
                raise ValueError(f"part {i} is {p.dtype}{list(p.shape)}, part 0 "
                                 f"{dtype}{list(parts[0].shape)}: the parts must differ only "
                                 "in their first axis")
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in parts])  # part i: starts[i]..starts[i+1]
        self.shape = (int(self.starts[-1]), *rest)
        self.dtype = dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedArray({self.dtype}{list(self.shape)}, {len(self.parts)} parts)"

    def cells(self, images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``[B, C]``: ``a[images[b], :, rows[b], cols[b]]`` of a ``[N, C, H, W]`` array."""
        which = np.searchsorted(self.starts, images, side="right") - 1
        out = np.empty((len(images), self.shape[1]), self.dtype)
        for part in np.unique(which):
            sel = np.flatnonzero(which == part)
            out[sel] = self.parts[part][images[sel] - self.starts[part], :, rows[sel], cols[sel]]
        return out

    def reshape(self, *shape: int) -> ShardedArray:
        """The parts reshaped to ``[n_i, *shape[1:]]`` (views); ``shape[0]`` must be N."""
        if shape[0] != self.shape[0]:
            raise ValueError(f"a sharded array keeps its first axis: reshape to "
                             f"({self.shape[0]}, ...), not {shape}")
        return ShardedArray([np.asarray(p).reshape(len(p), *shape[1:]) for p in self.parts])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate([np.asarray(p) for p in self.parts])
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if first is Ellipsis or first is None:
            raise IndexError("a sharded array's first index must be an integer, a slice or "
                             "an integer array")
        n = self.shape[0]
        if isinstance(first, (bool, np.bool_)):
            raise IndexError("a sharded array takes no boolean scalar index")
        if isinstance(first, (int, np.integer)):
            i = int(first) + n if first < 0 else int(first)
            if not 0 <= i < n:
                raise IndexError(f"index {int(first)} is out of bounds for axis 0 with size {n}")
            part = int(np.searchsorted(self.starts, i, side="right")) - 1
            return self.parts[part][(i - int(self.starts[part]), *rest)]
        if any(isinstance(k, (list, np.ndarray)) for k in rest):
            raise IndexError("a sharded array takes index arrays after the first axis only "
                             "when the first index is an integer")
        if isinstance(first, slice):
            start, stop, step = first.indices(n)
            if step == 1:
                return self._range(start, max(start, stop), rest)
            first = np.arange(start, stop, step)
        return self._take(np.asarray(first), rest)

    def _range(self, start: int, stop: int, rest: tuple) -> np.ndarray:
        pieces = []
        for part, (a, b) in enumerate(zip(self.starts[:-1], self.starts[1:], strict=True)):
            lo, hi = max(start, a), min(stop, b)
            if lo < hi or (not pieces and part == len(self.parts) - 1):
                pieces.append(self.parts[part][(slice(lo - a, max(lo, hi) - a), *rest)])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _take(self, index: np.ndarray, rest: tuple) -> np.ndarray:
        n = self.shape[0]
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"a boolean index must have shape ({n},), not {index.shape}")
            index = np.flatnonzero(index)
        if not np.issubdtype(index.dtype, np.integer):
            raise IndexError(f"arrays used as indices must be of integer type, not "
                             f"{index.dtype}")
        flat = index.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + n, flat)
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise IndexError(f"an index is out of bounds for axis 0 with size {n}")
        which = np.searchsorted(self.starts, flat, side="right") - 1
        out = None
        for part in np.unique(which):
            sel = np.flatnonzero(which == part)
            got = self.parts[part][(flat[sel] - self.starts[part], *rest)]
            if out is None:
                out = np.empty((flat.size, *got.shape[1:]), got.dtype)
            out[sel] = got
        if out is None:  # no index at all: the shape numpy would give
            out = self.parts[0][(np.zeros(0, np.int64), *rest)]
        return out.reshape(*index.shape, *out.shape[1:])


def stack(parts: Sequence[np.ndarray]) -> np.ndarray | ShardedArray:
    """The one part itself, or a :class:`ShardedArray` of several."""
    return parts[0] if len(parts) == 1 else ShardedArray(parts)


def memory_maps(array: Any) -> Iterator[mmap.mmap]:
    """The memory maps behind a bank array in any of its forms (parts, int8 views, logits
    computed by the head, numpy views of a memory map)."""
    if isinstance(array, ShardedArray):
        for part in array.parts:
            yield from memory_maps(part)
    elif hasattr(array, "raw"):  # int8 features
        yield from memory_maps(array.raw)
    elif hasattr(array, "weight") and hasattr(array, "features"):  # logits by the head
        yield from memory_maps(array.features)
    else:
        while isinstance(array, np.ndarray):
            if isinstance(getattr(array, "_mmap", None), mmap.mmap):
                yield array._mmap
                return
            array = array.base


def advise_random(array: Any) -> None:
    """Tell the kernel that the files behind ``array`` are read at random: no read-ahead, so
    reading one cell of a bank larger than memory brings in one page, not a run of them that
    would push other cells out of the page cache. (Where the system cannot, nothing changes.)"""
    if not hasattr(mmap, "MADV_RANDOM"):
        return
    for m in memory_maps(array):
        with contextlib.suppress(OSError, ValueError):
            m.madvise(mmap.MADV_RANDOM)


__all__ = ["ShardedArray", "advise_random", "memory_maps", "stack"]
