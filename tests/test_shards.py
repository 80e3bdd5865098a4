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


@pytest.mark.parametrize("key", [11, -12, [0, 11], np.array([1.5])], ids=repr)
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
