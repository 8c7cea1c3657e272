"""Token buckets and an all-or-nothing limiter: the readable spec of ``cython_core/ratelimit.pyx``.

A :class:`TokenBucket` holds up to ``capacity`` tokens and gains ``rate`` tokens per second.
It starts full. A grant of ``n`` takes ``n`` tokens; over any window of length ``T`` it never
grants more than ``rate * T + capacity`` (``refund`` and ``sync`` aside, which only return what
an estimate over-charged or lower the level). With ``capacity=1`` a greedy caller is paced
evenly at the rate.

The level may go below zero through :meth:`TokenBucket.sync` (the server says its window is
spent) or :meth:`TokenBucket.charge` (a grant turned out to cost more than was taken for it):
the bucket then grants nothing until it has refilled past zero.

Time comes from ``clock`` (default :func:`time.monotonic`) and waiting from ``sleep`` (default:
a real sleep that wakes :data:`SPIN_MARGIN` early and yields until the grant is due, so
oversleeping does not cost rate). Inject both in tests; nothing here needs real time.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Sequence

__all__ = ["GRANT_EPSILON", "RateLimiter", "SPIN_MARGIN", "TokenBucket"]

#: A shortfall smaller than this many tokens counts as none (float rounding in the refill
#: would otherwise ask for waits shorter than the clock can measure).
GRANT_EPSILON = 1e-9

#: The default sleep wakes this many seconds early and then yields until the grant is due
#: (OS sleeps overshoot by 0.1-0.3 ms here, more under load; each overshoot is rate lost).
SPIN_MARGIN = 0.001

Clock = Callable[[], float]
Sleep = Callable[[float], object]


def default_capacity(rate: float) -> float:
    """One second's worth of ``rate``, at least 1."""
    return max(1.0, float(rate))


def check_rate(rate: float, capacity: float | None) -> tuple[float, float]:
    """Validate ``rate`` and ``capacity``; return them as floats (capacity defaulted)."""
    rate = float(rate)
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive finite number of tokens per second; got {rate!r}")
    cap = default_capacity(rate) if capacity is None else float(capacity)
    if not (cap > 0 and math.isfinite(cap)):
        raise ValueError(f"capacity must be a positive finite number; got {capacity!r}")
    return rate, cap


def check_cost(n: float, capacity: float) -> float:
    """Validate one request's cost against a bucket's capacity."""
    n = float(n)
    if not n >= 0:
        raise ValueError(f"cost must be >= 0; got {n!r}")
    if n > capacity:
        raise ValueError(
            f"cost {n:g} exceeds the bucket capacity {capacity:g}: it could never be granted"
        )
    return n


def check_charge(n: float) -> float:
    """Validate a charge (a cost found out after the grant): finite and >= 0."""
    n = float(n)
    if not (n >= 0 and math.isfinite(n)):
        raise ValueError(f"charge must be a finite number >= 0; got {n!r}")
    return n


def default_sleep(seconds: float) -> None:
    """Sleep, then yield until ``seconds`` have passed (absorbs the OS's oversleep)."""
    deadline = time.monotonic() + seconds
    if seconds > SPIN_MARGIN:
        time.sleep(seconds - SPIN_MARGIN)
    while time.monotonic() < deadline:  # time.sleep(0) itself can overshoot: spin
        pass


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``capacity`` held.

    Args:
        rate: tokens added per second (> 0).
        capacity: most tokens held; default one second's worth of ``rate``, at least 1.
        clock: returns seconds (monotonic); default :func:`time.monotonic`.
        sleep: waits a number of seconds; default a real sleep (see the module docstring).
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._rate, self._capacity = check_rate(rate, capacity)
        self._clock: Clock = clock if clock is not None else time.monotonic
        self._sleep: Sleep | None = sleep
        self._tokens = self._capacity
        self._last = self._clock()
        self._lock = threading.Lock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def capacity(self) -> float:
        return self._capacity

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self._rate:g}/s capacity={self._capacity:g}>"

    # -- lock-held internals (also used by RateLimiter) -------------------------------------
    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
            self._last = now

    def _wait_for(self, n: float) -> float:
        """Seconds until ``n`` tokens are there (0.0 if they are now)."""
        if self._tokens >= n - GRANT_EPSILON:
            return 0.0
        return (n - self._tokens) / self._rate

    # -- public ---------------------------------------------------------------------------
    def try_acquire(self, n: float = 1.0) -> float:
        """Take ``n`` tokens if they are there and return 0.0; else take nothing and return
        the seconds until they would be."""
        n = check_cost(n, self._capacity)
        now = self._clock()
        with self._lock:
            self._refill(now)
            wait = self._wait_for(n)
            if wait == 0.0:
                self._tokens -= n
            return wait

    def acquire(self, n: float = 1.0, timeout: float | None = None) -> bool:
        """Wait for ``n`` tokens and take them. False (nothing taken) if that cannot happen
        within ``timeout`` seconds; ``None`` waits as long as it takes."""
        return _acquire_loop(lambda: self.try_acquire(n), self._clock, self._sleep, timeout)

    def refund(self, n: float) -> None:
        """Give back ``n`` tokens (an estimate charged too much); never above capacity."""
        n = float(n)
        if not n >= 0:
            raise ValueError("refund must be >= 0")
        now = self._clock()
        with self._lock:
            self._refill(now)
            self._tokens = min(self._capacity, self._tokens + n)

    def charge(self, n: float) -> None:
        """Take ``n`` more tokens now, even below zero: a grant used more than it was charged
        (a request's real token count above its estimate). Unlike :meth:`try_acquire` this
        never refuses, and ``n`` may exceed the capacity."""
        n = check_charge(n)
        now = self._clock()
        with self._lock:
            self._refill(now)
            self._tokens -= n

    def available(self) -> float:
        """Tokens held now (may be negative after a :meth:`sync` to an exhausted window)."""
        now = self._clock()
        with self._lock:
            self._refill(now)
            return self._tokens

    def set_rate(self, rate: float, capacity: float | None = None) -> None:
        """Change the rate (and capacity, default one second of the new rate) from now on."""
        rate, cap = check_rate(rate, capacity)
        now = self._clock()
        with self._lock:
            self._refill(now)
            self._rate = rate
            self._capacity = cap
            self._tokens = min(self._tokens, cap)

    def sync(self, remaining: float, reset_after: float) -> None:
        """Align with a server's own count (its rate-limit headers).

        The server says ``remaining`` units are left and its window refills ``reset_after``
        seconds from now. The level is lowered to ``remaining`` (never raised: our own count
        already covers requests still in flight); when ``remaining`` is 0 the bucket grants
        nothing before ``reset_after`` and its next unit exactly then (the level is set to
        ``1 - reset_after * rate``), not one refill period later.
        """
        remaining = max(0.0, float(remaining))
        reset_after = max(0.0, float(reset_after))
        now = self._clock()
        with self._lock:
            self._refill(now)
            target = remaining if remaining > 0 else 1.0 - reset_after * self._rate
            if target < self._tokens:
                self._tokens = target


