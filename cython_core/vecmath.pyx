# cython: language_level=3
"""Compiled twin of ``ipfs_accelerate_api.core._pure.vecmath`` (read that module for the spec).

* ``l2_normalize``: one pass per row while the row is in L1 cache (sum of squares with eight
  independent accumulators, then scale), no temporaries.
* ``top_k``: BLAS scores one block of queries × corpus at a time into a reused buffer; a C
  loop keeps a k-sized heap per query. Most candidates are rejected 16 at a time by a
  branch-free count of scores above the current k-th best, so selection costs a fraction of
  the matrix product.
"""

import os
import threading

import numpy as np
from ipfs_accelerate_api.core._pure.vecmath import (
    as_float_array, as_rows, check_out, check_pair, check_k, QUERY_BLOCK, CORPUS_BLOCK,
)

from libc.math cimport sqrt, INFINITY, fabs, nextafterf
from libc.stdlib cimport strtof
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t
from libc.stddef cimport ptrdiff_t
cimport cython

cdef extern from "_kernels.h" nogil:
    int ia_count_above_f(const float* p, ptrdiff_t n, float thr)
    int ia_count_above_f_scaled(const float* p, const float* s, ptrdiff_t n, float thr)
    int ia_count_above_d(const double* p, ptrdiff_t n, double thr)
    int ia_count_above_d_scaled(const double* p, const double* s, ptrdiff_t n, double thr)

cdef enum:
    CHUNK = 64  # scores screened at once by a vectorised count before any scalar work

ctypedef fused real:
    float
    double

#: Work (elements) below which a kernel runs on the calling thread alone.
PARALLEL_MIN_WORK = 1 << 20
#: Most threads one call uses (the calling thread included).
MAX_THREADS = 8


