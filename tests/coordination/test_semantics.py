"""The shared primitives behave exactly like the local ones (the pure twins are the spec).

Redis's clock is replaced by the test's fake clock (``server_clock=``), the same one the local
twin reads, so every grant, wait and transition can be compared exactly. Time moves in whole
microseconds (Redis's resolution).
"""

from __future__ import annotations

import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipfs_accelerate_api import BreakerPolicy
from ipfs_accelerate_api.config import Secret
from ipfs_accelerate_api.core._pure.breaker import CircuitBreaker
from ipfs_accelerate_api.core._pure.ratelimit import RateLimiter, TokenBucket
from ipfs_accelerate_api.engine.keys import KeyPool, RateLimitInfo
from ipfs_accelerate_api.errors import AuthenticationError

from ..conftest import FakeClock

EXAMPLES = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

micros = st.integers(0, 3_000_000).map(lambda us: us / 1e6)
rates = st.tuples(st.sampled_from([0.5, 1.0, 3.0, 10.0, 250.0]),
                  st.one_of(st.none(), st.sampled_from([1.0, 2.5, 10.0])))


def _close(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=1e-6, abs=1e-6)


# -- the limiter ------------------------------------------------------------------------

limiter_ops = st.lists(st.one_of(
    st.tuples(st.just("advance"), micros),
    st.tuples(st.just("acquire"), st.lists(st.floats(0, 1), min_size=2, max_size=2)),
    st.tuples(st.just("refund"), st.lists(st.floats(0, 1), min_size=2, max_size=2)),
    st.tuples(st.just("sync"), st.integers(0, 1), st.floats(0, 5), micros),
    st.tuples(st.just("available")),
), max_size=40)


@EXAMPLES
@given(spec=st.tuples(rates, rates), ops=limiter_ops)
def test_shared_limiter_matches_the_local_limiter(coordinate, spec, ops) -> None:
    clock = FakeClock()
    shared = coordinate(server_clock=clock).rate_limiter(uuid.uuid4().hex, list(spec))
    local = RateLimiter([TokenBucket(r, c, clock=clock) for r, c in spec])
    caps = [b.capacity for b in local.buckets]
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "acquire":
            costs = [x * cap for x, cap in zip(op[1], caps)]
            ours, spec_wait = shared.try_acquire(costs), local.try_acquire(costs)
            assert (ours == 0.0) == (spec_wait == 0.0) and _close(ours, spec_wait), op
        elif op[0] == "refund":
            costs = [x * cap for x, cap in zip(op[1], caps)]
            shared.refund(costs)
            local.refund(costs)
        elif op[0] == "sync":
            shared.sync(op[1], op[2], op[3])
            local.buckets[op[1]].sync(op[2], op[3])
        else:
            assert all(_close(a, b) for a, b in zip(shared.available(),
                                                    [b.available() for b in local.buckets]))


def test_greedy_client_gets_at_most_rate_times_t_plus_capacity(coordinate) -> None:
    clock = FakeClock()
    limiter = coordinate(server_clock=clock).rate_limiter("greedy", [(20.0, 5.0)])
    grants = []
    while clock.now < 1010.0:
        wait = limiter.try_acquire([1])
        if wait == 0.0:
            grants.append(clock.now)
        else:
            clock.advance(round(wait, 6) + 1e-6)
    for i, t in enumerate(grants):
        for width in (0.1, 1.0, 3.0):
            inside = sum(1 for g in grants[i:] if g <= t + width)
            assert inside <= 20.0 * width + 5.0
    assert len(grants) >= 20 * 10  # and it was not starved