def _acquire_loop(
    attempt: Callable[[], float], clock: Clock, sleep: Sleep | None, timeout: float | None
) -> bool:
    """Call ``attempt`` until it grants (returns 0.0), sleeping as told in between."""
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    deadline = None if timeout is None else clock() + timeout
    nap = sleep if sleep is not None else default_sleep
    while True:
        wait = attempt()
        if wait == 0.0:
            return True
        if deadline is not None:
            remaining = deadline - clock()
            if wait > remaining:
                return False
        nap(wait)


class RateLimiter:
    """Several buckets taken together, all or nothing (e.g. requests/min and tokens/min).

    Args:
        buckets: the :class:`TokenBucket` objects, in the order costs are given.
        clock, sleep: for :meth:`acquire`'s deadline and waits; default the first bucket's.
    """

    def __init__(
        self,
        buckets: Sequence[TokenBucket],
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        buckets = tuple(buckets)
        if not buckets:
            raise ValueError("RateLimiter needs at least one bucket")
        for b in buckets:
            if not isinstance(b, TokenBucket):
                raise TypeError(
                    f"RateLimiter takes TokenBucket objects of the same implementation; got {b!r}"
                )
        self._buckets = buckets
        # Lock in one global order (by id) so limiters sharing buckets never deadlock.
        self._locks = [b._lock for b in sorted(set(buckets), key=id)]
        self._clock = clock if clock is not None else buckets[0]._clock
        self._sleep = sleep if sleep is not None else buckets[0]._sleep

    @property
    def buckets(self) -> tuple[TokenBucket, ...]:
        return self._buckets

    def __repr__(self) -> str:
        return f"<RateLimiter {list(self._buckets)!r}>"

    def _costs(self, costs: Sequence[float]) -> list[float]:
        costs = list(costs)
        if len(costs) != len(self._buckets):
            raise ValueError(f"expected {len(self._buckets)} costs, one per bucket; got {len(costs)}")
        return [check_cost(c, b._capacity) for c, b in zip(costs, self._buckets)]

    def try_acquire(self, costs: Sequence[float]) -> float:
        """Take every cost from its bucket and return 0.0, or take nothing and return the
        longest wait among the buckets that are short."""
        checked = self._costs(costs)
        nows = [b._clock() for b in self._buckets]
        for lock in self._locks:
            lock.acquire()
        try:
            wait = 0.0
            for b, now, c in zip(self._buckets, nows, checked):
                b._refill(now)
                wait = max(wait, b._wait_for(c))
            if wait == 0.0:
                for b, c in zip(self._buckets, checked):
                    b._tokens -= c
            return wait
        finally:
            for lock in reversed(self._locks):
                lock.release()

    def acquire(self, costs: Sequence[float], timeout: float | None = None) -> bool:
        """Wait until every bucket can pay its cost, then take them all (False on timeout)."""
        checked = self._costs(costs)
        return _acquire_loop(lambda: self.try_acquire(checked), self._clock, self._sleep, timeout)

    def refund(self, costs: Sequence[float]) -> None:
        """Give back a cost to each bucket (``0`` for none)."""
        costs = list(costs)
        if len(costs) != len(self._buckets):
            raise ValueError(f"expected {len(self._buckets)} costs, one per bucket; got {len(costs)}")
        for b, c in zip(self._buckets, costs):
            if c:
                b.refund(c)
