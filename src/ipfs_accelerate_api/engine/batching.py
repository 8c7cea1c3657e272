"""Request batching: many small calls of one operation combined into one request.

What "combine" means belongs to the operation, as a :class:`BatchKind`: how many items one
call carries (``size``), how several calls' payloads become one request's payload
(``merge``), and how that request's answer is cut back into one result per call
(``split``). Embeddings concatenate lists of texts and cut the matrix by rows; KServe
``infer`` concatenates tensors along the batch dimension; LLVM ``infer`` turns single
inputs into one ``batch_infer``. One :class:`Batcher` runs any of them: it collects calls
that arrive within ``batch_timeout`` of the first one (up to ``batch_size`` items), sends
them as one request through ``send(merged, priority)`` and hands each caller its part.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = ["BatchKind", "Batcher", "LIST", "gather", "split_sequence"]


def split_sequence(combined: Sequence[Any], sizes: list[int]) -> list[Any]:
    """``combined`` cut into consecutive parts of ``sizes`` (a list, an array's rows); an
    answer with more or fewer items than were sent is a :class:`ResponseFormatError`."""
    if len(combined) != sum(sizes):
        from ..errors import ResponseFormatError

        raise ResponseFormatError(f"expected {sum(sizes)} results, got {len(combined)}")
    out, start = [], 0
    for n in sizes:
        out.append(combined[start:start + n])
        start += n
    return out


@dataclass(frozen=True)
class BatchKind:
    """How calls of one operation combine: ``size(payload)`` is the number of items a call
    carries (what ``batch_size`` counts), ``merge(payloads)`` the payload of the one request
    for several calls, ``split(answer, sizes)`` one result per call, in call order (a result
    that is an exception is raised to that caller alone: an item the server refused)."""

    size: Callable[[Any], int]
    merge: Callable[[list[Any]], Any]
    split: Callable[[Any, list[int]], list[Any]]


#: Calls whose payload is a list of items (texts to embed): concatenated, cut by position.
LIST = BatchKind(size=len, merge=lambda parts: [x for p in parts for x in p],
                 split=split_sequence)


class Batcher:
    def __init__(self, send: Callable[[Any, int], Future], *, batch_size: int,
                 batch_timeout: float, kind: BatchKind = LIST,
                 max_weight: float | None = None) -> None:
        self._send = send
        self._kind = kind
        self._size = batch_size
        self._max_weight = max_weight
        self._timeout = batch_timeout
        self._cv = threading.Condition()
        #: (payload, its item count, its weight, priority, the caller's future), in arrival order
        self._pending: list[tuple[Any, int, float, int, Future]] = []
        self._count = 0
        self._first = 0.0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._in_flight = 0

    def begin_direct(self) -> bool:
        """True (and counted in flight) if nothing is pending or in flight: the caller may send
        its items at once, without waiting for company."""
        with self._cv:
            if self._pending or self._in_flight or self._closed:
                return False
            self._in_flight += 1
            return True

    def end_direct(self) -> None:
        """A direct send has been handed over; pending calls may be flushed."""
        with self._cv:
            self._in_flight -= 1
            self._cv.notify()

    def add(self, payload: Any, priority: int, weight: float = 0.0) -> Future:
        """Queue one call's ``payload``; its future gets this call's part of the answer.
        ``weight`` (tokens, say) counts against ``max_weight`` per request, as the items
        count against ``batch_size``."""
        n = self._kind.size(payload)
        fut: Future = Future()
        with self._cv:
            if self._closed:
                from ..errors import ClientClosed

                fut.set_exception(ClientClosed("backend closed"))
                return fut
            if not self._pending:
                self._first = time.monotonic()
            self._pending.append((payload, n, weight, priority, fut))
            self._count += n
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ipfs-accel-batcher",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()
        return fut

    def _take(self) -> list[tuple[Any, int, float, int, Future]]:
        batch, n, w = [], 0, 0.0
        limit = self._max_weight
        while self._pending and (not batch or (
                n + self._pending[0][1] <= self._size
                and (limit is None or w + self._pending[0][2] <= limit))):
            entry = self._pending.pop(0)
            batch.append(entry)
            n += entry[1]
            w += entry[2]
        self._count -= n
        if self._pending:
            self._first = time.monotonic()
        return batch

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed:
                    if self._pending and (self._count >= self._size or self._in_flight == 0
                                          or time.monotonic() - self._first >= self._timeout):
                        break
                    wait = None if not self._pending else self._timeout - (time.monotonic() - self._first)
                    self._cv.wait(wait)
                if self._closed and not self._pending:
                    return
                batch = self._take()
            self._flush(batch)

    def _flush(self, batch: list[tuple[Any, int, float, int, Future]]) -> None:
        sizes = [entry[1] for entry in batch]
        priority = min(entry[3] for entry in batch)
        futures = [entry[4] for entry in batch]
        with self._cv:
            self._in_flight += 1
        try:
            combined = self._send(self._kind.merge([entry[0] for entry in batch]), priority)
        except BaseException as exc:
            self.end_direct()
            for fut in futures:
                fut.set_exception(exc)
            return
        combined.add_done_callback(lambda _f: self.end_direct())

        def done(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                for fut in futures:
                    fut.set_exception(exc)
                return
            try:
                parts = self._kind.split(f.result(), sizes)
                if len(parts) != len(futures):
                    from ..errors import ResponseFormatError

                    raise ResponseFormatError(f"a batch of {len(futures)} calls was split "
                                              f"into {len(parts)} results")
            except BaseException as err:
                for fut in futures:
                    fut.set_exception(err)
                return
            for fut, part in zip(futures, parts):  # an exception as a part fails its caller only
                if isinstance(part, BaseException):
                    fut.set_exception(part)
                else:
                    fut.set_result(part)

        combined.add_done_callback(done)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(5)


def gather(futures: Sequence[Future], combine: Callable[[list[Any]], Any]) -> Future:
    """One future for several: ``combine(results in order)``, or the first error."""
    out: Future = Future()
    results: list[Any] = [None] * len(futures)
    remaining = [len(futures)]
    lock = threading.Lock()
    if not futures:
        out.set_result(combine([]))
        return out

    def one(i: int, f: Future) -> None:
        exc = f.exception()
        with lock:
            if out.done():
                return
            if exc is not None:
                out.set_exception(exc)
                return
            results[i] = f.result()
            remaining[0] -= 1
            finished = remaining[0] == 0
        if finished:
            try:
                out.set_result(combine(results))
            except BaseException as err:
                out.set_exception(err)

    for i, f in enumerate(futures):
        f.add_done_callback(lambda f, i=i: one(i, f))
    return out
