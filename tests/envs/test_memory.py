"""Huge-page-backed tensors and the block-by-block bank loading of the vector env."""

from __future__ import annotations

import gc
import mmap

import numpy as np
import pytest
import torch

from glimpse_gym.envs import memory, tables, vector
from glimpse_gym.envs.memory import HUGE_PAGE, large_empty


def test_large_empty_is_an_ordinary_writable_tensor() -> None:
    t = large_empty((3, HUGE_PAGE // 4), torch.float32)  # 6 MB
    assert t.shape == (3, HUGE_PAGE // 4) and t.dtype == torch.float32 and t.is_contiguous()
    if hasattr(mmap, "MADV_HUGEPAGE"):
        assert t.data_ptr() % HUGE_PAGE == 0  # starts on a huge-page boundary
    view = t[1:]
    del t
    gc.collect()  # the view alone keeps the mapping alive
    view.fill_(2.5)
    assert float(view.sum()) == 2.5 * view.numel()
    small = large_empty((4, 4), torch.int64)  # below one huge page: torch.empty
    assert small.shape == (4, 4) and small.dtype == torch.int64


def test_large_empty_without_madvise_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(memory.mmap, "MADV_HUGEPAGE", raising=False)
    t = large_empty((HUGE_PAGE,), torch.uint8)
    t.fill_(7)
    assert t.shape == (HUGE_PAGE,) and int(t[-1]) == 7


def test_bank_loads_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks that do not divide the image count give the same channels-last bank."""
    rng = np.random.default_rng(0)
    array = rng.standard_normal((10, 5, 3, 4)).astype(np.float32)  # [M, C, H, W]
    expected = torch.from_numpy(array).flatten(2).transpose(1, 2)  # [M, H*W, C]
    monkeypatch.setattr(tables, "CHUNK_BYTES", 3 * 5 * 12 * 4)  # 3 images a block
    for dtype in (torch.float32, torch.float16):
        got = tables.channels_last(array, dtype,
                                    torch.device("cpu"))
        assert got.shape == (10, 12, 5) and got.dtype == dtype
        torch.testing.assert_close(got, expected.to(dtype))


@pytest.mark.parametrize("observation", ["full", "partial", "glimpses", "index"])
def test_vector_env_with_a_head_in_blocks(monkeypatch: pytest.MonkeyPatch,
                                          observation: str) -> None:
    """The cell logits of a given head, computed block by block, equal one matrix product;
    the partial mode's [features | logits] table holds the bank and the logits."""
    monkeypatch.setattr(tables, "CHUNK_BYTES", 7 * 10 * 100 * 4)  # 7 images of logits
    env = vector.GlimpseVectorEnv(num_envs=2, glimpses=2)
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((10, env.feature_shape[2])).astype(np.float32)
    bias = rng.standard_normal(10).astype(np.float32)
    headed = vector.GlimpseVectorEnv(num_envs=2, glimpses=2, head=(weight, bias),
                                     observation=observation)
    expected = env._bank.float() @ torch.from_numpy(weight).T + torch.from_numpy(bias)
    offset = headed._logit_offset
    cell_logits = headed._rows[:, offset:offset + 10].reshape(expected.shape)
    torch.testing.assert_close(cell_logits, expected)
    if observation == "index":  # the features stay in the (memory-mapped) bank
        assert headed._bank is None
        return
    torch.testing.assert_close(headed._bank, env._bank)
    if observation != "full":
        assert headed._rows is not None and headed._bank.data_ptr() == headed._rows.data_ptr()


def test_blocks_are_sized_in_bytes() -> None:
    big = np.zeros((0, 1000, 24, 24), np.float32)  # 2.3 MB of logits per image
    small = np.zeros((0, 16, 10, 10), np.float16)  # counted as float32 once converted
    assert tables.chunk(big) == tables.CHUNK_BYTES // (1000 * 576 * 4)
    assert tables.chunk(small) == tables.CHUNK_BYTES // (16 * 100 * 4)
    assert tables.chunk(np.zeros((0, 10**9), np.float32)) == 1