def test_after_sync_to_zero_nothing_until_t_then_refill_restarts(coordinate) -> None:
    """As the local bucket: nothing before T, the next token exactly at T, then the rate."""
    clock = FakeClock()
    limiter = coordinate(server_clock=clock).rate_limiter("sync", [(10.0, None)])
    limiter.sync(0, 0, 2.5)
    assert limiter.try_acquire([1]) == pytest.approx(2.5)  # 1 - 25 tokens: whole at T
    clock.advance(2.5)
    assert limiter.available() == pytest.approx([1.0], abs=1e-9)
    assert limiter.try_acquire([1]) == 0.0
    assert limiter.try_acquire([1]) == pytest.approx(0.1)


def test_all_or_nothing_across_the_buckets_of_a_request(coordinate) -> None:
    clock = FakeClock()
    limiter = coordinate(server_clock=clock).rate_limiter("both", [(1.0, 10.0), (1.0, 10.0)])
    assert limiter.try_acquire([1, 10]) == 0.0
    assert limiter.try_acquire([1, 5]) == pytest.approx(5.0)  # the second bucket is short...
    assert limiter.available() == pytest.approx([9.0, 0.0])  # ...so the first paid nothing


def test_acquire_sleeps_for_the_wait_the_script_returns(coordinate, redis_server) -> None:
    """One round trip per grant: the script reserves the tokens and returns when they are due;
    waiters queue behind each other instead of polling."""
    clock = FakeClock()
    limiter = coordinate(server_clock=clock).rate_limiter(
        "sleepy", [(4.0, 1.0)], clock=clock, sleep=clock.sleep)
    calls = lambda: coordinate().client.info("commandstats")["cmdstat_evalsha"]["calls"]  # noqa: E731
    before = calls()
    assert limiter.acquire([1]) and limiter.acquire([1]) and limiter.acquire([1])
    assert calls() - before == 3
    assert clock.slept == [pytest.approx(0.25), pytest.approx(0.25)]
    assert limiter.acquire([1], timeout=0.1) is False  # due in 0.25 s: not reserved
    assert limiter.try_acquire([1]) == pytest.approx(0.25)
    clock.advance(0.25)
    assert limiter.acquire([1], timeout=0.0) is True


# -- the key pool -----------------------------------------------------------------------

pool_ops = st.lists(st.one_of(
    st.tuples(st.just("advance"), micros),
    st.tuples(st.just("acquire"), st.floats(0, 300)),
    st.tuples(st.just("release"), st.integers(0, 7), st.booleans(), st.floats(0, 300)),
    st.tuples(st.just("refund"), st.integers(0, 7)),
    st.tuples(st.just("cooldown"), st.integers(0, 2), micros),
    st.tuples(st.just("disable"), st.integers(0, 2)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.floats(0, 3), micros),
    st.tuples(st.just("stats")),
), max_size=40)

def _local_pool(secrets, clock, **options) -> KeyPool:
    """The spec pool on the fake clock (``KeyPool`` hands its clock to cooldowns only, so its
    buckets are rebuilt here as pure twins on the same clock)."""
    pool = KeyPool(secrets, clock=clock, **options)
    for k in pool._keys:
        buckets = []
        for name in ("requests_bucket", "tokens_bucket"):
            old = getattr(k, name)
            if old is not None:
                setattr(k, name, TokenBucket(old.rate, old.capacity, clock=clock))
                buckets.append(getattr(k, name))
        k.limiter = RateLimiter(buckets) if buckets else None
    return pool


STAT_KEYS = ("requests", "succeeded", "errors", "tokens", "in_flight", "cooldowns", "disabled",
             "limiter_waits")


@EXAMPLES
@given(n_keys=st.integers(1, 3), strategy=st.sampled_from(["round_robin", "least_loaded"]),
       rpm=st.sampled_from([None, 60.0, 600.0]), tpm=st.sampled_from([None, 6000.0]),
       ops=pool_ops)
