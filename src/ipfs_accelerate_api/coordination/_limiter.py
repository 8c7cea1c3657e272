"""A :class:`~ipfs_accelerate_api.core.RateLimiter` whose buckets live in Redis."""

from __future__ import annotations

import time
from typing import Callable, Sequence

from ..core import RateLimiter, TokenBucket
from ..core._pure.ratelimit import _acquire_loop, check_cost, check_rate
from ._link import Link
from ._scripts import MAX_RESERVE, BucketSpec, Scripts

__all__ = ["SharedRateLimiter"]


class SharedRateLimiter:
    """Several token buckets shared by every process, taken all or nothing.

    The same semantics as the local :class:`~ipfs_accelerate_api.core.RateLimiter` (over any
    window ``T`` a bucket grants at most ``rate * T + capacity``; ``sync(i, 0, T)`` leaves
    the next token at ``T``), refilled on Redis's clock. While Redis is away it runs on local
    buckets of the same rates. Made by :meth:`Coordination.rate_limiter`.

    Args:
        rates: one ``(rate per second, capacity or None)`` per bucket, in the order costs come.
        clock, sleep: local time, for :meth:`acquire`'s deadline, its waits and the fallback.
    """

    def __init__(self, link: Link, scripts: Scripts, key: str,
                 rates: Sequence[tuple[float, float | None]], *,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], object] | None = None) -> None:
        if not rates:
            raise ValueError("SharedRateLimiter needs at least one (rate, capacity)")
        self._link, self._scripts, self._key = link, scripts, key
        self.specs = tuple(BucketSpec(f"b{i}", *check_rate(rate, cap))
                           for i, (rate, cap) in enumerate(rates))
        self._clock = clock if clock is not None else time.monotonic
        self._sleep = sleep if sleep is not None else time.sleep
        self._local = RateLimiter([TokenBucket(s.rate, s.capacity, clock=clock, sleep=sleep)
                                   for s in self.specs])

    def __repr__(self) -> str:
        rates = ", ".join(f"{s.rate:g}/s cap {s.capacity:g}" for s in self.specs)
        return f"<SharedRateLimiter {self._key} [{rates}] {'redis' if self._link.up else 'local'}>"

    def _checked(self, costs: Sequence[float]) -> list[float]:
        costs = list(costs)
        if len(costs) != len(self.specs):
            raise ValueError(f"expected {len(self.specs)} costs, one per bucket; got {len(costs)}")
        return [check_cost(c, s.capacity) for c, s in zip(costs, self.specs)]

    def try_acquire(self, costs: Sequence[float]) -> float:
        """Take every cost and return 0.0, or take nothing and return the seconds to wait."""
        checked = self._checked(costs)
        return self._link.run(
            lambda: self._scripts.acquire([self._key], self.specs, checked)[1],
            lambda: self._local.try_acquire(checked))

    def acquire(self, costs: Sequence[float], timeout: float | None = None) -> bool:
        """Wait until every bucket can pay, then take them all; False (nothing taken) if that
        cannot happen within ``timeout`` seconds.

        One round trip: the script reserves the tokens and says when they are due, and the
        caller sleeps until then. Waiters queue in the order they asked (no herd waking at
        once, no polling), and a late wake-up costs no rate: the schedule is Redis's.
        """
        checked = self._checked(costs)
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 or None")

        def shared() -> bool:
            granted, wait, _ = self._scripts.acquire(
                [self._key], self.specs, checked, reserve=MAX_RESERVE if timeout is None else timeout)
            if granted and wait > 0:
                self._sleep(wait)
            return bool(granted)

        return self._link.run(shared, lambda: _acquire_loop(
            lambda: self._local.try_acquire(checked), self._clock, self._sleep, timeout))

    def refund(self, costs: Sequence[float]) -> None:
        """Give back a cost to each bucket (``0`` for none); never above capacity."""
        costs = [float(c) for c in costs]
        if len(costs) != len(self.specs) or any(not c >= 0 for c in costs):
            raise ValueError(f"expected {len(self.specs)} costs >= 0, one per bucket")
        ops = [(s, "refund", c, 0.0) for s, c in zip(self.specs, costs) if c]
        self._link.run(lambda: self._scripts.update(self._key, ops),
                       lambda: self._local.refund(costs))

    def sync(self, index: int, remaining: float, reset_after: float) -> None:
        """Align bucket ``index`` with a server's count (see ``TokenBucket.sync``)."""
        spec, bucket = self.specs[index], self._local.buckets[index]
        remaining, reset_after = max(0.0, float(remaining)), max(0.0, float(reset_after))
        self._link.run(
            lambda: self._scripts.update(self._key, [(spec, "sync", remaining, reset_after)]),
            lambda: bucket.sync(remaining, reset_after))

    def available(self) -> list[float]:
        """Each bucket's level now (negative after a sync to an exhausted window)."""
        return self._link.run(
            lambda: self._scripts.update(self._key, [(s, "peek", 0.0, 0.0) for s in self.specs]),
            lambda: [b.available() for b in self._local.buckets])
