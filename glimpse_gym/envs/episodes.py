"""Fast forms of :func:`glimpse_gym.rules.episode_image` for many envs at once (a compiled
loop on the CPU, int64 tensor arithmetic elsewhere); ``tests/envs/test_rules.py`` checks them
against the rule. With them the native vector env reproduces ``SyncVectorEnv`` of single envs
seeded ``seed + i`` exactly, with no per-env Python loop.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from glimpse_gym.envs.kernels import JIT
from glimpse_gym.rules import GOLDEN, MIX1, MIX2


def _signed(x: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return x - (1 << 64) if x >= 1 << 63 else x


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def episode_images(keys: torch.Tensor, episode: int, num_images: int) -> torch.Tensor:
    """:func:`~glimpse_gym.rules.episode_image` of episode ``episode`` for the envs' 63-bit
    ``keys`` (int64): on the CPU a compiled loop in uint64, elsewhere int64 tensor arithmetic."""
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
    :func:`~glimpse_gym.rules.episode_image` in wrapping uint64 arithmetic."""
    step = np.uint64(episode + 1) * _GOLDEN
    for i in range(len(keys)):
        z = np.uint64(keys[i]) + step
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
        out[i] = np.int64((z >> np.uint64(1)) % np.uint64(num_images))