def test_shared_key_pool_matches_the_local_pool(coordinate, n_keys, strategy, rpm, tpm,
                                                ops) -> None:
    clock = FakeClock()
    endpoint = "http://" + uuid.uuid4().hex
    secrets = [Secret(f"sk-{uuid.uuid4().hex}", f"k{i}") for i in range(n_keys)]
    shared = coordinate(server_clock=clock).key_pool("openai", endpoint, secrets,
                                                     strategy=strategy, rpm=rpm, tpm=tpm, clock=clock)
    local = _local_pool(secrets, clock, strategy=strategy, rpm=rpm, tpm=tpm)
    out: list[tuple] = []  # (shared key, local key, est) of requests in flight
    by_label = lambda pool, i: pool._keys[i % n_keys]
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "acquire":
            try:
                (sk, sw), (lk, lw) = shared.acquire(op[1]), local.acquire(op[1])
            except AuthenticationError:
                with pytest.raises(AuthenticationError):
                    local.acquire(op[1])
                continue
            assert (sk and sk.label) == (lk and lk.label) and _close(sw, lw), op
            if sk is not None:
                out.append((sk, lk, op[1]))
        elif op[0] in ("release", "refund") and out:
            sk, lk, est = out.pop(op[1] % len(out))
            if op[0] == "release":
                shared.release(sk, ok=op[2], est_tokens=est, used_tokens=op[3])
                local.release(lk, ok=op[2], est_tokens=est, used_tokens=op[3])
            else:
                shared.refund(sk, est)
                local.refund(lk, est)
        elif op[0] == "cooldown":
            shared.cooldown(by_label(shared, op[1]), op[2])
            local.cooldown(by_label(local, op[1]), op[2])
        elif op[0] == "disable":
            shared.disable(by_label(shared, op[1]), "401 no")
            local.disable(by_label(local, op[1]), "401 no")
            assert shared.available() == local.available()
        elif op[0] == "sync":
            info = RateLimitInfo(op[2], op[3], op[2] * 100, op[3])
            shared.sync(by_label(shared, op[1]), info)
            local.sync(by_label(local, op[1]), info)
        elif op[0] == "stats":
            ours, spec = shared.stats(), local.stats()
            for label in spec:
                assert ours[label]["shared"] is True
                assert {k: ours[label][k] for k in STAT_KEYS} == {k: spec[label][k] for k in STAT_KEYS}
                assert _close(ours[label]["cooling_down_for"], spec[label]["cooling_down_for"])


def test_key_state_is_seen_by_every_process(coordinate) -> None:
    """Cooldowns, disabled keys, header syncs and counters written through one Coordination
    (one process) are what another one reads."""
    clock = FakeClock()
    keys = [Secret("sk-one", "one"), Secret("sk-two", "two")]
    a = coordinate(server_clock=clock).key_pool("openai", "http://e", keys, rpm=600)
    b = coordinate(server_clock=clock).key_pool("openai", "http://e", keys, rpm=600)
    k, _ = a.acquire()
    a.release(k, ok=True, used_tokens=42)
    assert b.stats()["one"]["requests"] == 1 and b.stats()["one"]["tokens"] == 42
    a.cooldown(a._keys[0], 7.0)
    assert b.stats()["one"]["cooling_down_for"] == pytest.approx(7.0)
    a.sync(a._keys[1], RateLimitInfo(remaining_requests=0, reset_requests=3.0))
    assert b.acquire() == (None, pytest.approx(3.0))  # one cooling, one spent: the next at T
    a.disable(a._keys[1], "401 bad key")
    a.disable(a._keys[0], "403 no")
    assert b.available() == 0
    with pytest.raises(AuthenticationError, match="401 bad key"):
        b.acquire()


# -- the breaker ------------------------------------------------------------------------

breaker_ops = st.lists(st.one_of(
    st.tuples(st.just("advance"), micros),
    st.sampled_from([("allow",), ("success",), ("failure",), ("retry_after",), ("state",),
                     ("stats",), ("reset",)]),
), max_size=60)


@EXAMPLES
@given(policy=st.builds(BreakerPolicy, failure_threshold=st.integers(1, 4),
                        recovery_timeout=st.sampled_from([0.0, 0.5, 2.0]),
                        half_open_max_calls=st.integers(1, 3), success_threshold=st.integers(1, 3)),
       ops=breaker_ops)
