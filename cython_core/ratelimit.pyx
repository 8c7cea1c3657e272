# cython: language_level=3, freethreading_compatible=False
"""Compiled twin of ``ipfs_accelerate_api.core._pure.ratelimit`` (read that module for the spec).

State changes run under the GIL with no call back into Python in between, so they are
atomic without a lock. An injected clock is read *before* the state is touched.
"""

from ipfs_accelerate_api.core._pure.ratelimit import (
    check_rate, check_cost, check_charge, SPIN_MARGIN, GRANT_EPSILON as _GRANT_EPSILON,
)

cdef double GRANT_EPSILON = _GRANT_EPSILON

from cpython.mem cimport PyMem_Malloc, PyMem_Free

include "_wait.pxi"


cdef PyThread_type_lock _SLEEP_LOCK = NULL


cdef int _sleep(double seconds) except -1:
    """Sleep without the GIL (waits on a lock that is never released)."""
    global _SLEEP_LOCK
    if seconds <= 0:
        with nogil:  # just let other threads run
            pass
        return 0
    if _SLEEP_LOCK == NULL:
        _SLEEP_LOCK = PyThread_allocate_lock()
        if _SLEEP_LOCK == NULL:
            raise MemoryError()
        PyThread_acquire_lock(_SLEEP_LOCK, WAIT_LOCK)
    _lock_wait(_SLEEP_LOCK, seconds)
    return 0


cdef class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``capacity`` held.

    Args:
        rate: tokens added per second (> 0).
        capacity: most tokens held; default one second's worth of ``rate``, at least 1.
        clock: returns seconds (monotonic); default the C monotonic clock (``time.monotonic``).
        sleep: waits a number of seconds; default a GIL-free sleep that absorbs oversleep.
    """
    cdef double _rate, _capacity, _tokens, _last
    cdef object _clock
    cdef object _sleep

    def __init__(self, rate, capacity=None, clock=None, sleep=None):
        self._rate, self._capacity = check_rate(rate, capacity)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self._capacity
        self._last = self._time()

    @property
    def rate(self):
        return self._rate

    @property
    def capacity(self):
        return self._capacity

    def __repr__(self):
        return f"<TokenBucket rate={self._rate:g}/s capacity={self._capacity:g}>"

    cdef inline double _time(self) except? -1.0:
        if self._clock is None:
            return _now()
        return float(self._clock())

    cdef inline void _refill(self, double now) noexcept:
        cdef double elapsed = now - self._last
        cdef double t
        if elapsed > 0:
            t = self._tokens + elapsed * self._rate
            self._tokens = t if t < self._capacity else self._capacity
            self._last = now

    cdef inline double _wait_for(self, double n) noexcept:
        if self._tokens >= n - GRANT_EPSILON:
            return 0.0
        return (n - self._tokens) / self._rate

    cdef inline double _check(self, object n) except -1.0:
        cdef double c = n
        if not (c >= 0 and c <= self._capacity):
            check_cost(n, self._capacity)  # raises the same ValueError as the pure twin
        return c

    def try_acquire(self, n=1.0):
        """Take ``n`` tokens if they are there and return 0.0; else take nothing and return
        the seconds until they would be."""
        cdef double c = self._check(n)
        cdef double now = self._time()
        cdef double wait
        self._refill(now)
        wait = self._wait_for(c)
        if wait == 0.0:
            self._tokens -= c
        return wait

    def acquire(self, n=1.0, timeout=None):
        """Wait for ``n`` tokens and take them. False (nothing taken) if that cannot happen
        within ``timeout`` seconds; ``None`` waits as long as it takes."""
        cdef double c = self._check(n)
        cdef double wait, now
        cdef double deadline = -1.0
        if timeout is not None:
            if timeout < 0:
                raise ValueError("timeout must be >= 0 or None")
            deadline = self._time() + float(timeout)
        while True:
            now = self._time()
            self._refill(now)
            wait = self._wait_for(c)
            if wait == 0.0:
                self._tokens -= c
                return True
            if deadline >= 0 and wait > deadline - self._time():
                return False
            _nap(self._sleep, wait)

    def refund(self, n):
        """Give back ``n`` tokens (an estimate charged too much); never above capacity."""
        cdef double c = n
        cdef double now
        if not c >= 0:
            raise ValueError("refund must be >= 0")
        now = self._time()
        self._refill(now)
        c += self._tokens
        self._tokens = c if c < self._capacity else self._capacity

    def charge(self, n):
        """Take ``n`` more tokens now, even below zero (see the pure twin)."""
        cdef double c = check_charge(n)
        self._refill(self._time())
        self._tokens -= c

    def available(self):
        """Tokens held now (may be negative after a ``sync`` to an exhausted window)."""
        self._refill(self._time())
        return self._tokens

    def set_rate(self, rate, capacity=None):
        """Change the rate (and capacity, default one second of the new rate) from now on."""
        r, cap = check_rate(rate, capacity)
        cdef double now = self._time()
        self._refill(now)
        self._rate = r
        self._capacity = cap
        if self._tokens > self._capacity:
            self._tokens = self._capacity

    def sync(self, remaining, reset_after):
        """Align with a server's own count (its rate-limit headers); see the pure twin."""
        cdef double rem = max(0.0, float(remaining))
        cdef double reset = max(0.0, float(reset_after))
        cdef double now = self._time()
        cdef double target
        self._refill(now)
        target = rem if rem > 0 else 1.0 - reset * self._rate  # the next unit at the reset
        if target < self._tokens:
            self._tokens = target


