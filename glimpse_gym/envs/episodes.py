"""Which image an episode shows: a counter-based hash, identical in the single and vector env.

On seeding, an env draws one 63-bit key from its ``np_random``; its k-th episode (k = 0, 1,
...) shows image ``splitmix64(key + k * golden) mod N``. The native vector env evaluates the
same formula for all its envs at once (a compiled loop on the CPU, tensor operations
elsewhere), so it reproduces ``SyncVectorEnv`` of single envs seeded ``seed + i`` exactly,
with no per-env Python loop.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from glimpse_gym.envs.kernels import JIT

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


def episode_images(keys: torch.Tensor, episode: int, num_images: int) -> torch.Tensor:
    """:func:`episode_image` of episode ``episode`` for int64 tensor ``keys`` (the 63-bit keys
    of the envs): on the CPU a compiled loop in uint64, elsewhere int64 tensor arithmetic."""
    if keys.device.type == "cpu":
        out = np.empty(len(keys), dtype=np.int64)
        _episode_images_compiled(keys.numpy(), episode, num_images, out)
        return torch.from_numpy(out)
    return _episode_images_tensor(keys, torch.tensor(episode, device=keys.device), num_images)


def _episode_images_tensor(keys: torch.Tensor, episodes: torch.Tensor,
                           num_images: int) -> torch.Tensor:
    z = keys + (episodes + 1) * _signed(GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(MIX1)
    z = (z ^ _shr(z, 27)) * _signed(MIX2)
    z = z ^ _shr(z, 31)
    return _shr(z, 1) % num_images


_GOLDEN, _MIX1, _MIX2 = np.uint64(GOLDEN), np.uint64(MIX1), np.uint64(MIX2)


@numba.njit(**JIT)
def _episode_images_compiled(keys: np.ndarray, episode: int, num_images: int,
                             out: np.ndarray) -> None:
    """``out[i]`` = image of episode ``episode`` for ``keys[i]``: the formula of
    :func:`episode_image` in wrapping uint64 arithmetic."""
    step = np.uint64(episode + 1) * _GOLDEN
    for i in range(len(keys)):
        z = np.uint64(keys[i]) + step
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
        out[i] = np.int64((z >> np.uint64(1)) % np.uint64(num_images))