def test_shared_breaker_matches_the_local_breaker(coordinate, policy, ops) -> None:
    clock = FakeClock()
    shared = coordinate(server_clock=clock, probe_lease=1e9).breaker(
        "openai", "http://" + uuid.uuid4().hex, policy)
    local = CircuitBreaker(policy.failure_threshold, policy.recovery_timeout,
                           policy.half_open_max_calls, policy.success_threshold, clock=clock)
    heard: dict[str, list] = {"shared": [], "local": []}
    shared.add_listener(lambda old, new: heard["shared"].append((old, new)))
    local.add_listener(lambda old, new: heard["local"].append((old, new)))
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "allow":
            assert shared.allow() == local.allow()
        elif op[0] == "success":
            shared.record_success()
            local.record_success()
        elif op[0] == "failure":
            shared.record_failure()
            local.record_failure()
        elif op[0] == "retry_after":
            assert _close(shared.retry_after(), local.retry_after())
        elif op[0] == "state":
            assert shared.state == local.state
        elif op[0] == "reset":
            shared.reset()
            local.reset()
        else:
            ours = shared.stats()
            assert ours.pop("shared") is True and ours == local.stats()
    assert heard["shared"] == heard["local"]


def test_failures_in_a_row_are_counted_across_processes(coordinate) -> None:
    policy = BreakerPolicy(failure_threshold=3, recovery_timeout=30.0)
    a, b, c = (coordinate().breaker("openai", "http://row", policy) for _ in range(3))
    a.record_failure()
    b.record_failure()
    c.record_success()  # a success anywhere ends the run
    a.record_failure()
    b.record_failure()
    assert c.allow() is True
    c.record_failure()  # the third in a row, from a third process
    assert a.allow() is False and b.state.name == "OPEN"
    assert a.stats()["trips"] == 1 and b.stats()["failures"] == 5


def test_a_probe_whose_process_died_is_given_up_after_the_lease(coordinate) -> None:
    clock = FakeClock()
    policy = BreakerPolicy(failure_threshold=1, recovery_timeout=1.0)
    coord = coordinate(server_clock=clock, probe_lease=60.0)
    dead, alive = (coord.breaker("openai", "http://lease", policy) for _ in range(2))
    dead.record_failure()
    clock.advance(1.0)
    assert dead.allow() is True  # the probe... and then its process dies
    clock.advance(30.0)
    assert alive.allow() is False
    clock.advance(30.0)
    assert alive.allow() is True


# -- skewed clocks ----------------------------------------------------------------------

def test_a_process_with_its_clock_30s_ahead_agrees_on_shared_state(coordinate) -> None:
    """Redis's own clock (TIME) decides; the local clocks differ by 30 s and do not matter."""
    key = [Secret("sk-skew", "skew")]
    ahead = lambda: time.monotonic() + 30.0
    on_time = coordinate().key_pool("openai", "http://skew", key, rpm=60, clock=time.monotonic)
    skewed = coordinate().key_pool("openai", "http://skew", key, rpm=60, clock=ahead)
    k, wait = on_time.acquire()
    assert k is not None
    k2, wait = skewed.acquire()  # capacity 1 at 1/s: the skewed clock buys no refill
    assert k2 is None and 0.5 < wait <= 1.0
    skewed.cooldown(skewed._keys[0], 20.0)
    seen = on_time.stats()["skew"]["cooling_down_for"]
    assert 15.0 < seen <= 20.0
    policy = BreakerPolicy(failure_threshold=1, recovery_timeout=40.0)
    b_ahead = coordinate().breaker("openai", "http://skew", policy, clock=ahead)
    b_on_time = coordinate().breaker("openai", "http://skew", policy)
    b_ahead.record_failure()
    assert b_on_time.allow() is False and 35.0 < b_on_time.retry_after() <= 40.0
