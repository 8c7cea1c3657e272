"""pack_batches / pack_sorted."""

from __future__ import annotations

import numpy as np
import pytest


def _check_ranges(ranges, lengths, max_items, max_tokens) -> None:
    lengths = list(lengths)
    assert ranges.dtype == np.int64 and ranges.ndim == 2 and ranges.shape[1] == 2
    pos = 0
    for s, e in ranges.tolist():
        assert s == pos and e > s
        assert e - s <= max_items
        assert sum(lengths[s:e]) <= max_tokens or e - s == 1
        pos = e
    assert pos == len(lengths)


def test_basic(impl) -> None:
    r = impl.pack_batches([1, 2, 3, 4, 5], 2, 6)
    assert r.tolist() == [[0, 2], [2, 3], [3, 4], [4, 5]]


def test_long_item_goes_alone(impl) -> None:
    r = impl.pack_batches([2, 50, 2, 2], 10, 10)
    assert r.tolist() == [[0, 1], [1, 2], [2, 4]]


def test_accepts_numpy_and_lists(impl) -> None:
    lens = np.array([3, 3, 3, 3], dtype=np.int32)
    assert impl.pack_batches(lens, 3, 100).tolist() == [[0, 3], [3, 4]]
    assert impl.pack_batches((3, 3, 3, 3), 3, 100).tolist() == [[0, 3], [3, 4]]
    assert impl.pack_batches([], 3, 100).shape == (0, 2)
    assert impl.pack_sorted([], 3, 100) == []


@pytest.mark.parametrize(
    "args",
    [([1, -2], 2, 5), ([1, 2], 0, 5), ([1, 2], 2, 0), ([[1, 2]], 2, 5), ([1.5, 2], 2, 5),
     ([1, 2], 2.5, 5), (["a"], 1, 1)],
)
def test_bad_input(impl, args) -> None:
    with pytest.raises(ValueError):
        impl.pack_batches(*args)


def test_random_invariants(impl) -> None:
    rng = np.random.default_rng(7)
    lens = rng.integers(0, 600, size=5000)
    r = impl.pack_batches(lens, 32, 4096)
    _check_ranges(r, lens, 32, 4096)


def test_pack_sorted(impl) -> None:
    lens = [5, 1, 9, 1, 3]
    batches = impl.pack_sorted(lens, 2, 100)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]
    assert all(b.dtype == np.int64 for b in batches)
    big = np.random.default_rng(1).integers(1, 300, size=3000)
    batches = impl.pack_sorted(big, 16, 2000)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(3000))
    for b in batches:
        assert len(b) <= 16 and (big[b].sum() <= 2000 or len(b) == 1)
