"""Shared limits through Redis: what one acquire costs, and how well a limit shared by four
processes holds, against pyrate-limiter's Redis bucket and limits' Redis moving window, on
the same redis-server in the same run (skipped without ``redis-server`` or the clients)."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

import pytest

from conftest import QUICK, per_op

N = 200 if QUICK else 2000
HUGE = 1e9  # a rate that always grants: we measure the round trip, not the waiting
RATE = 200.0
PROCESSES, THREADS = 4, 2
SECONDS = 1.5 if QUICK else 4.0  # the steady rate is measured after the first second


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    pytest.importorskip("redis")
    from ipfs_accelerate_api.coordination.testing import RedisServer, find_redis_server

    if find_redis_server() is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis-bench")).start()
    yield server.url
    server.stop()


def _loop(fn):
    def run():
        for _ in range(N):
            fn()

    return run


def _bench(benchmark, impl, fn):
    per_op(benchmark, N)
    benchmark.extra_info["impl"] = impl
    benchmark(_loop(fn))


# -- one acquire --------------------------------------------------------------------------

@pytest.mark.benchmark(group="coordination: acquire cost")
def test_acquire_local_key_pool(benchmark):
    from ipfs_accelerate_api.config import Secret
    from ipfs_accelerate_api.engine.keys import KeyPool

    pool = KeyPool([Secret("sk-bench", "b")], rpm=HUGE * 60)
    _bench(benchmark, "local KeyPool.acquire (in process)", lambda: pool.acquire(0.0))


@pytest.mark.benchmark(group="coordination: acquire cost")
def test_acquire_shared_key_pool(benchmark, redis_url):
    from ipfs_accelerate_api.config import Secret
    from ipfs_accelerate_api.coordination import Coordination

    with Coordination.from_url(redis_url, namespace="b" + uuid.uuid4().hex[:8],
                               socket_timeout=1.0) as coord:
        pool = coord.key_pool("openai", "http://bench", [Secret("sk-bench", "b")], rpm=HUGE * 60)
        _bench(benchmark, "SharedKeyPool.acquire (Redis, 1 round trip)", lambda: pool.acquire(0.0))
        assert coord.healthy


@pytest.mark.benchmark(group="coordination: acquire cost")
def test_acquire_shared_limiter(benchmark, redis_url):
    from ipfs_accelerate_api.coordination import Coordination

    with Coordination.from_url(redis_url, namespace="b" + uuid.uuid4().hex[:8],
                               socket_timeout=1.0) as coord:
        lim = coord.rate_limiter("bench", [(HUGE, None)])
        _bench(benchmark, "SharedRateLimiter.try_acquire (Redis, 1 round trip)",
               lambda: lim.try_acquire([1]))
        assert coord.healthy


@pytest.mark.benchmark(group="coordination: acquire cost")
def test_redis_ping(benchmark, redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    _bench(benchmark, "redis-py PING (the round trip alone)", client.ping)
    client.close()


@pytest.mark.benchmark(group="coordination: acquire cost")
def test_acquire_pyrate_redis_bucket(benchmark, redis_url):
    pl = pytest.importorskip("pyrate_limiter")
    import redis

    client = redis.Redis.from_url(redis_url)
    bucket = pl.RedisBucket.init([pl.Rate(int(HUGE), pl.Duration.SECOND)], client,
                                 "pyrate-" + uuid.uuid4().hex)
    lim = pl.Limiter(bucket)
    _bench(benchmark, "pyrate-limiter RedisBucket", lambda: lim.try_acquire("k", blocking=False))
    client.close()


@pytest.mark.benchmark(group="coordination: acquire cost")
def test_acquire_limits_moving_window(benchmark, redis_url):
    limits = pytest.importorskip("limits")
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    lim = MovingWindowRateLimiter(RedisStorage(redis_url))
    item = limits.RateLimitItemPerSecond(int(HUGE))
    key = "limits-" + uuid.uuid4().hex
    _bench(benchmark, "limits RedisStorage moving window", lambda: lim.hit(item, key))


# -- four processes, one limit ------------------------------------------------------------

def _make_acquire(kind: str, url: str, key: str):
    """A blocking ``acquire(deadline) -> bool`` for one library, each waiting its own way."""
    if kind.startswith("ours"):
        from ipfs_accelerate_api.coordination import Coordination

        capacity = float(kind.partition("-")[2])
        lim = Coordination.from_url(url, namespace="bench", socket_timeout=1.0).rate_limiter(
            key, [(RATE, capacity)])
        return lambda deadline: lim.acquire([1], timeout=max(0.0, deadline - time.monotonic()))
    if kind == "pyrate":
        import pyrate_limiter as pl
        import redis

        bucket = pl.RedisBucket.init([pl.Rate(int(RATE), pl.Duration.SECOND)],
                                     redis.Redis.from_url(url), key)
        lim = pl.Limiter(bucket)
        return lambda deadline: lim.try_acquire(
            "k", blocking=True, timeout=max(0.0, deadline - time.monotonic()))
    import limits
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    mw = MovingWindowRateLimiter(RedisStorage(url))
    item = limits.RateLimitItemPerSecond(int(RATE))

    def acquire(deadline: float) -> bool:
        while time.monotonic() < deadline:
            if mw.hit(item, key):
                return True
            reset = mw.get_window_stats(item, key).reset_time  # when the oldest hit leaves
            time.sleep(min(max(0.0005, reset - time.time()), max(0.0, deadline - time.monotonic())))
        return False

    return acquire


def _count_round_trips() -> list[int]:
    """Count what this process sends to Redis (one command or one pipeline: one round trip)."""
    from redis.connection import Connection

    sent = [0]
    original = Connection.send_packed_command

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)

    Connection.send_packed_command = counting
    return sent


def _greedy_process(kind: str, url: str, key: str, go, out) -> None:
    acquire = _make_acquire(kind, url, key)
    sent = _count_round_trips()
    grants: list[float] = []
    lock = threading.Lock()
    out.put("ready")
    go.wait(60)
    deadline = time.monotonic() + SECONDS
    before = sent[0]

    def body() -> None:
        while acquire(deadline):  # False: nothing more before the deadline
            with lock:
                grants.append(time.time())

    threads = [threading.Thread(target=body) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 30)
    out.put((grants, sent[0] - before))


def _shared_run(kind: str, url: str) -> dict:
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    key = f"{kind}-{uuid.uuid4().hex}"
    procs = [ctx.Process(target=_greedy_process, args=(kind, url, key, go, out), daemon=True)
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            assert out.get(timeout=120) == "ready"
        go.set()
        reports = [out.get(timeout=SECONDS + 60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    grants = sorted(t for got, _ in reports for t in got)
    return _shared_stats(grants, sum(n for _, n in reports))


def _shared_stats(grants: list[float], round_trips: int) -> dict:
    """Most grants in any 1 s, the steady rate after the first second, round trips per grant."""
    j = most = 0
    for i, t in enumerate(grants):
        while grants[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    t0 = grants[0]
    steady = sum(1 for t in grants if 1.0 <= t - t0 < SECONDS) / (SECONDS - 1.0)
    return {"granted": len(grants), "max_in_1s": most, "steady_rate": steady,
            "rate_fraction": steady / RATE, "round_trips_per_grant": round_trips / max(1, len(grants))}


def _record_shared(benchmark, kind: str, impl: str, url: str, allowed_in_1s: float) -> None:
    stats = benchmark.pedantic(lambda: _shared_run(kind, url), rounds=1, iterations=1)
    benchmark.extra_info.update(stats)
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["allowed_in_1s"] = allowed_in_1s
    benchmark.extra_info["seconds_per_op"] = SECONDS / max(1, stats["granted"])


GROUP = f"coordination: {PROCESSES} processes x {THREADS} threads sharing 200/s"


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("capacity", [1, 200])
def test_shared_ours(benchmark, redis_url, capacity):
    _record_shared(benchmark, f"ours-{capacity}",
                   f"ipfs_accelerate_api SharedRateLimiter, capacity {capacity}", redis_url,
                   RATE + capacity)


@pytest.mark.benchmark(group=GROUP)
def test_shared_pyrate(benchmark, redis_url):
    pytest.importorskip("pyrate_limiter")
    _record_shared(benchmark, "pyrate", "pyrate-limiter RedisBucket (blocking)", redis_url, RATE)


@pytest.mark.benchmark(group=GROUP)
def test_shared_limits(benchmark, redis_url):
    pytest.importorskip("limits")
    _record_shared(benchmark, "limits", "limits moving window (sleeps to reset_time)", redis_url,
                   RATE)
