"""l2_normalize and top_k versus numpy formulas (and faiss-cpu's flat index where installed)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from conftest import QUICK, per_op

ROWS, DIM = (2_000, 384) if QUICK else (100_000, 384)
NQ, NC, K = (50, 5_000, 10) if QUICK else (1_000, 100_000, 10)


@pytest.fixture(scope="module")
def matrix():
    return np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32)


@pytest.mark.benchmark(group="vecmath: l2_normalize 100k x 384 f32")
def test_l2_ours(benchmark, twin, matrix):
    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = twin.tag
    benchmark(twin.l2_normalize, matrix)


@pytest.mark.benchmark(group="vecmath: l2_normalize 100k x 384 f32")
def test_l2_ours_in_place(benchmark, twin, matrix):
    x = matrix.copy()
    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = f"{twin.tag} in place"
    benchmark(twin.l2_normalize, x, x)


@pytest.mark.benchmark(group="vecmath: l2_normalize 100k x 384 f32")
def test_l2_numpy_formula(benchmark, matrix):
    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = "numpy x / norm(x, axis=1)"
    benchmark(lambda: matrix / np.linalg.norm(matrix, axis=1, keepdims=True))


@pytest.mark.benchmark(group="vecmath: l2_normalize 100k x 384 f32")
def test_l2_numpy_einsum_in_place(benchmark, matrix):
    x = matrix.copy()

    def run():
        np.divide(x, np.sqrt(np.einsum("ij,ij->i", x, x))[:, None], out=x)

    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = "numpy einsum in place"
    benchmark(run)


@pytest.fixture(scope="module")
def search_data():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((NQ, DIM)).astype(np.float32)
    c = rng.standard_normal((NC, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return q, c


def _numpy_top_k(q, c, k):
    scores = q @ c.T
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(scores, idx, axis=1)
    order = np.argsort(-top, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.benchmark(group="vecmath: top_k 1000 x 100k x 384 f32, k=10")
def test_top_k_ours(benchmark, twin, search_data):
    q, c = search_data
    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = twin.tag
    benchmark.extra_info["peak_bytes"] = _peak_bytes(lambda: twin.top_k(q, c, K, normalized=True))
    s, i = benchmark.pedantic(twin.top_k, (q, c, K), {"normalized": True}, rounds=3 if not QUICK else 1)
    rs, ri = _numpy_top_k(q, c, K)
    assert np.allclose(s, rs, atol=1e-5)


@pytest.mark.benchmark(group="vecmath: top_k 1000 x 100k x 384 f32, k=10")
def test_top_k_ours_unnormalized(benchmark, twin, search_data):
    q, c = search_data
    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = f"{twin.tag} (cosine, normalized=False)"
    benchmark.pedantic(twin.top_k, (q, c, K), rounds=3 if not QUICK else 1)


@pytest.mark.benchmark(group="vecmath: top_k 1000 x 100k x 384 f32, k=10")
def test_top_k_numpy(benchmark, search_data):
    q, c = search_data
    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = "numpy matmul+argpartition"
    benchmark.extra_info["peak_bytes"] = _peak_bytes(lambda: _numpy_top_k(q, c, K))
    benchmark.pedantic(_numpy_top_k, (q, c, K), rounds=3 if not QUICK else 1)


@pytest.mark.benchmark(group="vecmath: top_k 1000 x 100k x 384 f32, k=10")
def test_top_k_faiss(benchmark, search_data):
    faiss = pytest.importorskip("faiss")
    q, c = search_data
    index = faiss.IndexFlatIP(DIM)
    index.add(c)
    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = "faiss IndexFlatIP"
    benchmark.pedantic(index.search, (q, K), rounds=3 if not QUICK else 1)
