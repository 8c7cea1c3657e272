# cython: language_level=3, freethreading_compatible=False
"""Compiled twin of ``ipfs_accelerate_api.core._pure.breaker`` (read that module for the spec).

Transitions happen under the GIL with no Python code in between (an injected clock is read
first, listeners are called after), so the state machine needs no lock.
"""

from ipfs_accelerate_api._enums import BreakerState
from ipfs_accelerate_api.core._pure.breaker import check_breaker_args, breaker_stats

include "_clock.pxi"

cdef enum:
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

cdef tuple _STATES = tuple(BreakerState)


cdef class CircuitBreaker:
    """A CLOSED/OPEN/HALF_OPEN circuit breaker with an injectable clock.

    Args:
        failure_threshold: failures in a row that open it.
        recovery_timeout: seconds it stays open before letting probes through.
        half_open_max_calls: probes in flight at once while half-open.
        success_threshold: probe successes that close it.
        clock: returns seconds (monotonic); default the C monotonic clock.
    """
    cdef int _state
    cdef readonly int failure_threshold
    cdef readonly double recovery_timeout
    cdef int _half_open_max_calls, _success_threshold
    cdef double _opened_at
    cdef long _consecutive_failures, _probes, _probe_successes
    cdef unsigned long long _trips, _failures, _successes, _rejected
    cdef object _clock
    cdef list _listeners

    def __init__(self, failure_threshold=5, recovery_timeout=30.0, half_open_max_calls=1,
                 success_threshold=1, clock=None):
        (self.failure_threshold, self.recovery_timeout, self._half_open_max_calls,
         self._success_threshold) = check_breaker_args(
            failure_threshold, recovery_timeout, half_open_max_calls, success_threshold)
        self._clock = clock
        self._listeners = []
        self._state = CLOSED

    def __repr__(self):
        return f"<CircuitBreaker {_STATES[self._state].name}>"

    cdef inline double _time(self) except? -1.0:
        if self._clock is None:
            return _now()
        return float(self._clock())

    cdef inline int _move(self, int new, double now) noexcept:
        """Change state; returns the old state shifted into a transition code (old*3+new+1)."""
        cdef int old = self._state
        self._state = new
        if new == OPEN:
            self._opened_at = now
            self._trips += 1
        self._probes = 0
        self._probe_successes = 0
        self._consecutive_failures = 0
        return old * 3 + new + 1

    cdef inline int _tick(self, double now) noexcept:
        if self._state == OPEN and now - self._opened_at >= self.recovery_timeout:
            return self._move(HALF_OPEN, now)
        return 0

    cdef int _announce(self, int change) except -1:
        if change and self._listeners:
            change -= 1
            old = _STATES[change // 3]
            new = _STATES[change % 3]
            for listener in list(self._listeners):
                listener(old, new)
        return 0

    @property
    def state(self):
        """The state now (an expired OPEN reads, and becomes, HALF_OPEN)."""
        cdef int change = self._tick(self._time())
        cdef int state = self._state
        self._announce(change)
        return _STATES[state]

    def allow(self):
        """May a call go ahead? A True in HALF_OPEN takes a probe slot."""
        cdef int change = 0
        cdef bint ok
        if self._state == CLOSED:
            return True
        change = self._tick(self._time())
        if self._state == CLOSED:
            ok = True
        elif self._state == HALF_OPEN and self._probes < self._half_open_max_calls:
            self._probes += 1
            ok = True
        else:
            self._rejected += 1
            ok = False
        self._announce(change)
        return ok

    def record_success(self):
        """Report that an allowed call succeeded."""
        cdef int change = 0
        self._successes += 1
        if self._state == CLOSED:
            self._consecutive_failures = 0
            return
        if self._state == HALF_OPEN:
            now = self._time()
            if self._state == HALF_OPEN:  # re-check: a Python clock may let others run
                if self._probes > 0:
                    self._probes -= 1
                self._probe_successes += 1
                if self._probe_successes >= self._success_threshold:
                    change = self._move(CLOSED, now)
        self._announce(change)

    def record_failure(self):
        """Report that an allowed call failed (connection error, timeout, 5xx...)."""
        cdef int change = 0
        cdef double now = self._time()
        self._failures += 1
        if self._state == CLOSED:
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.failure_threshold:
                change = self._move(OPEN, now)
        elif self._state == HALF_OPEN:
            change = self._move(OPEN, now)
        self._announce(change)

    def retry_after(self):
        """Seconds until a call would be allowed (see the pure twin)."""
        cdef double now = self._time()
        cdef int change = self._tick(now)
        cdef double wait = 0.0
        if self._state == OPEN:
            wait = self._opened_at + self.recovery_timeout - now
            if wait < 0:
                wait = 0.0
        elif self._state == HALF_OPEN and self._probes >= self._half_open_max_calls:
            wait = self.recovery_timeout
        self._announce(change)
        return wait

    def add_listener(self, callback):
        """Call ``callback(old, new)`` on every transition."""
        if not callable(callback):
            raise TypeError("listener must be callable")
        self._listeners.append(callback)

    def reset(self):
        """Close the breaker now (stats stay)."""
        cdef double now = self._time()
        cdef int change = 0
        if self._state != CLOSED:
            change = self._move(CLOSED, now)
        self._consecutive_failures = 0
        self._announce(change)

    def stats(self):
        """State (after any due OPEN -> HALF_OPEN transition) and cumulative counters."""
        cdef int change = self._tick(self._time())
        snapshot = breaker_stats(_STATES[self._state], self._trips, self._failures,
                                 self._successes, self._rejected, self._consecutive_failures)
        self._announce(change)
        return snapshot