def _threads_for(Py_ssize_t work):
    n = min(os.cpu_count() or 1, MAX_THREADS, max(1, work // PARALLEL_MIN_WORK))
    return n


def _split_rows(kernel, Py_ssize_t n, Py_ssize_t work):
    """Run ``kernel(start, end)`` over row ranges on a few short-lived threads.

    The kernels release the GIL, so the threads run in parallel. Threads are started per call
    (only for large inputs) rather than kept in a pool: nothing lingers, and a fork never
    inherits a half-dead pool.
    """
    cdef Py_ssize_t parts = min(_threads_for(work), n)
    if parts <= 1:
        kernel(0, n)
        return
    bounds = [n * i // parts for i in range(parts + 1)]
    threads = [threading.Thread(target=kernel, args=(bounds[i], bounds[i + 1]), daemon=True)
               for i in range(1, parts)]
    for t in threads:
        t.start()
    try:
        kernel(bounds[0], bounds[1])
    finally:
        for t in threads:
            t.join()


cdef inline real _sumsq(const real* row, Py_ssize_t d) noexcept nogil:
    cdef real a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef Py_ssize_t j = 0
    while j + 8 <= d:
        a0 += row[j] * row[j]
        a1 += row[j + 1] * row[j + 1]
        a2 += row[j + 2] * row[j + 2]
        a3 += row[j + 3] * row[j + 3]
        a4 += row[j + 4] * row[j + 4]
        a5 += row[j + 5] * row[j + 5]
        a6 += row[j + 6] * row[j + 6]
        a7 += row[j + 7] * row[j + 7]
        j += 8
    while j < d:
        a0 += row[j] * row[j]
        j += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


cdef inline real _inv_norm(const real* row, Py_ssize_t d) noexcept nogil:
    """1 / the row's L2 norm (0 for a zero row, and for one whose norm is below the dtype's
    smallest normal number, whose inverse is not representable). Squares that underflow (tiny rows) or
    overflow (huge ones) are redone on the row scaled by its largest magnitude: the rare
    case costs a second pass, the common one a comparison."""
    cdef real s = _sumsq(row, d), m = 0, t, v
    cdef Py_ssize_t j
    if s >= _tiny_square(s) and s < INFINITY:
        return 1 / sqrt(s)
    for j in range(d):
        v = fabs(row[j])
        if v > m:
            m = v
    if m == 0 or not (m < INFINITY):
        return 1 / sqrt(s) if s > 0 else 0
    s = 0
    for j in range(d):
        t = row[j] / m
        s += t * t
    t = 1 / (m * sqrt(s))
    return t if t < INFINITY else 0  # a norm below the smallest normal: a zero row


cdef inline real _tiny_square(real like) noexcept nogil:
    """Below this a sum of squares has lost precision to underflow (2**-100 for float32,
    2**-900 for float64), matching the pure twin's ``_TINY_SQUARE``."""
    if real is float:
        return <float>7.888609052210118e-31
    else:
        return 1.1871633287601854e-271


cdef void _normalize_rows(const real* x, real* out, Py_ssize_t n, Py_ssize_t d,
                          Py_ssize_t xs, Py_ssize_t os) noexcept nogil:
    """Rows of ``x`` (row stride ``xs`` elements) scaled into ``out`` (stride ``os``)."""
    cdef Py_ssize_t i, j
    cdef real s, inv
    cdef const real* xr
    cdef real* orow
    for i in range(n):
        xr = x + i * xs
        orow = out + i * os
        inv = _inv_norm(xr, d)
        for j in range(d):
            orow[j] = xr[j] * inv


cdef void _inverse_norms(const real* x, real* inv, Py_ssize_t n, Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        inv[i] = _inv_norm(x + i * d, d)


def _normalize_typed(const real[:, :] x, real[:, :] out, Py_ssize_t start, Py_ssize_t end):
    """Kernel entry for rows [start, end): unit column stride (checked by the caller)."""
    cdef Py_ssize_t d = x.shape[1]
    if end <= start or d == 0:
        return
    cdef Py_ssize_t xs = x.strides[0] // sizeof(real), ostride = out.strides[0] // sizeof(real)
    with nogil:
        _normalize_rows(&x[start, 0], &out[start, 0], end - start, d, xs, ostride)


def _normalize_all(rows, target):
    _split_rows(lambda a, b: _normalize_typed(rows, target, a, b), rows.shape[0], rows.size)


def l2_normalize(x, out=None):
    """Each row scaled to unit L2 norm (zero rows stay zero)."""
    arr = as_float_array(x, "x")
    result = check_out(arr, out)
    rows = arr[None, :] if arr.ndim == 1 else arr
    target = result[None, :] if result.ndim == 1 else result
    if rows.shape[1] > 1 and rows.strides[1] != rows.itemsize:
        rows = np.ascontiguousarray(rows)
    if target.shape[1] > 1 and target.strides[1] != target.itemsize:
        tmp = np.empty(rows.shape, dtype=rows.dtype)
        _normalize_all(rows, tmp)
        target[...] = tmp
    else:
        _normalize_all(rows, target)
    return result


def cosine_similarity(a, b):
    """Matrix of cosines between the rows of ``a`` (n×d) and ``b`` (m×d): shape (n, m)."""
    a2, b2, _ = check_pair(a, b)
    return l2_normalize(a2) @ l2_normalize(b2).T


# -- top-k ------------------------------------------------------------------------------

cdef inline bint _worse(real s1, int64_t i1, real s2, int64_t i2) noexcept nogil:
    """Is (s1, i1) ranked below (s2, i2)? Lower score, or equal score and higher index."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


cdef inline void _sift_down(real* hs, int64_t* hi, Py_ssize_t k, Py_ssize_t pos) noexcept nogil:
    """Restore the min-heap (root = worst) below ``pos``."""
    cdef Py_ssize_t child
    cdef real s = hs[pos]
    cdef int64_t idx = hi[pos]
    while True:
        child = 2 * pos + 1
        if child >= k:
            break
        if child + 1 < k and _worse(hs[child + 1], hi[child + 1], hs[child], hi[child]):
            child += 1
        if not _worse(hs[child], hi[child], s, idx):
            break
        hs[pos] = hs[child]
        hi[pos] = hi[child]
        pos = child
    hs[pos] = s
    hi[pos] = idx


cdef void _select_block(const real* block, Py_ssize_t rows, Py_ssize_t cols,
                        const real* inv_c, int64_t offset,
                        real* heap_s, int64_t* heap_i, Py_ssize_t k) noexcept nogil:
    """Merge one block of scores (rows × cols) into each row's k-heap."""
    cdef Py_ssize_t r, j, t
    cdef const real* row
    cdef real* hs
    cdef int64_t* hi
    cdef real thr, s
    cdef int cnt
    for r in range(rows):
        row = block + r * cols
        hs = heap_s + r * k
        hi = heap_i + r * k
        thr = hs[0]
        j = 0
        while j + CHUNK <= cols:
            if real is float:
                if inv_c == NULL:
                    cnt = ia_count_above_f(row + j, CHUNK, thr)
                else:
                    cnt = ia_count_above_f_scaled(row + j, inv_c + j, CHUNK, thr)
            else:
                if inv_c == NULL:
                    cnt = ia_count_above_d(row + j, CHUNK, thr)
                else:
                    cnt = ia_count_above_d_scaled(row + j, inv_c + j, CHUNK, thr)
            if cnt:
                for t in range(CHUNK):
                    s = row[j + t] if inv_c == NULL else row[j + t] * inv_c[j + t]
                    if s > thr:
                        hs[0] = s
                        hi[0] = offset + j + t
                        _sift_down(hs, hi, k, 0)
                        thr = hs[0]
            j += CHUNK
        while j < cols:
            s = row[j] if inv_c == NULL else row[j] * inv_c[j]
            if s > thr:
                hs[0] = s
                hi[0] = offset + j
                _sift_down(hs, hi, k, 0)
                thr = hs[0]
            j += 1


cdef void _finish(real* heap_s, int64_t* heap_i, Py_ssize_t rows, Py_ssize_t k,
                  const real* inv_q) noexcept nogil:
    """Heap-sort each row best first and scale by the query's inverse norm."""
    cdef Py_ssize_t r, end, t
    cdef real* hs
    cdef int64_t* hi
    cdef real ts
    cdef int64_t ti
    for r in range(rows):
        hs = heap_s + r * k
        hi = heap_i + r * k
        end = k - 1
        while end > 0:
            ts = hs[0]; hs[0] = hs[end]; hs[end] = ts
            ti = hi[0]; hi[0] = hi[end]; hi[end] = ti
            _sift_down(hs, hi, end, 0)
            end -= 1
        if inv_q != NULL:
            for t in range(k):
                hs[t] = hs[t] * inv_q[r]


def _inv_norms_typed(const real[:, ::1] x, real[::1] out):
    with nogil:
        _inverse_norms(&x[0, 0], &out[0], x.shape[0], x.shape[1])


def _select_typed(const real[:, ::1] block, const real[::1] inv_c, int64_t offset,
                  real[:, ::1] heap_s, int64_t[:, ::1] heap_i, bint scaled,
                  Py_ssize_t start, Py_ssize_t end):
    if end <= start:
        return
    with nogil:
        _select_block(&block[start, 0], end - start, block.shape[1],
                      &inv_c[0] if scaled else NULL, offset,
                      &heap_s[start, 0], &heap_i[start, 0], heap_s.shape[1])


def _finish_typed(real[:, ::1] heap_s, int64_t[:, ::1] heap_i, const real[::1] inv_q,
                  bint scaled):
    with nogil:
        _finish(&heap_s[0, 0], &heap_i[0, 0], heap_s.shape[0], heap_s.shape[1],
                &inv_q[0] if scaled else NULL)


def top_k(queries, corpus, k, normalized=False):
    """The ``k`` best corpus rows for each query: ``(scores, indices)``, best first.

    Scores are cosines, or plain dot products when ``normalized=True``. A 1-D query gives
    1-D results of length ``k``.
    """
    q, c, q_1d = check_pair(queries, corpus, ("queries", "corpus"))
    k = check_k(k, c.shape[0])
    nq, nc = q.shape[0], c.shape[0]
    dtype = q.dtype
    scaled = not normalized
    out_s = np.full((nq, k), -np.inf, dtype=dtype)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0:
        return (out_s[0], out_i[0]) if q_1d else (out_s, out_i)
    inv_q = np.empty(nq, dtype=dtype)
    inv_c = np.empty(nc, dtype=dtype)
    if scaled:
        _inv_norms_typed(q, inv_q)
        _inv_norms_typed(c, inv_c)
    buf = np.empty(min(QUERY_BLOCK, nq) * min(CORPUS_BLOCK, nc), dtype=dtype)
    for q0 in range(0, nq, QUERY_BLOCK):
        q1 = min(q0 + QUERY_BLOCK, nq)
        # Queries are scaled up front (a small copy of one block): a dot product of two
        # tiny or two huge rows would underflow or overflow before any scaling after it.
        qs = q[q0:q1] * inv_q[q0:q1, None] if scaled else q[q0:q1]
        hs = out_s[q0:q1]
        hi = out_i[q0:q1]
        for c0 in range(0, nc, CORPUS_BLOCK):
            c1 = min(c0 + CORPUS_BLOCK, nc)
            block = buf[: (q1 - q0) * (c1 - c0)].reshape(q1 - q0, c1 - c0)
            np.matmul(qs, c[c0:c1].T, out=block)
            _split_rows(
                lambda a, b: _select_typed(block, inv_c[c0:c1], c0, hs, hi, scaled, a, b),
                q1 - q0, block.size)
        _finish_typed(hs, hi, inv_q[q0:q1], False)
    if q_1d:
        return out_s[0], out_i[0]
    return out_s, out_i


cdef inline bint _is_space(char c) noexcept nogil:
    return c == 32 or c == 9 or c == 10 or c == 13


cdef double[23] _POW10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                          1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]


cdef inline const char* _digits(const char* p, const char* end, unsigned long long* mant,
                                int* significant, int* kept, int* skipped) noexcept nogil:
    """Read decimal digits into ``mant`` while it holds fewer than 19 significant ones;
    count the digits read into it (``kept``) and those past that precision (``skipped``)."""
    kept[0] = 0
    skipped[0] = 0
    while p < end and 48 <= p[0] <= 57:
        if significant[0] < 19:
            mant[0] = mant[0] * 10 + <unsigned long long>(p[0] - 48)
            if mant[0]:
                significant[0] += 1
            kept[0] += 1
        else:
            skipped[0] += 1
        p += 1
    return p


cdef inline const char* _number(const char* p, const char* end, float* out) noexcept nogil:
    """Parse one decimal number (JSON grammar) at ``p``; NULL if there is none.

    The mantissa (up to 19 digits) times an exact power of ten is computed in double, within
    a few double ulps of the true value, then rounded to float32. That rounding is the correct
    one unless the value lies within that error of a float32 rounding midpoint; those rare
    cases, and large exponents, go to strtof. Several times faster than strtof alone.
    """
    cdef const char* start = p
    cdef bint neg = False
    cdef unsigned long long mant = 0
    cdef int digits = 0, dropped = 0, frac = 0, skipped = 0, e = 0, esign = 1, k
    cdef double v
    if p < end and (p[0] == 45 or p[0] == 43):  # '-' '+'
        neg = p[0] == 45
        p += 1
    # Integer part: digits past the 19th scale the value up (dropped).
    p = _digits(p, end, &mant, &digits, &k, &dropped)
    cdef bint any_digit = k + dropped > 0
    if p < end and p[0] == 46:  # '.'
        p += 1
        # Fraction: kept digits scale the value down (frac); later ones are below precision.
        p = _digits(p, end, &mant, &digits, &frac, &skipped)
        any_digit = any_digit or frac + skipped > 0
    if not any_digit:
        return NULL
    if p < end and (p[0] == 101 or p[0] == 69):  # 'e' 'E'
        p += 1
        if p < end and (p[0] == 45 or p[0] == 43):
            esign = -1 if p[0] == 45 else 1
            p += 1
        if not (p < end and 48 <= p[0] <= 57):
            return NULL
        while p < end and 48 <= p[0] <= 57:
            if e < 100000:
                e = e * 10 + (p[0] - 48)
            p += 1
    k = esign * e + dropped - frac
    v = <double>mant
    cdef float f
    cdef double half
    if 0 <= k <= 22:
        v = v * _POW10[k]
    elif -22 <= k < 0:
        v = v / _POW10[-k]
    else:
        return _strtof(start, out)
    f = <float>v
    if digits > 15 or dropped:  # v may be off by a few double ulps: near a midpoint?
        half = (<double>nextafterf(f, INFINITY) - <double>f) * 0.5
        if fabs(fabs(v - <double>f) - half) <= v * 1e-15:
            return _strtof(start, out)
    out[0] = -f if neg else f
    return p


cdef inline const char* _strtof(const char* start, float* out) noexcept nogil:
    cdef char* nxt
    out[0] = strtof(start, &nxt)
    return nxt if nxt != start else NULL


def parse_floats(text):
    """Comma-separated decimal numbers (the inside of a JSON number array) as float32."""
    if not isinstance(text, bytes):
        raise TypeError("parse_floats takes bytes")
    cdef bytes data = <bytes>text
    cdef const char* p = PyBytes_AS_STRING(data)  # NUL-terminated by CPython
    cdef const char* end = p + PyBytes_GET_SIZE(data)
    cdef const char* nxt
    cdef Py_ssize_t n = 0, cap
    cdef bint bad = False
    while p < end and _is_space(p[0]):
        p += 1
    if p == end:
        return np.zeros(0, dtype=np.float32)
    cap = data.count(b",") + 1
    out = np.empty(cap, dtype=np.float32)
    cdef float[::1] ov = out
    with nogil:
        while True:
            while p < end and _is_space(p[0]):
                p += 1
            if p == end or n == cap:
                bad = True
                break
            nxt = _number(p, end, &ov[n])
            if nxt == NULL:
                bad = True
                break
            n += 1
            p = nxt
            while p < end and _is_space(p[0]):
                p += 1
            if p == end:
                break
            if p[0] != 44:  # ','
                bad = True
                break
            p += 1
    if bad or n != cap:
        raise ValueError(f"not a list of numbers: {text[:80]!r}")
    return out
