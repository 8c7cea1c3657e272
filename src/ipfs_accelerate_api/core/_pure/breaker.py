"""Circuit breaker: the readable spec of ``cython_core/breaker.pyx``.

States (:class:`BreakerState`):

* CLOSED: calls are allowed. ``failure_threshold`` failures *in a row* open the breaker
  (a success resets the run).
* OPEN: calls are refused (``allow()`` is False, counted as ``rejected``) until
  ``recovery_timeout`` seconds have passed since it opened; then it is HALF_OPEN. Reading
  ``state`` or calling ``allow()``/``retry_after()`` performs that transition.
* HALF_OPEN: at most ``half_open_max_calls`` probes are in flight at once; others are refused.
  A probe's success frees its slot; ``success_threshold`` successes close the breaker. One
  failure re-opens it (and restarts the recovery timeout).

Outcomes reported while OPEN (calls that started before it opened) are counted in the stats
but change nothing. Listeners get ``(old, new)`` on every transition, after the state has
changed, outside any lock. ``reset()`` closes the breaker; the counters in ``stats()`` are
cumulative and survive it.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

from ..._enums import BreakerState

__all__ = ["CircuitBreaker"]

Listener = Callable[[BreakerState, BreakerState], object]

_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def check_breaker_args(
    failure_threshold: int,
    recovery_timeout: float,
    half_open_max_calls: int,
    success_threshold: int,
) -> tuple[int, float, int, int]:
    """Validate the constructor arguments (shared by both twins)."""
    ints = {
        "failure_threshold": failure_threshold,
        "half_open_max_calls": half_open_max_calls,
        "success_threshold": success_threshold,
    }
    for name, value in ints.items():
        if int(value) != value or int(value) < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    timeout = float(recovery_timeout)
    if not (timeout >= 0 and math.isfinite(timeout)):
        raise ValueError(f"recovery_timeout must be a finite number >= 0; got {recovery_timeout!r}")
    return int(failure_threshold), timeout, int(half_open_max_calls), int(success_threshold)


def breaker_stats(
    state: BreakerState,
    trips: int,
    failures: int,
    successes: int,
    rejected: int,
    consecutive_failures: int,
) -> dict[str, Any]:
    """The ``stats()`` snapshot (one builder for both twins)."""
    return {
        "state": state.name,
        "trips": trips,
        "failures": failures,
        "successes": successes,
        "rejected": rejected,
        "consecutive_failures": consecutive_failures,
    }


class CircuitBreaker:
    """A CLOSED/OPEN/HALF_OPEN circuit breaker with an injectable clock.

    Args:
        failure_threshold: failures in a row that open it.
        recovery_timeout: seconds it stays open before letting probes through.
        half_open_max_calls: probes in flight at once while half-open.
        success_threshold: probe successes that close it.
        clock: returns seconds (monotonic); default :func:`time.monotonic`.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        clock: Callable[[], float] | None = None,
    ) -> None:
        (
            self._failure_threshold,
            self._recovery_timeout,
            self._half_open_max_calls,
            self._success_threshold,
        ) = check_breaker_args(
            failure_threshold, recovery_timeout, half_open_max_calls, success_threshold
        )
        self._clock = clock if clock is not None else time.monotonic
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._state = _CLOSED
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._probes = 0  # probes in flight (half-open)
        self._probe_successes = 0
        self._trips = 0
        self._failures = 0
        self._successes = 0
        self._rejected = 0

    @property
    def failure_threshold(self) -> int:
        return self._failure_threshold

    @property
    def recovery_timeout(self) -> float:
        return self._recovery_timeout

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._state.name}>"

    # -- transitions (lock held; return the transition to announce) ------------------------
    def _move(self, new: BreakerState, now: float) -> tuple[BreakerState, BreakerState]:
        old = self._state
        self._state = new
        if new is _OPEN:
            self._opened_at = now
            self._trips += 1
        self._probes = 0
        self._probe_successes = 0
        self._consecutive_failures = 0
        return (old, new)

    def _tick(self, now: float) -> tuple[BreakerState, BreakerState] | None:
        if self._state is _OPEN and now - self._opened_at >= self._recovery_timeout:
            return self._move(_HALF_OPEN, now)
        return None

    def _announce(self, *changes: tuple[BreakerState, BreakerState] | None) -> None:
        for change in changes:
            if change is not None:
                for listener in list(self._listeners):
                    listener(*change)

    # -- public ---------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The state now (an expired OPEN reads, and becomes, HALF_OPEN)."""
        now = self._clock()
        with self._lock:
            change = self._tick(now)
            state = self._state
        self._announce(change)
        return state

    def allow(self) -> bool:
        """May a call go ahead? A True in HALF_OPEN takes a probe slot."""
        now = self._clock()
        with self._lock:
            change = self._tick(now)
            if self._state is _CLOSED:
                ok = True
            elif self._state is _HALF_OPEN and self._probes < self._half_open_max_calls:
                self._probes += 1
                ok = True
            else:
                self._rejected += 1
                ok = False
        self._announce(change)
        return ok

    def record_success(self) -> None:
        """Report that an allowed call succeeded."""
        now = self._clock()
        change = None
        with self._lock:
            self._successes += 1
            if self._state is _CLOSED:
                self._consecutive_failures = 0
            elif self._state is _HALF_OPEN:
                if self._probes > 0:
                    self._probes -= 1
                self._probe_successes += 1
                if self._probe_successes >= self._success_threshold:
                    change = self._move(_CLOSED, now)
        self._announce(change)

    def record_failure(self) -> None:
        """Report that an allowed call failed (connection error, timeout, 5xx...)."""
        now = self._clock()
        change = None
        with self._lock:
            self._failures += 1
            if self._state is _CLOSED:
                self._consecutive_failures += 1
                if self._consecutive_failures >= self._failure_threshold:
                    change = self._move(_OPEN, now)
            elif self._state is _HALF_OPEN:
                change = self._move(_OPEN, now)
        self._announce(change)

    def retry_after(self) -> float:
        """Seconds until a call would be allowed: 0 when it would be now; while half-open
        with every probe slot taken, ``recovery_timeout`` (the wait if the probe fails)."""
        now = self._clock()
        with self._lock:
            change = self._tick(now)
            if self._state is _OPEN:
                wait = max(0.0, self._opened_at + self._recovery_timeout - now)
            elif self._state is _HALF_OPEN and self._probes >= self._half_open_max_calls:
                wait = self._recovery_timeout
            else:
                wait = 0.0
        self._announce(change)
        return wait

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(old, new)`` on every transition."""
        if not callable(callback):
            raise TypeError("listener must be callable")
        with self._lock:
            self._listeners.append(callback)

    def reset(self) -> None:
        """Close the breaker now (stats stay)."""
        now = self._clock()
        with self._lock:
            change = self._move(_CLOSED, now) if self._state is not _CLOSED else None
            self._consecutive_failures = 0
        self._announce(change)

    def stats(self) -> dict[str, Any]:
        """State (after any due OPEN -> HALF_OPEN transition) and cumulative counters."""
        now = self._clock()
        with self._lock:
            change = self._tick(now)
            snapshot = breaker_stats(
                self._state,
                self._trips,
                self._failures,
                self._successes,
                self._rejected,
                self._consecutive_failures,
            )
        self._announce(change)
        return snapshot
