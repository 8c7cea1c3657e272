# cython: language_level=3
"""Compiled twin of ``ipfs_accelerate_api.core._pure.packer`` (read that module for the spec)."""

import numpy as np
from ipfs_accelerate_api.core._pure.packer import as_lengths, check_limits

from libc.stdint cimport int64_t


cdef Py_ssize_t _pack(const int64_t[::1] lens, int64_t max_items, int64_t max_tokens,
                      int64_t[:, ::1] out) noexcept nogil:
    """Greedy order-preserving packing into ``out``; returns the number of batches."""
    cdef Py_ssize_t n = lens.shape[0], i, nb = 0, start = 0
    cdef int64_t count = 0, total = 0, length
    for i in range(n):
        length = lens[i]
        if count and (count == max_items or total + length > max_tokens):
            out[nb, 0] = start
            out[nb, 1] = i
            nb += 1
            start = i
            count = 0
            total = 0
        count += 1
        total += length
    if count:
        out[nb, 0] = start
        out[nb, 1] = n
        nb += 1
    return nb


def pack_batches(lengths, max_items, max_tokens):
    """Order-preserving ``(start, end)`` ranges, each within both limits."""
    lens = as_lengths(lengths)
    mi, mt = check_limits(max_items, max_tokens)
    out = np.empty((lens.shape[0], 2), dtype=np.int64)
    cdef Py_ssize_t nb
    cdef const int64_t[::1] lv = lens
    cdef int64_t[:, ::1] ov = out
    cdef int64_t cmi = mi, cmt = mt
    with nogil:
        nb = _pack(lv, cmi, cmt, ov)
    return out[:nb].copy() if nb < lens.shape[0] // 2 else out[:nb]


def pack_sorted(lengths, max_items, max_tokens):
    """Batches of original indices, packed shortest first (ties keep input order)."""
    lens = as_lengths(lengths)
    order = np.argsort(lens, kind="stable")
    ranges = pack_batches(lens[order], max_items, max_tokens)
    if ranges.shape[0] == 0:
        return []
    return np.split(order, ranges[1:, 0])
