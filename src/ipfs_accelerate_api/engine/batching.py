"""Request batching: many small list-taking calls combined into one request.

A :class:`Batcher` collects calls that arrive within ``batch_timeout`` of the first one (up to
``batch_size`` items), sends them as one request through ``send(items, priority)`` and splits
the answer back to each caller in order.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

__all__ = ["Batcher", "gather"]


class Batcher:
    def __init__(self, send: Callable[[list[Any], int], Future], *, batch_size: int,
                 batch_timeout: float, split: Callable[[Any, list[int]], list[Any]]) -> None:
        self._send = send
        self._split = split
        self._size = batch_size
        self._timeout = batch_timeout
        self._cv = threading.Condition()
        self._pending: list[tuple[list[Any], int, Future]] = []
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

    def add(self, items: Sequence[Any], priority: int) -> Future:
        fut: Future = Future()
        with self._cv:
            if self._closed:
                from ..errors import ClientClosed

                fut.set_exception(ClientClosed("backend closed"))
                return fut
            if not self._pending:
                self._first = time.monotonic()
            self._pending.append((list(items), priority, fut))
            self._count += len(items)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ipfs-accel-batcher",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()
        return fut

    def _take(self) -> list[tuple[list[Any], int, Future]]:
        batch, n = [], 0
        while self._pending and (not batch or n + len(self._pending[0][0]) <= self._size):
            entry = self._pending.pop(0)
            batch.append(entry)
            n += len(entry[0])
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

    def _flush(self, batch: list[tuple[list[Any], int, Future]]) -> None:
        items = [x for entry in batch for x in entry[0]]
        sizes = [len(entry[0]) for entry in batch]
        priority = min(entry[1] for entry in batch)
        with self._cv:
            self._in_flight += 1
        try:
            combined = self._send(items, priority)
        except BaseException as exc:
            self.end_direct()
            for _, _, fut in batch:
                fut.set_exception(exc)
            return
        combined.add_done_callback(lambda _f: self.end_direct())

        def done(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                for _, _, fut in batch:
                    fut.set_exception(exc)
                return
            try:
                parts = self._split(f.result(), sizes)
            except BaseException as err:
                for _, _, fut in batch:
                    fut.set_exception(err)
                return
            for (_, _, fut), part in zip(batch, parts):
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