cdef int _nap(object sleep, double seconds) except -1:
    cdef double deadline
    if sleep is not None:
        sleep(seconds)
        return 0
    deadline = _now() + seconds
    if seconds > SPIN_MARGIN:
        _sleep(seconds - SPIN_MARGIN)
    while _now() < deadline:
        _sleep(0)
    return 0


cdef enum:
    STACK_COSTS = 8


cdef class RateLimiter:
    """Several buckets taken together, all or nothing (e.g. requests/min and tokens/min).

    Args:
        buckets: the ``TokenBucket`` objects, in the order costs are given.
        clock, sleep: for ``acquire``'s deadline and waits; default the first bucket's.
    """
    cdef tuple _buckets
    cdef Py_ssize_t _n
    cdef object _clock
    cdef object _sleep

    def __init__(self, buckets, clock=None, sleep=None):
        cdef TokenBucket first
        buckets = tuple(buckets)
        if not buckets:
            raise ValueError("RateLimiter needs at least one bucket")
        for b in buckets:
            if not isinstance(b, TokenBucket):
                raise TypeError(
                    f"RateLimiter takes TokenBucket objects of the same implementation; got {b!r}")
        self._buckets = buckets
        self._n = len(buckets)
        first = buckets[0]
        self._clock = clock if clock is not None else first._clock
        self._sleep = sleep if sleep is not None else first._sleep

    @property
    def buckets(self):
        return self._buckets

    def __repr__(self):
        return f"<RateLimiter {list(self._buckets)!r}>"

    cdef inline double _time(self) except? -1.0:
        if self._clock is None:
            return _now()
        return float(self._clock())

    cdef int _load(self, object costs, double* out) except -1:
        cdef Py_ssize_t i
        if len(costs) != self._n:
            raise ValueError(f"expected {self._n} costs, one per bucket; got {len(costs)}")
        for i in range(self._n):
            out[i] = (<TokenBucket>self._buckets[i])._check(costs[i])
        return 0

    cdef double _attempt(self, double* costs) except -1.0:
        """Refill every bucket, then take all costs or none."""
        cdef Py_ssize_t i
        cdef TokenBucket b
        cdef double wait = 0.0, w
        # Read every clock first: an injected Python clock may let other threads run.
        for i in range(self._n):
            b = <TokenBucket>self._buckets[i]
            b._refill(b._time())
        # From here on no Python code runs: check and take atomically under the GIL.
        for i in range(self._n):
            w = (<TokenBucket>self._buckets[i])._wait_for(costs[i])
            if w > wait:
                wait = w
        if wait == 0.0:
            for i in range(self._n):
                (<TokenBucket>self._buckets[i])._tokens -= costs[i]
        return wait

    def try_acquire(self, costs):
        """Take every cost from its bucket and return 0.0, or take nothing and return the
        longest wait among the buckets that are short."""
        cdef double stack[STACK_COSTS]
        cdef double* buf = stack
        if self._n > STACK_COSTS:
            buf = <double*>PyMem_Malloc(self._n * sizeof(double))
            if buf == NULL:
                raise MemoryError()
        try:
            self._load(costs if type(costs) is tuple or type(costs) is list else list(costs), buf)
            return self._attempt(buf)
        finally:
            if buf != stack:
                PyMem_Free(buf)

    def acquire(self, costs, timeout=None):
        """Wait until every bucket can pay its cost, then take them all (False on timeout)."""
        cdef double stack[STACK_COSTS]
        cdef double* buf = stack
        cdef double wait
        cdef double deadline = -1.0
        if self._n > STACK_COSTS:
            buf = <double*>PyMem_Malloc(self._n * sizeof(double))
            if buf == NULL:
                raise MemoryError()
        try:
            self._load(list(costs), buf)
            if timeout is not None:
                if timeout < 0:
                    raise ValueError("timeout must be >= 0 or None")
                deadline = self._time() + float(timeout)
            while True:
                wait = self._attempt(buf)
                if wait == 0.0:
                    return True
                if deadline >= 0 and wait > deadline - self._time():
                    return False
                _nap(self._sleep, wait)
        finally:
            if buf != stack:
                PyMem_Free(buf)

    def refund(self, costs):
        """Give back a cost to each bucket (``0`` for none)."""
        cdef Py_ssize_t i
        costs = list(costs)
        if len(costs) != self._n:
            raise ValueError(f"expected {self._n} costs, one per bucket; got {len(costs)}")
        for i in range(self._n):
            if costs[i]:
                (<TokenBucket>self._buckets[i]).refund(costs[i])
