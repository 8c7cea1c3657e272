"""Bounded three-level priority queue: the readable spec of ``cython_core/pqueue.pyx``.

Semantics (both twins):

* Three levels, :class:`Priority` HIGH(0) < NORMAL(1) < LOW(2); a get always takes from the
  highest non-empty level, FIFO within a level.
* ``maxsize=0`` means unbounded. When full, the ``overflow`` policy decides:

  - ``"block"``: ``put`` waits for room (``block=False`` or an expired ``timeout`` raise
    :class:`QueueFull`);
  - ``"reject"``: ``put`` raises :class:`QueueFull` at once;
  - ``"drop_lowest"``: the *oldest* item of the *lowest* non-empty level strictly below the new
    item's level is evicted to make room (handed to ``on_drop`` if given, always counted in
    ``stats()["dropped"]``); if no level is lower, the put is rejected with :class:`QueueFull`.

* ``close()`` wakes every waiting thread. Afterwards ``put`` raises :class:`QueueClosed`;
  ``get`` still drains what is left and raises :class:`QueueClosed` once the queue is empty.
* Every refused put (full, timed out) counts in ``stats()["rejected"]``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Deque

from ...errors import QueueClosed, QueueEmpty, QueueFull
from ..._enums import OVERFLOW_POLICIES, Priority

__all__ = ["PriorityQueue"]

_LEVELS = 3
_BLOCK, _REJECT, _DROP_LOWEST = range(3)


def _policy_code(overflow: str) -> int:
    try:
        return OVERFLOW_POLICIES.index(overflow)
    except ValueError:
        raise ValueError(
            f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}; got {overflow!r}"
        ) from None


def _check_level(priority: int) -> int:
    level = int(priority)
    if not 0 <= level < _LEVELS:
        raise ValueError(f"priority must be Priority.HIGH, NORMAL or LOW (0..2); got {priority!r}")
    return level


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be a non-negative number or None")
    return timeout


def stats_dict(
    depth: list[int],
    maxsize: int,
    enqueued: int,
    dequeued: int,
    rejected: int,
    dropped: int,
    high_water: int,
    closed: bool,
) -> dict[str, Any]:
    """The ``stats()`` snapshot; one builder for both twins so their keys never drift."""
    return {
        "depth": {p.name: depth[p] for p in Priority},
        "size": sum(depth),
        "maxsize": maxsize,
        "enqueued": enqueued,
        "dequeued": dequeued,
        "rejected": rejected,
        "dropped": dropped,
        "high_water": high_water,
        "closed": closed,
    }


class PriorityQueue:
    """A thread-safe, optionally bounded priority queue with an overflow policy.

    Args:
        maxsize: most items held at once; ``0`` for no bound.
        overflow: ``"block"``, ``"reject"`` or ``"drop_lowest"`` (see the module docstring).
        on_drop: called with each item evicted by ``"drop_lowest"`` (outside the lock).
    """

    def __init__(
        self,
        maxsize: int = 0,
        overflow: str = "block",
        on_drop: Callable[[Any], object] | None = None,
    ) -> None:
        if int(maxsize) < 0:
            raise ValueError("maxsize must be >= 0 (0 means unbounded)")
        self._maxsize = int(maxsize)
        self._policy = _policy_code(overflow)
        self._overflow = overflow
        self._on_drop = on_drop
        self._levels: tuple[Deque[Any], ...] = tuple(deque() for _ in range(_LEVELS))
        self._size = 0
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False
        self._enqueued = 0
        self._dequeued = 0
        self._rejected = 0
        self._dropped = 0
        self._high_water = 0

    # -- properties -----------------------------------------------------------------------
    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def overflow(self) -> str:
        return self._overflow

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        """Number of items held now."""
        return self._size

    __len__ = qsize

    def empty(self) -> bool:
        return self._size == 0

    def full(self) -> bool:
        return self._maxsize > 0 and self._size >= self._maxsize

    def __repr__(self) -> str:
        return (
            f"<PriorityQueue size={self._size} maxsize={self._maxsize} "
            f"overflow={self._overflow!r}{' closed' if self._closed else ''}>"
        )

    # -- put ------------------------------------------------------------------------------
    def put(
        self,
        item: Any,
        priority: int = Priority.NORMAL,
        block: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Add ``item`` at ``priority``; what happens when full depends on ``overflow``."""
        level = _check_level(priority)
        _check_timeout(timeout)
        evicted: list[Any] = []
        with self._lock:
            if self._closed:
                raise QueueClosed("put() on a closed queue")
            if self._maxsize and self._size >= self._maxsize:
                if self._policy == _DROP_LOWEST:
                    for lower in range(_LEVELS - 1, level, -1):
                        if self._levels[lower]:
                            evicted.append(self._levels[lower].popleft())
                            self._size -= 1
                            self._dropped += 1
                            break
                    else:
                        self._rejected += 1
                        raise QueueFull("queue full and no lower-priority item to drop")
                elif self._policy == _REJECT or not block:
                    self._rejected += 1
                    raise QueueFull("queue full")
                else:
                    self._wait_for_room(timeout)
            self._levels[level].append(item)
            self._size += 1
            self._enqueued += 1
            if self._size > self._high_water:
                self._high_water = self._size
            self._not_empty.notify()
        if evicted and self._on_drop is not None:
            self._on_drop(evicted[0])

    def _wait_for_room(self, timeout: float | None) -> None:
        """Wait (lock held) until there is room; raise if closed or timed out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._size >= self._maxsize:
            if self._closed:
                raise QueueClosed("queue closed while waiting to put")
            if deadline is None:
                self._not_full.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._rejected += 1
                    raise QueueFull("queue full (timed out)")
                self._not_full.wait(remaining)
        if self._closed:
            raise QueueClosed("queue closed while waiting to put")

    def put_nowait(self, item: Any, priority: int = Priority.NORMAL) -> None:
        """``put(item, priority, block=False)``."""
        self.put(item, priority, False)

    # -- get ------------------------------------------------------------------------------
    def _wait_for_item(self, block: bool, timeout: float | None) -> bool:
        """Wait (lock held) for an item. False on timeout; raises when closed and empty."""
        if self._size:
            return True
        if self._closed:
            raise QueueClosed("queue closed and empty")
        if not block:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._size:
            if self._closed:
                raise QueueClosed("queue closed and empty")
            if deadline is None:
                self._not_empty.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._not_empty.wait(remaining)
        return True

    def _pop(self) -> Any:
        for level in self._levels:
            if level:
                item = level.popleft()
                self._size -= 1
                self._dequeued += 1
                return item
        raise AssertionError("_pop on an empty queue")  # pragma: no cover

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the next item (highest priority, then oldest)."""
        _check_timeout(timeout)
        with self._lock:
            if not self._wait_for_item(block, timeout):
                raise QueueEmpty("no item before the timeout" if block else "queue empty")
            item = self._pop()
            self._not_full.notify()
            return item

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """Wait up to ``timeout`` for one item, then take up to ``max_items`` without waiting.

        Returns ``[]`` if nothing arrived in time (a batcher's loop wants a list, not an
        exception); raises :class:`QueueClosed` once the queue is closed and empty.
        """
        if int(max_items) < 1:
            raise ValueError("max_items must be >= 1")
        _check_timeout(timeout)
        with self._lock:
            if not self._wait_for_item(True, timeout):
                return []
            n = min(int(max_items), self._size)
            items = [self._pop() for _ in range(n)]
            self._not_full.notify(n)
            return items

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Refuse further puts and wake every waiting thread."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def stats(self) -> dict[str, Any]:
        """Depth per level, counters and the high-water mark."""
        with self._lock:
            return stats_dict(
                [len(d) for d in self._levels],
                self._maxsize,
                self._enqueued,
                self._dequeued,
                self._rejected,
                self._dropped,
                self._high_water,
                self._closed,
            )
