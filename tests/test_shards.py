"""ShardedArray reads what one concatenated array would give, for every index the bank's
readers use."""

from __future__ import annotations

import numpy as np
import pytest

from glimpse_gym.shards import ShardedArray, stack


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    whole = rng.standard_normal((11, 3, 2, 2)).astype(np.float16)
    parts = [whole[:4], whole[4:5], whole[5:11]]
    return whole, ShardedArray(parts)


KEYS = [0, 4, 5, 10, -1, -11, np.int64(7), (3, slice(None), 1, 0), (6, 2),
        slice(None), slice(2, 9), slice(4, 5), slice(3, 3), slice(9, 100), slice(-3, None),
        slice(1, 10, 3), slice(None, None, -1), (slice(2, 7), 1), (slice(0, 6), slice(None), 0),
        [10, 0, 4, 4, 5], np.array([[1, 9], [5, 3]]), np.array([], np.int64), [-1, -11],
        (np.array([2, 8]), slice(None), 1, 1), np.arange(11) % 2 == 0,
        (7, slice(None), [0, 1], [1, 0])]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_indexing_matches_one_array(pair, key):
    whole, sharded = pair
    got, want = np.asarray(sharded[key]), whole[key]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_shape_dtype_and_full_copy(pair):
    whole, sharded = pair
    assert sharded.shape == whole.shape and sharded.dtype == whole.dtype
    assert len(sharded) == 11 and sharded.ndim == 4 and sharded.nbytes == whole.nbytes
    np.testing.assert_array_equal(np.asarray(sharded), whole)
    assert np.asarray(sharded, np.float32).dtype == np.float32
    assert "3 parts" in repr(sharded)


@pytest.mark.parametrize("key", [11, -12, [0, 11], np.array([1.5]), True], ids=repr)
def test_bad_indices_raise_index_error(pair, key):
    with pytest.raises(IndexError):
        pair[1][key]


def test_index_arrays_after_a_non_integer_first_index_are_refused(pair):
    with pytest.raises(IndexError, match="only when the first index is an integer"):
        pair[1][[0, 1], :, [0, 1]]


def test_parts_must_agree_and_stack_of_one_is_the_part():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="differ only in their first axis"):
        ShardedArray([a, np.zeros((2, 4), np.float32)])
    with pytest.raises(ValueError, match="differ only in their first axis"):
        ShardedArray([a, np.zeros((2, 3), np.float16)])
    assert stack([a]) is a
    assert isinstance(stack([a, a]), ShardedArray)


def test_the_memory_maps_behind_every_form_of_bank_array(tmp_path):
    from glimpse_gym.bank_arrays import Dequantized, HeadLogits
    from glimpse_gym.shards import advise_random, memory_maps

    files = []
    for i in range(2):
        np.save(tmp_path / f"f{i}.npy", np.zeros((3, 2, 2, 2), np.int8))
        files.append(np.load(tmp_path / f"f{i}.npy", mmap_mode="r"))
    sharded = ShardedArray([np.moveaxis(f, -1, 1) for f in files])
    features = Dequantized(sharded, np.ones(2, np.float32))
    logits = HeadLogits(features, np.ones((5, 2), np.float32), np.zeros(5, np.float32))
    want = [f._mmap for f in files]
    for array in (sharded, features, logits, np.asarray(files[0])):
        got = list(memory_maps(array))
        assert got and all(any(g is w for w in want) for g in got)
    assert list(memory_maps(np.zeros(3))) == []  # in memory: none
    advise_random(logits)  # accepted by the kernel (or a no-op where it cannot)
