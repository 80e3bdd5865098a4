"""The compact forms of a bank's arrays, read as the plain ones.

- :class:`Dequantized`: int8 features with one scale per channel, read as float32
  ``q * scale[d]`` (``glimpse extract-features --feature-dtype int8``: a quarter of float32's
  bytes, half of float16's).
- :class:`HeadLogits`: per-cell logits not stored but computed from the features by the bank's
  linear head at each read, ``logits[n, k, i, j] = sum_d W[k, d] features[n, d, i, j] + b[k]``
  (``--no-store-logits``: a bank of 1,000 classes would otherwise hold 1,000 floats per cell).

Both index like the arrays they stand for (an integer, a slice or an integer array on the
first axis, then integers and slices) and read only what is asked for, from memory maps or
:class:`~glimpse_gym.shards.ShardedArray` parts alike; ``np.asarray`` reads everything.

>>> import numpy as np
>>> q = np.array([[[[2]], [[-4]]]], np.int8)                       # [1, 2, 1, 1]
>>> f = Dequantized(q, np.array([0.5, 0.25], np.float32))
>>> f[0].ravel().tolist(), f.dtype
([1.0, -1.0], dtype('float32'))
>>> logits = HeadLogits(f, np.array([[1.0, 1.0], [2.0, 0.0]], np.float32), np.zeros(2, np.float32))
>>> logits[0, :, 0, 0].tolist(), logits.shape
([0.0, 2.0], (1, 2, 1, 1))
"""

from __future__ import annotations

from typing import Any

import numpy as np

INT8_MAX = 127


def quantize(features: Any, scale: Any) -> Any:
    """float features ``[B, D, ...]`` (numpy or torch) -> int8 ``round(x / scale[d])``
    clipped to +-127."""
    shape = (1, -1) + (1,) * (features.ndim - 2)
    q = (features / scale.reshape(shape)).round().clip(-INT8_MAX, INT8_MAX)
    return q.astype(np.int8) if isinstance(q, np.ndarray) else q.to(dtype=_torch_int8())


def _torch_int8() -> Any:
    import torch

    return torch.int8


def gather_cells(array: Any, images: np.ndarray, rows: np.ndarray, cols: np.ndarray
                 ) -> np.ndarray:
    """``[B, C]`` float32: cell ``(rows[b], cols[b])`` of image ``images[b]`` of a bank array
    ``[N, C, H, W]`` in any of its forms (a memory map reads only those cells)."""
    if hasattr(array, "cells"):
        return np.asarray(array.cells(images, rows, cols), np.float32)
    return np.asarray(array[images, :, rows, cols], np.float32)


def read_images(array: Any, index: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """``array[index]`` as ``dtype`` for a bank array in any form, the rows read in file
    order (a memory map or its parts read forward) and returned in the order asked."""
    order = np.argsort(index, kind="stable")
    out = np.empty((len(index), *array.shape[1:]), dtype)
    out[order] = np.asarray(array[index[order]], dtype)
    return out


def _split(key: Any) -> tuple[Any, tuple]:
    return (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())


def _scalar(k: Any) -> bool:
    return isinstance(k, (int, np.integer))


class Dequantized:
    """int8 ``[N, D, ...]`` with per-channel scales ``[D]`` read as float32."""

    def __init__(self, raw: Any, scale: np.ndarray) -> None:
        if raw.ndim < 2 or scale.shape != (raw.shape[1],):
            raise ValueError(f"one scale per channel: features {list(raw.shape)}, scales "
                             f"{list(scale.shape)}")
        self.raw, self.scale = raw, np.asarray(scale, np.float32)
        self.shape, self.dtype = tuple(raw.shape), np.dtype(np.float32)

    ndim = property(lambda self: len(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Dequantized(int8{list(self.shape)})"

    def _scales(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.broadcast_to(self.scale.reshape(1, -1, *[1] * (len(shape) - 2)), shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        q = np.asarray(self.raw[key])
        return q.astype(np.float32) * self._scales(self.shape)[key]

    def cells(self, images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``[B, D]`` float32 (see :func:`gather_cells`)."""
        return gather_cells(self.raw, images, rows, cols) * self.scale

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self.raw).astype(np.float32) * self._scales(self.shape)
        return out if dtype is None else out.astype(dtype, copy=False)

    def reshape(self, *shape: int) -> Dequantized:
        """The same values as ``[N, D, ...]`` of another spatial shape (no copy)."""
        if shape[:2] not in ((self.shape[0], self.shape[1]), (self.shape[0], -1)):
            raise ValueError(f"reshape keeps N and D: ({self.shape[0]}, {self.shape[1]}, ...)")
        return Dequantized(self.raw.reshape(self.shape[0], self.shape[1], *shape[2:]),
                           self.scale)


class HeadLogits:
    """``[N, K, ...]`` logits from features ``[N, D, ...]`` through ``weight [K, D]`` and
    ``bias [K]``, float32, computed at each read."""

    def __init__(self, features: Any, weight: np.ndarray, bias: np.ndarray) -> None:
        if weight.shape != (bias.shape[0], features.shape[1]):
            raise ValueError(f"the head {list(weight.shape)} does not read features "
                             f"{list(features.shape)}")
        self.features, self.weight, self.bias = features, weight, bias
        self.shape = (features.shape[0], weight.shape[0], *features.shape[2:])
        self.dtype = np.dtype(np.float32)

    ndim = property(lambda self: len(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"HeadLogits({list(self.shape)})"

    def __getitem__(self, key: Any) -> np.ndarray:
        first, rest = _split(key)
        if isinstance(first, (list, np.ndarray)) and np.ndim(first) > 1:  # one image axis
            index = np.asarray(first)
            out = self[(index.reshape(-1), *rest)]
            return out.reshape(*index.shape, *out.shape[1:])
        k_key, spatial = (rest[0], rest[1:]) if rest else (slice(None), ())
        if any(not (_scalar(k) or isinstance(k, slice)) for k in (k_key, *spatial)):
            raise IndexError("computed logits take integers and slices after the first index")
        f = np.asarray(self.features[(first, slice(None), *spatial)], np.float32)
        axis = 0 if _scalar(first) else 1  # where D (then K) sits in the result
        out = np.tensordot(f, self.weight, axes=([axis], [1]))  # [..., K] at the end
        out = np.moveaxis(out + self.bias, -1, axis)
        return out[(slice(None),) * axis + (k_key,)]

    def cells(self, images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``[B, K]`` float32 (see :func:`gather_cells`)."""
        return gather_cells(self.features, images, rows, cols) @ self.weight.T + self.bias

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def reshape(self, *shape: int) -> HeadLogits:
        """The same values as ``[N, K, ...]`` of another spatial shape (no copy)."""
        if shape[0] != self.shape[0] or shape[1] not in (self.shape[1], -1):
            raise ValueError(f"reshape keeps N and K: ({self.shape[0]}, {self.shape[1]}, ...)")
        d = self.features.shape[1]
        return HeadLogits(self.features.reshape(shape[0], d, *shape[2:]), self.weight,
                          self.bias)


__all__ = ["Dequantized", "HeadLogits", "INT8_MAX", "gather_cells", "quantize",
           "read_images"]
