"""Batch packing: the readable spec of ``cython_core/packer.pyx``.

Given the lengths (e.g. token counts) of items, cut them into batches of at most ``max_items``
items and at most ``max_tokens`` total length. An item longer than ``max_tokens`` on its own
goes alone in its batch (it is never dropped: the service decides what to do with it).

* :func:`pack_batches` keeps the input order and returns ``(start, end)`` ranges as an
  ``int64`` array of shape ``(n_batches, 2)`` (``end`` exclusive), greedily: a batch is
  closed when the next item would break a limit.
* :func:`pack_sorted` packs the items in order of length (shortest first, ties by position)
  to cut padding, and returns one ``int64`` array of original indices per batch.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import numpy.typing as npt

__all__ = ["pack_batches", "pack_sorted"]

Lengths = Union[Sequence[int], npt.NDArray[np.integer]]


def as_lengths(lengths: Lengths) -> npt.NDArray[np.int64]:
    """Lengths as a contiguous 1-D ``int64`` array; ``ValueError`` on anything else."""
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be one-dimensional; got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"lengths must be integers; got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if out.min() < 0:
        raise ValueError("lengths must be >= 0")
    return out


def check_limits(max_items: int, max_tokens: int) -> tuple[int, int]:
    """Validate the two batch limits (both integers >= 1)."""
    for name, value in (("max_items", max_items), ("max_tokens", max_tokens)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(max_items), int(max_tokens)


def pack_batches(lengths: Lengths, max_items: int, max_tokens: int) -> npt.NDArray[np.int64]:
    """Order-preserving ``(start, end)`` ranges, each within both limits."""
    lens = as_lengths(lengths)
    max_items, max_tokens = check_limits(max_items, max_tokens)
    ranges: list[tuple[int, int]] = []
    start = 0
    count = 0
    total = 0
    for i, length in enumerate(lens.tolist()):
        if count and (count == max_items or total + length > max_tokens):
            ranges.append((start, i))
            start, count, total = i, 0, 0
        count += 1
        total += length
    if count:
        ranges.append((start, len(lens)))
    return np.array(ranges, dtype=np.int64).reshape(-1, 2)


def pack_sorted(
    lengths: Lengths, max_items: int, max_tokens: int
) -> list[npt.NDArray[np.int64]]:
    """Batches of original indices, packed shortest first (ties keep input order)."""
    lens = as_lengths(lengths)
    order = np.array(sorted(range(len(lens)), key=lens.__getitem__), dtype=np.int64)
    ranges = pack_batches(lens[order], max_items, max_tokens)
    return [order[s:e] for s, e in ranges.tolist()]
