# cython: language_level=3, freethreading_compatible=False
"""Compiled twin of ``ipfs_accelerate_api.core._pure.pqueue`` (read that module for the spec).

Three ring buffers of object pointers. Every operation that does not wait runs entirely
under the GIL without calling back into Python, so it is atomic without any lock. A thread
that must wait parks on its own CPython lock (a ``_Waiter``) with the GIL released; the
thread that makes progress possible releases that lock.
"""

from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from collections import deque

from ipfs_accelerate_api.errors import QueueClosed, QueueEmpty, QueueFull
from ipfs_accelerate_api._enums import Priority
from ipfs_accelerate_api.core._pure.pqueue import _policy_code, stats_dict

include "_wait.pxi"

cdef enum:
    LEVELS = 3
    BLOCK = 0
    REJECT = 1
    DROP_LOWEST = 2
    INITIAL_CAPACITY = 16


cdef struct Ring:
    PyObject** buf
    Py_ssize_t head
    Py_ssize_t count
    Py_ssize_t cap


cdef int ring_push(Ring* r, object item) except -1:
    cdef Py_ssize_t newcap, i
    cdef PyObject** nb
    if r.count == r.cap:
        newcap = r.cap * 2 if r.cap else INITIAL_CAPACITY
        nb = <PyObject**>PyMem_Malloc(newcap * sizeof(PyObject*))
        if nb == NULL:
            raise MemoryError()
        for i in range(r.count):
            nb[i] = r.buf[(r.head + i) % r.cap]
        PyMem_Free(r.buf)
        r.buf = nb
        r.head = 0
        r.cap = newcap
    Py_INCREF(item)
    r.buf[(r.head + r.count) % r.cap] = <PyObject*>item
    r.count += 1
    return 0


cdef inline object ring_pop(Ring* r):
    """Pop the oldest item; the ring's reference passes to the caller."""
    cdef PyObject* p = r.buf[r.head]
    r.buf[r.head] = NULL
    r.head = (r.head + 1) % r.cap
    r.count -= 1
    item = <object>p   # takes a new reference
    Py_DECREF(item)    # drop the ring's reference
    return item


cdef class _Waiter:
    """One parked thread: a CPython lock held by the waiter until somebody wakes it."""
    cdef PyThread_type_lock lock
    cdef bint notified

    def __cinit__(self):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()
        PyThread_acquire_lock(self.lock, WAIT_LOCK)
        self.notified = False

    def __dealloc__(self):
        if self.lock != NULL:
            if not self.notified:
                PyThread_release_lock(self.lock)
            PyThread_free_lock(self.lock)

    cdef inline void wake(self) noexcept:
        self.notified = True
        PyThread_release_lock(self.lock)

    cdef int wait(self, double timeout) except -1:
        """Park until woken (1) or ``timeout`` (<0: forever) passes (0). Leaves the lock held."""
        cdef int got = _lock_wait(self.lock, timeout)
        if got:
            self.notified = False
            return 1
        if self.notified:
            # Woken between the timeout and getting the GIL back: re-take the lock.
            PyThread_acquire_lock(self.lock, WAIT_LOCK)
            self.notified = False
            return 1
        return 0


cdef inline bint _wake_one(object waiters):
    cdef _Waiter w
    if waiters:
        w = waiters.popleft()
        w.wake()
        return True
    return False


