"""Packing 1M lengths: compiled versus the pure twin (a plain Python loop)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import QUICK, per_op

N = 20_000 if QUICK else 1_000_000


@pytest.fixture(scope="module")
def lengths():
    return np.random.default_rng(0).integers(1, 512, size=N).astype(np.int64)


@pytest.mark.benchmark(group="packer: pack_batches 1M lengths")
def test_pack_batches(benchmark, twin, lengths):
    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = twin.tag
    r = benchmark(twin.pack_batches, lengths, 64, 8192)
    assert r[-1, 1] == N


@pytest.mark.benchmark(group="packer: pack_sorted 1M lengths")
def test_pack_sorted(benchmark, twin, lengths):
    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = twin.tag
    benchmark(twin.pack_sorted, lengths, 64, 8192)
