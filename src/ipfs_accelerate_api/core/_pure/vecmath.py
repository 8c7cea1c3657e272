"""Vector math for embeddings: the readable spec of ``cython_core/vecmath.pyx``.

All functions take numpy ``float32`` or ``float64`` arrays (array-likes of floats are converted)
and raise ``ValueError`` on anything else: other dtypes, wrong dimensions, mismatched widths,
a bad ``k`` or ``out``.

* :func:`l2_normalize` scales each row to unit length; zero rows stay zero. A 1-D array is one
  row. ``out`` receives the result (``out is x`` works in place).
* :func:`cosine_similarity` is the matrix of cosines between the rows of ``a`` and ``b``.
* :func:`top_k` returns, for each query row, the ``k`` corpus rows with the highest cosine
  (or dot product when ``normalized=True``), as ``(scores, indices)`` sorted best first, equal
  scores by lower index. It works in blocks of :data:`QUERY_BLOCK` × :data:`CORPUS_BLOCK`, so
  memory stays small: it never builds the full queries × corpus matrix.

Mixed ``float32``/``float64`` inputs compute in ``float64``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["cosine_similarity", "l2_normalize", "parse_floats", "top_k", "QUERY_BLOCK", "CORPUS_BLOCK"]

#: Rows of queries scored at once by :func:`top_k`.
QUERY_BLOCK = 512
#: Rows of the corpus scored at once by :func:`top_k`.
CORPUS_BLOCK = 8192

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

Array = npt.NDArray[Any]


def as_float_array(x: Any, name: str) -> Array:
    """``x`` as a 1-D or 2-D float32/float64 array (no copy when it already is one)."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.dtype not in _FLOATS:
        raise ValueError(f"{name} must be a float32 or float64 array; got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (one vector) or 2-D (rows); got {arr.ndim}-D")
    return arr


def as_rows(x: Any, name: str) -> tuple[Array, bool]:
    """2-D view of ``x`` (a 1-D vector becomes one row) and whether it was 1-D."""
    arr = as_float_array(x, name)
    if arr.ndim == 1:
        return arr.reshape(1, -1), True
    return arr, False


def check_out(x: Array, out: Any) -> Array:
    """Validate ``out`` for :func:`l2_normalize`: same shape and dtype as ``x``, writeable."""
    if out is None:
        return np.empty_like(x, order="C")
    if not isinstance(out, np.ndarray):
        raise ValueError("out must be a numpy array")
    if out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(
            f"out must have the shape and dtype of x ({x.shape}, {x.dtype}); "
            f"got ({out.shape}, {out.dtype})"
        )
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    return out


def check_pair(a: Any, b: Any, names: tuple[str, str] = ("a", "b")) -> tuple[Array, Array, bool]:
    """Both as C-contiguous 2-D arrays of one common dtype; plus whether ``a`` was 1-D."""
    a2, a_1d = as_rows(a, names[0])
    b2, _ = as_rows(b, names[1])
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same width; got {a2.shape[1]} and {b2.shape[1]}"
        )
    if a2.shape[1] == 0:
        raise ValueError("vectors must have at least one dimension")
    dtype = np.result_type(a2.dtype, b2.dtype)
    return (
        np.ascontiguousarray(a2, dtype=dtype),
        np.ascontiguousarray(b2, dtype=dtype),
        a_1d,
    )


def check_k(k: Any, n: int) -> int:
    """``k`` must be an integer with 1 <= k <= n (the corpus size)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer; got {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the corpus size {n}; got {k}")
    return int(k)


#: Below this a sum of squares has lost precision to underflow; such rows, and rows whose
#: squares overflow, are redone scaled by their largest magnitude.
_TINY_SQUARE = {np.dtype(np.float32): 2.0 ** -100, np.dtype(np.float64): 2.0 ** -900}


def _inverse_norms(x: Array) -> Array:
    """1 / each row's L2 norm, exact for tiny and huge rows too; 0 for a zero row and for a
    row whose norm is below the dtype's smallest normal number (its inverse would overflow)."""
    squares = np.einsum("ij,ij->i", x, x)
    inv = np.zeros_like(squares)
    np.divide(1.0, np.sqrt(squares), out=inv, where=squares > 0)
    redo = ~((squares >= _TINY_SQUARE[x.dtype]) & np.isfinite(squares))
    if redo.any():
        rows = x[redo]
        big = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(len(rows), x.dtype)
        fine = (big > 0) & np.isfinite(big)
        with np.errstate(all="ignore"):
            scaled = rows[fine] / big[fine, None]
            fixed = inv[redo]
            fixed[fine] = 1.0 / (big[fine] * np.sqrt(np.einsum("ij,ij->i", scaled, scaled)))
        fixed[np.isinf(fixed)] = 0  # a norm below the smallest normal: treated as a zero row
        inv[redo] = fixed
    return inv