cdef class PriorityQueue:
    """A thread-safe, optionally bounded priority queue with an overflow policy.

    Args:
        maxsize: most items held at once; ``0`` for no bound.
        overflow: ``"block"``, ``"reject"`` or ``"drop_lowest"``.
        on_drop: called with each item evicted by ``"drop_lowest"``.
    """
    cdef Ring rings[LEVELS]
    cdef Py_ssize_t _size
    cdef readonly Py_ssize_t maxsize
    cdef int _policy
    cdef readonly str overflow
    cdef object _on_drop
    cdef object _getters      # deque of _Waiter waiting for an item
    cdef object _putters      # deque of _Waiter waiting for room
    cdef readonly bint closed
    cdef unsigned long long _enqueued, _dequeued, _rejected, _dropped
    cdef Py_ssize_t _high_water

    def __cinit__(self):
        cdef int i
        for i in range(LEVELS):
            self.rings[i].buf = NULL
            self.rings[i].head = 0
            self.rings[i].count = 0
            self.rings[i].cap = 0

    def __init__(self, maxsize=0, str overflow="block", on_drop=None):
        if int(maxsize) < 0:
            raise ValueError("maxsize must be >= 0 (0 means unbounded)")
        self.maxsize = int(maxsize)
        self._policy = _policy_code(overflow)
        self.overflow = overflow
        self._on_drop = on_drop
        self._getters = deque()
        self._putters = deque()

    def __dealloc__(self):
        cdef int i
        cdef Py_ssize_t j
        cdef PyObject* p
        for i in range(LEVELS):
            if self.rings[i].buf != NULL:
                for j in range(self.rings[i].count):
                    p = self.rings[i].buf[(self.rings[i].head + j) % self.rings[i].cap]
                    Py_DECREF(<object>p)
                PyMem_Free(self.rings[i].buf)
                self.rings[i].buf = NULL

    def qsize(self):
        """Number of items held now."""
        return self._size

    def __len__(self):
        return self._size

    def empty(self):
        return self._size == 0

    def full(self):
        return self.maxsize > 0 and self._size >= self.maxsize

    def __repr__(self):
        return (f"<PriorityQueue size={self._size} maxsize={self.maxsize} "
                f"overflow={self.overflow!r}{' closed' if self.closed else ''}>")

    # -- put ------------------------------------------------------------------------------
    cdef inline int _check_level(self, object priority) except -1:
        cdef long level = priority
        if level < 0 or level >= LEVELS:
            raise ValueError(
                f"priority must be Priority.HIGH, NORMAL or LOW (0..2); got {priority!r}")
        return <int>level

    cdef inline void _push(self, int level, object item) except *:
        ring_push(&self.rings[level], item)
        self._size += 1
        self._enqueued += 1
        if self._size > self._high_water:
            self._high_water = self._size
        if self._getters:
            _wake_one(self._getters)

    def put(self, item, priority=Priority.NORMAL, bint block=True, timeout=None):
        """Add ``item`` at ``priority``; what happens when full depends on ``overflow``."""
        cdef int level = self._check_level(priority)
        cdef int lower
        cdef object evicted
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be a non-negative number or None")
        if self.closed:
            raise QueueClosed("put() on a closed queue")
        if self.maxsize == 0 or self._size < self.maxsize:
            self._push(level, item)
            return
        if self._policy == DROP_LOWEST:
            for lower in range(LEVELS - 1, level, -1):
                if self.rings[lower].count:
                    evicted = ring_pop(&self.rings[lower])
                    self._size -= 1
                    self._dropped += 1
                    self._push(level, item)
                    if self._on_drop is not None:
                        self._on_drop(evicted)
                    return
            self._rejected += 1
            raise QueueFull("queue full and no lower-priority item to drop")
        if self._policy == REJECT or not block:
            self._rejected += 1
            raise QueueFull("queue full")
        self._wait_for_room(-1.0 if timeout is None else float(timeout))
        self._push(level, item)

    cdef int _wait_for_room(self, double timeout) except -1:
        cdef double deadline = _now() + timeout if timeout >= 0 else -1.0
        cdef double remaining = -1.0
        cdef _Waiter w = None
        while self._size >= self.maxsize:
            if self.closed:
                raise QueueClosed("queue closed while waiting to put")
            if deadline >= 0:
                remaining = deadline - _now()
                if remaining <= 0:
                    self._rejected += 1
                    raise QueueFull("queue full (timed out)")
            if w is None:
                w = _Waiter()
            self._putters.append(w)
            try:
                if not w.wait(remaining):
                    self._putters.remove(w)
            except BaseException:
                self._forget(self._putters, w, self._size < self.maxsize)
                raise
        if self.closed:
            raise QueueClosed("queue closed while waiting to put")
        return 0

    cdef void _forget(self, object waiters, _Waiter w, bint pass_on) except *:
        """Drop ``w`` after an exception; hand its wake-up on if it had one."""
        if w.notified:
            w.notified = False
            PyThread_acquire_lock(w.lock, NOWAIT_LOCK)
            if pass_on:
                _wake_one(waiters)
        else:
            try:
                waiters.remove(w)
            except ValueError:
                pass

    def put_nowait(self, item, priority=Priority.NORMAL):
        """``put(item, priority, block=False)``."""
        self.put(item, priority, False)

    # -- get ------------------------------------------------------------------------------
    cdef inline object _pop(self):
        cdef int i
        for i in range(LEVELS):
            if self.rings[i].count:
                item = ring_pop(&self.rings[i])
                self._size -= 1
                self._dequeued += 1
                if self._putters:
                    _wake_one(self._putters)
                return item
        raise AssertionError("_pop on an empty queue")

    cdef int _wait_for_item(self, bint block, double timeout) except -1:
        """Wait for an item: 1 when one is there, 0 on timeout; raises when closed and empty."""
        cdef double deadline, remaining = -1.0
        cdef _Waiter w = None
        if self._size:
            return 1
        if self.closed:
            raise QueueClosed("queue closed and empty")
        if not block:
            return 0
        deadline = _now() + timeout if timeout >= 0 else -1.0
        while not self._size:
            if self.closed:
                raise QueueClosed("queue closed and empty")
            if deadline >= 0:
                remaining = deadline - _now()
                if remaining <= 0:
                    return 0
            if w is None:
                w = _Waiter()
            self._getters.append(w)
            try:
                if not w.wait(remaining):
                    self._getters.remove(w)
            except BaseException:
                self._forget(self._getters, w, self._size > 0)
                raise
        return 1

    def get(self, bint block=True, timeout=None):
        """Remove and return the next item (highest priority, then oldest)."""
        if self._size:
            return self._pop()
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be a non-negative number or None")
        if not self._wait_for_item(block, -1.0 if timeout is None else float(timeout)):
            raise QueueEmpty("no item before the timeout" if block else "queue empty")
        return self._pop()

    def get_nowait(self):
        """``get(block=False)``."""
        if self._size:
            return self._pop()
        return self.get(False)

    def get_many(self, max_items, timeout=None):
        """Wait up to ``timeout`` for one item, then take up to ``max_items`` without waiting.

        Returns ``[]`` if nothing arrived in time; raises ``QueueClosed`` once closed and empty.
        """
        cdef Py_ssize_t n, i, limit = max_items
        if limit < 1:
            raise ValueError("max_items must be >= 1")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be a non-negative number or None")
        if not self._wait_for_item(True, -1.0 if timeout is None else float(timeout)):
            return []
        n = min(limit, self._size)
        out = [None] * n
        for i in range(n):
            out[i] = self._pop()
        return out

    # -- lifecycle ------------------------------------------------------------------------
    def close(self):
        """Refuse further puts and wake every waiting thread."""
        self.closed = True
        while _wake_one(self._getters):
            pass
        while _wake_one(self._putters):
            pass

    def stats(self):
        """Depth per level, counters and the high-water mark."""
        return stats_dict(
            [self.rings[0].count, self.rings[1].count, self.rings[2].count],
            self.maxsize, self._enqueued, self._dequeued, self._rejected, self._dropped,
            self._high_water, self.closed,
        )
