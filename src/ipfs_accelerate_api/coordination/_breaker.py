"""A circuit breaker whose state is one Redis hash per endpoint, shared by every process."""

from __future__ import annotations

from typing import Any, Callable

from .._enums import BreakerState
from ..config import BreakerPolicy
from ..core import CircuitBreaker
from ..core._pure.breaker import breaker_stats, check_breaker_args
from ._link import Link
from ._scripts import BreakerParams, Scripts

__all__ = ["DEFAULT_PROBE_LEASE", "SharedCircuitBreaker"]

Listener = Callable[[BreakerState, BreakerState], object]

#: Seconds a half-open probe slot stays taken without an outcome before another process may
#: probe (the prober may have died). Longer than any sane request.
DEFAULT_PROBE_LEASE = 300.0


class SharedCircuitBreaker:
    """``CircuitBreaker``'s interface and state machine, with the state in Redis.

    Failures in a row are counted across processes; half-open lets ``half_open_max_calls``
    probes through across all of them; every call reads the shared state, so a transition
    made by one process is seen by the others on their next call. Listeners hear the
    transitions this process makes. While Redis is away a local breaker of the same policy
    decides. Made by :meth:`Coordination.breaker`.
    """

    def __init__(self, link: Link, scripts: Scripts, key: str, policy: BreakerPolicy | None = None,
                 *, probe_lease: float = DEFAULT_PROBE_LEASE,
                 clock: Callable[[], float] | None = None) -> None:
        p = policy or BreakerPolicy()
        args = check_breaker_args(p.failure_threshold, p.recovery_timeout, p.half_open_max_calls,
                                  p.success_threshold)
        self._link, self._scripts, self._key = link, scripts, key
        self._params = BreakerParams(args[0], round(args[1] * 1e6), args[2], args[3],
                                     round(max(probe_lease, args[1]) * 1e6))
        self._local = CircuitBreaker(*args, clock=clock)
        self._listeners: list[Listener] = []

    @property
    def failure_threshold(self) -> int:
        return self._params.failure_threshold

    @property
    def recovery_timeout(self) -> float:
        return self._params.recovery_us / 1e6

    def __repr__(self) -> str:
        return f"<SharedCircuitBreaker {self.state.name} {'redis' if self._link.up else 'local'}>"

    def _op(self, op: str) -> list[Any]:
        out = self._scripts.breaker(self._key, op, self._params)
        if out[0] != out[1]:
            for listener in list(self._listeners):
                listener(BreakerState(out[0]), BreakerState(out[1]))
        return out

    @property
    def state(self) -> BreakerState:
        return self._link.run(lambda: BreakerState(self._op("state")[1]),
                              lambda: self._local.state)

    def allow(self) -> bool:
        """May a call go ahead? A True in HALF_OPEN takes one of the shared probe slots."""
        return self._link.run(lambda: bool(self._op("allow")[2]), self._local.allow)

    def record_success(self) -> None:
        self._link.run(lambda: self._op("success") and None, self._local.record_success)

    def record_failure(self) -> None:
        self._link.run(lambda: self._op("failure") and None, self._local.record_failure)

    def retry_after(self) -> float:
        return self._link.run(lambda: float(self._op("retry_after")[3]), self._local.retry_after)

    def reset(self) -> None:
        self._link.run(lambda: self._op("reset") and None, self._local.reset)

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(old, new)`` on every transition this process makes."""
        self._local.add_listener(callback)  # validates it
        self._listeners.append(callback)

    def stats(self) -> dict[str, Any]:
        """State and cumulative counters, shared (``"shared": True``) or local."""
        def shared() -> dict[str, Any]:
            _, state, _, _, trips, failures, successes, rejected, cf = self._op("stats")
            snap = breaker_stats(BreakerState(state), trips, failures, successes, rejected, cf)
            return {**snap, "shared": True}

        return self._link.run(shared, lambda: {**self._local.stats(), "shared": False})
