"""l2_normalize, cosine_similarity and top_k."""

from __future__ import annotations

import numpy as np
import pytest

DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_normalize_rows(impl, dtype) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 37)).astype(dtype)
    x[3] = 0
    y = impl.l2_normalize(x)
    assert y.dtype == dtype and y.shape == x.shape and y is not x
    norms = np.linalg.norm(y.astype(np.float64), axis=1)
    assert np.allclose(np.delete(norms, 3), 1, **_tol(dtype))
    assert np.all(y[3] == 0)
    x64 = x.astype(np.float64)
    norms64 = np.linalg.norm(x64, axis=1, keepdims=True)
    expected = np.divide(x64, norms64, out=np.zeros_like(x64), where=norms64 > 0)
    assert np.allclose(y, expected, **_tol(dtype))


def test_l2_normalize_in_place_and_out(impl) -> None:
    x = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    y = impl.l2_normalize(x, out=x)
    assert y is x
    assert np.allclose(x, [[0.6, 0.8], [0.0, 1.0]])
    src = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    out = np.empty_like(src)
    assert impl.l2_normalize(src, out=out) is out
    assert np.allclose(out, [[1, 0, 0], [0, 0, 1]])


def test_l2_normalize_1d_and_strided(impl) -> None:
    v = np.array([0.0, 3.0, 4.0])
    assert np.allclose(impl.l2_normalize(v), [0, 0.6, 0.8])
    big = np.arange(24, dtype=np.float64).reshape(4, 6)
    view = big[:, ::2]  # non-contiguous columns
    assert np.allclose(impl.l2_normalize(view), view / np.linalg.norm(view, axis=1, keepdims=True))
    ro = np.ones((2, 2))
    ro.setflags(write=False)
    assert np.allclose(impl.l2_normalize(ro), np.full((2, 2), 2 ** -0.5))
    with pytest.raises(ValueError, match="writeable"):
        impl.l2_normalize(ro, out=ro)


@pytest.mark.parametrize(
    "bad",
    [np.ones((2, 2), dtype=np.int64), np.ones((2, 2, 2)), np.ones((2, 2), dtype=np.float16),
     np.array("text")],
)
def test_l2_normalize_rejects(impl, bad) -> None:
    with pytest.raises(ValueError):
        impl.l2_normalize(bad)


def test_l2_normalize_bad_out(impl) -> None:
    x = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="out"):
        impl.l2_normalize(x, out=np.empty((2, 3), dtype=np.float64))
    with pytest.raises(ValueError, match="out"):
        impl.l2_normalize(x, out=np.empty((3, 2), dtype=np.float32))


def test_cosine_similarity(impl) -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    b = np.array([[0.0, 2.0], [3.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    s = impl.cosine_similarity(a, b)
    assert s.shape == (2, 3) and s.dtype == np.float32
    assert np.allclose(s, [[0, 1, 0], [2 ** -0.5, 2 ** -0.5, 0]], atol=1e-6)
    assert impl.cosine_similarity(a, b.astype(np.float64)).dtype == np.float64
    with pytest.raises(ValueError, match="width"):
        impl.cosine_similarity(a, np.ones((2, 3), dtype=np.float32))


def _brute_top_k(q, c, k):
    s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 5, 1), (7, 300, 5), (300, 9000, 10), (3, 20, 20)])
def test_top_k_matches_brute_force(impl, dtype, shape) -> None:
    nq, nc, k = shape
    rng = np.random.default_rng(nq * 31 + nc)
    q = rng.standard_normal((nq, 24)).astype(dtype)
    c = rng.standard_normal((nc, 24)).astype(dtype)
    scores, idx = impl.top_k(q, c, k)
    ref_s, ref_i = _brute_top_k(q.astype(np.float64), c.astype(np.float64), k)
    assert scores.shape == (nq, k) and idx.shape == (nq, k)
    assert scores.dtype == dtype and idx.dtype == np.int64
    assert np.allclose(scores, ref_s, atol=1e-5)
    assert np.all(np.diff(scores.astype(np.float64), axis=1) <= 1e-6)  # best first
    assert (idx == ref_i).mean() > 0.99  # near-ties may swap in float32


def test_top_k_normalized_is_dot_product_and_ties_go_to_lower_index(impl) -> None:
    c = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    q = np.array([[1.0, 0.0]])
    s, i = impl.top_k(q, c, 3, normalized=True)
    assert i.tolist() == [[0, 2, 3]]
    assert np.allclose(s, [[1.0, 1.0, 0.6]])
    s1, i1 = impl.top_k(q[0], c, 2)
    assert s1.shape == (2,) and i1.tolist() == [0, 2]


def test_top_k_validation(impl) -> None:
    c = np.ones((5, 3), dtype=np.float32)
    q = np.ones((2, 3), dtype=np.float32)
    for k in (0, 6, -1, 2.0, True):
        with pytest.raises(ValueError, match="k"):
            impl.top_k(q, c, k)
    with pytest.raises(ValueError, match="width"):
        impl.top_k(np.ones((2, 4), dtype=np.float32), c, 1)
    with pytest.raises(ValueError, match="float"):
        impl.top_k(q.astype(np.int32), c, 1)


def test_top_k_memory_stays_blocked(impl) -> None:
    import tracemalloc

    rng = np.random.default_rng(3)
    q = rng.standard_normal((1200, 16)).astype(np.float32)
    c = rng.standard_normal((50_000, 16)).astype(np.float32)
    tracemalloc.start()
    impl.top_k(q, c, 5, normalized=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full_matrix = 1200 * 50_000 * 4
    assert peak < full_matrix / 4


def test_parse_floats(impl) -> None:
    out = impl.parse_floats(b" 1.5, -2e3 ,3,0.000125 ,-0 ")
    assert out.dtype == np.float32
    assert out.tolist() == [1.5, -2000.0, 3.0, np.float32(0.000125), 0.0]
    assert impl.parse_floats(b"").shape == (0,)
    assert impl.parse_floats(b"  \n").shape == (0,)
    for bad in (b"1,2,", b"1,,2", b"1;2", b"abc", b"1 2", b"1e", b".", b"-", b",1"):
        with pytest.raises(ValueError):
            impl.parse_floats(bad)
    with pytest.raises(TypeError):
        impl.parse_floats("1,2")


@pytest.mark.parametrize("dtype,scale", [
    (np.float32, 1e-22), (np.float32, 1e20), (np.float64, 1e-200),
    (np.float64, 1e200),
])
def test_tiny_and_huge_rows_keep_their_direction(impl, dtype, scale) -> None:
    # Squares of such rows underflow (or overflow) the dtype; the norms must not.
    x = (np.array([[3.0, 4.0], [1.0, 0.0]]) * scale).astype(dtype)
    unit = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-6)
    assert np.allclose(impl.l2_normalize(x), unit, **tol)
    assert np.allclose(impl.cosine_similarity(x, x), unit @ unit.T, **tol)
    scores, idx = impl.top_k(x, x, 1)
    assert np.allclose(scores[:, 0], 1.0, **tol) and idx[:, 0].tolist() == [0, 1]


def test_rows_below_the_smallest_normal_norm_count_as_zero(impl) -> None:
    x = np.array([[3e-40, 4e-40], [3.0, 4.0]], dtype=np.float32)  # subnormal first row
    assert impl.l2_normalize(x)[0].tolist() == [0.0, 0.0]
    assert impl.cosine_similarity(x, x)[0].tolist() == [0.0, 0.0]
    scores, idx = impl.top_k(x, x, 1)
    assert scores[0, 0] == 0.0 and np.isclose(scores[1, 0], 1.0) and idx[1, 0] == 1