def l2_normalize(x: Any, out: Array | None = None) -> Array:
    """Each row scaled to unit L2 norm (zero rows stay zero, and so do rows whose norm is
    below the dtype's smallest normal number, about 1.2e-38 for float32)."""
    arr = as_float_array(x, "x")
    result = check_out(arr, out)
    rows, _ = as_rows(arr, "x")
    inv = _inverse_norms(rows)
    np.multiply(rows, inv[:, None], out=result.reshape(rows.shape))
    return result


def cosine_similarity(a: Any, b: Any) -> Array:
    """Matrix of cosines between the rows of ``a`` (n×d) and ``b`` (m×d): shape (n, m)."""
    a2, b2, _ = check_pair(a, b)
    return l2_normalize(a2) @ l2_normalize(b2).T


def _merge_row(row: Array, offset: int, best_s: Array, best_i: Array) -> None:
    """Merge one row of block scores into a query's current best (sorted, in place).

    Candidates are every score >= the block's k-th largest (so ties at the boundary are all
    kept); a stable sort of [current best, candidates] then keeps equal scores in index order,
    because every current best index is lower than every index of this block.
    """
    k = best_s.shape[0]
    n = row.shape[0]
    if n > k:
        threshold = max(np.partition(row, n - k)[n - k], best_s[-1])
        cand = np.flatnonzero(row >= threshold)
    else:
        cand = np.arange(n)
    if cand.size == 0:
        return
    pool_s = np.concatenate([best_s, row[cand]])
    pool_i = np.concatenate([best_i, cand + offset])
    order = np.argsort(-pool_s, kind="stable")[:k]
    best_s[:] = pool_s[order]
    best_i[:] = pool_i[order]


def top_k(
    queries: Any, corpus: Any, k: int, normalized: bool = False
) -> tuple[Array, npt.NDArray[np.int64]]:
    """The ``k`` best corpus rows for each query: ``(scores, indices)``, best first.

    Scores are cosines, or plain dot products when ``normalized=True`` (inputs already unit
    length). A 1-D query gives 1-D results of length ``k``.
    """
    q, c, q_1d = check_pair(queries, corpus, ("queries", "corpus"))
    k = check_k(k, c.shape[0])
    inv_q = None if normalized else _inverse_norms(q)
    inv_c = None if normalized else _inverse_norms(c)
    nq, nc = q.shape[0], c.shape[0]
    out_s = np.empty((nq, k), dtype=q.dtype)
    out_i = np.empty((nq, k), dtype=np.int64)
    for q0 in range(0, nq, QUERY_BLOCK):
        q1 = min(q0 + QUERY_BLOCK, nq)
        best_s = np.full((q1 - q0, k), -np.inf, dtype=q.dtype)
        best_i = np.full((q1 - q0, k), -1, dtype=np.int64)
        # Queries are scaled up front (a small copy of one block): a dot product of two tiny
        # or two huge rows would underflow or overflow before any scaling after it.
        qb = q[q0:q1] if inv_q is None else q[q0:q1] * inv_q[q0:q1, None]
        for c0 in range(0, nc, CORPUS_BLOCK):
            c1 = min(c0 + CORPUS_BLOCK, nc)
            block = qb @ c[c0:c1].T  # the only large temporary: one block
            if inv_c is not None:
                block *= inv_c[c0:c1]
            for r in range(q1 - q0):
                _merge_row(block[r], c0, best_s[r], best_i[r])
        out_s[q0:q1] = best_s
        out_i[q0:q1] = best_i
    if q_1d:
        return out_s[0], out_i[0]
    return out_s, out_i


def parse_floats(text: bytes) -> npt.NDArray[np.float32]:
    """Comma-separated decimal numbers (the inside of a JSON number array) as float32.

    Whitespace around numbers is allowed; anything else is a ``ValueError``. This is how
    embeddings sent as JSON floats are read without building a Python float per number.
    """
    if not isinstance(text, bytes):
        raise TypeError("parse_floats takes bytes")
    if not text.strip():
        return np.zeros(0, dtype=np.float32)
    try:
        return np.array([float(tok) for tok in text.split(b",")], dtype=np.float32)
    except ValueError:
        raise ValueError(f"not a list of numbers: {text[:80]!r}") from None
