"""Token-bucket try_acquire cost, and limiter accuracy at 200 requests/s with capacity=1."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conftest import QUICK, per_op

N = 200 if QUICK else 5000
HUGE = 1e12  # a rate that always grants: we measure the bookkeeping, not the waiting


class MinimalLockedBucket:
    """The smallest correct thread-safe Python bucket (what users write by hand)."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity, self.tokens = rate, capacity, capacity
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def try_acquire(self, n: float = 1.0) -> float:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= n:
                self.tokens -= n
                return 0.0
            return (n - self.tokens) / self.rate


def _loop(fn):
    def run():
        for _ in range(N):
            fn()

    return run


@pytest.mark.benchmark(group="ratelimit: try_acquire")
def test_ours(benchmark, twin):
    b = twin.TokenBucket(HUGE)
    per_op(benchmark, N)
    benchmark.extra_info["impl"] = twin.tag
    benchmark(_loop(b.try_acquire))


@pytest.mark.benchmark(group="ratelimit: try_acquire")
def test_limiter_two_buckets(benchmark, twin):
    lim = twin.RateLimiter([twin.TokenBucket(HUGE), twin.TokenBucket(HUGE)])
    costs = (1, 100)
    per_op(benchmark, N)
    benchmark.extra_info["impl"] = f"{twin.tag} RateLimiter(rpm+tpm)"
    benchmark(_loop(lambda: lim.try_acquire(costs)))


@pytest.mark.benchmark(group="ratelimit: try_acquire")
def test_minimal_locked_python(benchmark):
    b = MinimalLockedBucket(HUGE, HUGE)
    per_op(benchmark, N)
    benchmark.extra_info["impl"] = "minimal locked Python bucket"
    benchmark(_loop(b.try_acquire))


@pytest.mark.benchmark(group="ratelimit: try_acquire")
def test_pyrate_limiter(benchmark):
    pl = pytest.importorskip("pyrate_limiter")
    lim = pl.Limiter(pl.Rate(10**9, pl.Duration.SECOND))
    per_op(benchmark, N)
    benchmark.extra_info["impl"] = "pyrate-limiter"
    benchmark(_loop(lambda: lim.try_acquire("k", blocking=False)))


@pytest.mark.benchmark(group="ratelimit: try_acquire")
def test_aiolimiter(benchmark):
    aiolimiter = pytest.importorskip("aiolimiter")
    lim = aiolimiter.AsyncLimiter(10**9, 1)
    loop = asyncio.new_event_loop()

    async def many():
        for _ in range(N):
            await lim.acquire()

    per_op(benchmark, N)
    benchmark.extra_info["impl"] = "aiolimiter (acquire, async)"
    try:
        benchmark(lambda: loop.run_until_complete(many()))
    finally:
        loop.close()


# -- accuracy -----------------------------------------------------------------------------

RATE = 200
SECONDS = 0.5 if QUICK else 3.0


def _window_stats(grants: list[float]) -> dict:
    """Most grants in any 1-second window, grants in the first second, achieved rate."""
    j = 0
    most = 0
    for i, t in enumerate(grants):
        while grants[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    t0 = grants[0]
    first = sum(1 for t in grants if t - t0 < 1.0)
    # Steady-state rate: after the first second's burst (capacity), over the rest.
    tail = [t for t in grants if t - t0 >= 1.0]
    rate = (len(tail) - 1) / (tail[-1] - tail[0]) if len(tail) > 2 else float("nan")
    return {"max_in_1s": most, "first_second": first, "steady_rate": rate,
            "rate_fraction": rate / RATE}


def _record(benchmark, grants, impl):
    stats = _window_stats(grants)
    benchmark.extra_info.update(stats)
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["ops_per_call"] = len(grants)


@pytest.mark.benchmark(group="ratelimit: accuracy at 200/s, capacity=1")
def test_accuracy_ours(benchmark, twin):
    def run():
        b = twin.TokenBucket(RATE, capacity=1)
        grants = []
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            b.acquire()
            grants.append(time.monotonic())
        return grants

    grants = benchmark.pedantic(run, rounds=1, iterations=1)
    _record(benchmark, grants, twin.tag)


@pytest.mark.benchmark(group="ratelimit: accuracy at 200/s, capacity=1")
def test_accuracy_aiolimiter(benchmark):
    aiolimiter = pytest.importorskip("aiolimiter")

    async def greedy():
        lim = aiolimiter.AsyncLimiter(RATE, 1)
        grants = []
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            await lim.acquire()
            grants.append(time.monotonic())
        return grants

    grants = benchmark.pedantic(lambda: asyncio.run(greedy()), rounds=1, iterations=1)
    _record(benchmark, grants, "aiolimiter (defaults)")


@pytest.mark.benchmark(group="ratelimit: accuracy at 200/s, capacity=1")
def test_accuracy_pyrate_gcra(benchmark):
    pl = pytest.importorskip("pyrate_limiter")

    def run():
        lim = pl.Limiter(pl.StateBucket([pl.Rate(RATE, pl.Duration.SECOND)], algorithm=pl.GCRA()))
        grants = []
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            if lim.try_acquire("k", blocking=False):
                grants.append(time.monotonic())
            else:
                time.sleep(0.0005)
        return grants

    grants = benchmark.pedantic(run, rounds=1, iterations=1)
    _record(benchmark, grants, "pyrate-limiter GCRA (defaults)")
