"""Which image an episode shows: a counter-based hash, identical in the single and vector env.

On seeding, an env draws one 63-bit key from its ``np_random``; its k-th episode (k = 0, 1,
...) shows image ``splitmix64(key + k * golden) mod N``. The native vector env evaluates the
same formula for all its envs at once as tensor operations, so it reproduces
``SyncVectorEnv`` of single envs seeded ``seed + i`` exactly, with no per-env Python loop.
"""

from __future__ import annotations

import numpy as np
import torch

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def _signed(x: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return x - (1 << 64) if x >= 1 << 63 else x


def draw_key(rng: np.random.Generator) -> int:
    """The episode key of a freshly seeded generator."""
    return int(rng.integers(0, 1 << 63))


def episode_image(key: int, episode: int, num_images: int) -> int:
    """Image index of episode ``episode`` for ``key`` (Python ints)."""
    z = (key + (episode + 1) * GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    z ^= z >> 31
    return (z >> 1) % num_images


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def episode_images(keys: torch.Tensor, episodes: torch.Tensor, num_images: int) -> torch.Tensor:
    """:func:`episode_image` for int64 tensors ``keys`` and ``episodes`` (wrapping arithmetic).

    On the CPU the arithmetic runs in numpy's uint64 (logical shifts and wrapping products
    natively: about half the tensor version's time); elsewhere on tensors."""
    if keys.device.type == "cpu" and episodes.device.type == "cpu":
        return torch.from_numpy(_episode_images_numpy(keys.numpy(), episodes.numpy(), num_images))
    return _episode_images_tensor(keys, episodes, num_images)


def _episode_images_numpy(keys: np.ndarray, episodes: np.ndarray, num_images: int) -> np.ndarray:
    k, e = keys.astype(np.int64).view(np.uint64), episodes.astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        z = k + (e + np.uint64(1)) * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z ^= z >> np.uint64(31)
        return ((z >> np.uint64(1)) % np.uint64(num_images)).astype(np.int64)


def _episode_images_tensor(keys: torch.Tensor, episodes: torch.Tensor,
                           num_images: int) -> torch.Tensor:
    z = keys + (episodes + 1) * _signed(GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(MIX1)
    z = (z ^ _shr(z, 27)) * _signed(MIX2)
    z = z ^ _shr(z, 31)
    return _shr(z, 1) % num_images
