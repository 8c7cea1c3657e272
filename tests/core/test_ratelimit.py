"""TokenBucket and RateLimiter behaviour with an injected clock (no real waiting)."""

from __future__ import annotations

import math

import pytest


def test_starts_full_and_reports_wait(impl, clock) -> None:
    b = impl.TokenBucket(10, capacity=5, clock=clock)
    for _ in range(5):
        assert b.try_acquire() == 0.0
    wait = b.try_acquire()
    assert wait == pytest.approx(0.1)
    assert b.available() == pytest.approx(0.0)  # a refusal takes nothing
    clock.advance(0.1)
    assert b.try_acquire() == 0.0


def test_default_capacity_is_one_second_at_least_one(impl, clock) -> None:
    assert impl.TokenBucket(50, clock=clock).capacity == 50
    assert impl.TokenBucket(0.5, clock=clock).capacity == 1


def test_cost_over_capacity_is_value_error(impl, clock) -> None:
    b = impl.TokenBucket(10, capacity=4, clock=clock)
    with pytest.raises(ValueError, match="capacity"):
        b.try_acquire(5)
    with pytest.raises(ValueError):
        b.try_acquire(-1)
    with pytest.raises(ValueError):
        b.acquire(5)


@pytest.mark.parametrize("rate", [0, -1, math.inf, math.nan])
def test_bad_rate(impl, rate) -> None:
    with pytest.raises(ValueError, match="rate"):
        impl.TokenBucket(rate)


def test_refill_caps_at_capacity(impl, clock) -> None:
    b = impl.TokenBucket(100, capacity=3, clock=clock)
    b.try_acquire(3)
    clock.advance(60)
    assert b.available() == 3


def test_window_bound_with_greedy_caller(impl, clock) -> None:
    """Over any window T, grants <= rate*T + capacity; with capacity=1 the pacing is even."""
    rate = 200.0
    b = impl.TokenBucket(rate, capacity=1, clock=clock, sleep=clock.sleep)
    grants = []
    start = clock()
    while clock() - start < 5.0:
        assert b.acquire()
        grants.append(clock())
    # Greedy caller gets the full rate (minus the one token it started with).
    assert len(grants) >= 0.99 * rate * 5
    j = 0
    for i, t in enumerate(grants):
        while grants[j] < t - 1.0 + 1e-12:
            j += 1
        assert i - j + 1 <= rate * 1.0 + 1 + 1e-9
    gaps = [b2 - a for a, b2 in zip(grants[1:], grants[2:])]
    assert max(gaps) == pytest.approx(1 / rate)
    assert min(gaps) == pytest.approx(1 / rate)


def test_acquire_timeout_takes_nothing(impl, clock) -> None:
    b = impl.TokenBucket(1, capacity=1, clock=clock, sleep=clock.sleep)
    assert b.acquire()
    assert b.acquire(timeout=0.5) is False
    assert clock.slept == []  # it knew it could not make it and did not wait
    assert b.acquire(timeout=1.0) is True
    assert clock.slept == [pytest.approx(1.0)]


def test_refund(impl, clock) -> None:
    b = impl.TokenBucket(1, capacity=10, clock=clock)
    b.try_acquire(8)
    b.refund(5)
    assert b.available() == pytest.approx(7)
    b.refund(100)
    assert b.available() == 10
    with pytest.raises(ValueError):
        b.refund(-1)


def test_charge_takes_even_below_zero(impl, clock) -> None:
    b = impl.TokenBucket(10, capacity=10, clock=clock)
    assert b.try_acquire(8) == 0.0
    b.charge(5)  # 2 were left: 3 in debt
    assert b.available() == pytest.approx(-3)
    assert b.try_acquire(1) == pytest.approx(0.4)
    b.charge(25)  # more than the capacity is still taken
    assert b.available() == pytest.approx(-28)
    clock.advance(2.8)
    assert b.available() == pytest.approx(0)
    b.charge(0)
    assert b.available() == pytest.approx(0)


@pytest.mark.parametrize("n", [-1, math.inf, math.nan])
def test_charge_must_be_finite_and_not_negative(impl, clock, n) -> None:
    b = impl.TokenBucket(10, clock=clock)
    with pytest.raises(ValueError, match="charge"):
        b.charge(n)
    assert b.available() == 10


def test_set_rate(impl, clock) -> None:
    b = impl.TokenBucket(10, clock=clock)
    b.try_acquire(10)
    clock.advance(0.5)  # +5 at the old rate
    b.set_rate(2)
    assert b.rate == 2 and b.capacity == 2
    assert b.available() == 2  # capped by the new capacity
    b.try_acquire(2)
    clock.advance(0.5)
    assert b.available() == pytest.approx(1)


def test_sync_lowers_never_raises(impl, clock) -> None:
    b = impl.TokenBucket(10, capacity=10, clock=clock)
    b.sync(remaining=3, reset_after=1)
    assert b.available() == 3
    b.sync(remaining=8, reset_after=1)
    assert b.available() == 3


def test_sync_exhausted_blocks_until_reset(impl, clock) -> None:
    b = impl.TokenBucket(1, capacity=1, clock=clock)
    b.sync(remaining=0, reset_after=6 * 60)
    assert b.try_acquire() == pytest.approx(360)  # the next token comes at the reset, not later
    clock.advance(359.9)
    assert b.try_acquire() == pytest.approx(0.1)
    clock.advance(0.1)
    assert b.try_acquire() == 0.0


def test_sync_exhausted_with_a_short_reset_waits_exactly_the_reset(impl, clock) -> None:
    b = impl.TokenBucket(10, capacity=10, clock=clock)  # 1/rate = 0.1 s, longer than the reset
    b.sync(remaining=0, reset_after=0.05)
    assert b.try_acquire() == pytest.approx(0.05)
    clock.advance(0.05)
    assert b.try_acquire() == 0.0
    assert b.try_acquire() == pytest.approx(0.1)  # then the ordinary rate


def test_limiter_all_or_nothing(impl, clock) -> None:
    rpm = impl.TokenBucket(10, capacity=10, clock=clock)
    tpm = impl.TokenBucket(100, capacity=100, clock=clock)
    lim = impl.RateLimiter([rpm, tpm])
    assert lim.try_acquire([1, 60]) == 0.0
    wait = lim.try_acquire([1, 60])  # tokens short: 40 left, need 60 -> 0.2 s
    assert wait == pytest.approx(0.2)
    assert rpm.available() == 9  # nothing was taken from the request bucket
    assert tpm.available() == 40
    clock.advance(0.2)
    assert lim.try_acquire([1, 60]) == 0.0
    assert rpm.available() == pytest.approx(min(10, 9 + 0.2 * 10) - 1)


def test_limiter_returns_longest_wait(impl, clock) -> None:
    a = impl.TokenBucket(1, capacity=1, clock=clock)
    b = impl.TokenBucket(10, capacity=10, clock=clock)
    lim = impl.RateLimiter([a, b])
    lim.try_acquire([1, 10])
    assert lim.try_acquire([1, 5]) == pytest.approx(1.0)


def test_limiter_acquire_and_validation(impl, clock) -> None:
    a = impl.TokenBucket(2, capacity=2, clock=clock, sleep=clock.sleep)
    b = impl.TokenBucket(100, capacity=100, clock=clock)
    lim = impl.RateLimiter([a, b])
    for _ in range(6):
        assert lim.acquire([1, 10])
    assert sum(clock.slept) == pytest.approx(2.0)
    assert lim.acquire([2, 1], timeout=0.1) is False
    with pytest.raises(ValueError, match="costs"):
        lim.try_acquire([1])
    with pytest.raises(ValueError, match="capacity"):
        lim.try_acquire([3, 1])
    with pytest.raises(ValueError):
        impl.RateLimiter([])
    with pytest.raises(TypeError):
        impl.RateLimiter([object()])
    lim.refund([1, 50])
    assert b.available() <= 100


def test_limiter_many_buckets(impl, clock) -> None:
    buckets = [impl.TokenBucket(1, capacity=20, clock=clock) for _ in range(12)]
    lim = impl.RateLimiter(buckets)
    assert lim.try_acquire(list(range(12))) == 0.0
    assert [b.available() for b in buckets] == [20 - i for i in range(12)]


def test_real_clock_default(impl) -> None:
    b = impl.TokenBucket(1, capacity=1)
    assert b.try_acquire() == 0.0
    assert 0 < b.try_acquire() <= 1.0
    assert b.acquire(timeout=0.5) is False  # knows at once that it cannot make it


@pytest.mark.parametrize("capacity", [0, -1, math.inf, math.nan])
def test_bad_capacity(impl, capacity) -> None:
    with pytest.raises(ValueError, match="capacity"):
        impl.TokenBucket(1, capacity=capacity)


def test_a_cost_may_be_the_whole_capacity_but_not_nan(impl, clock) -> None:
    b = impl.TokenBucket(1, capacity=2.5, clock=clock)
    assert b.try_acquire(2.5) == 0.0
    assert b.try_acquire(0) == 0.0  # nothing costs nothing, even when empty
    with pytest.raises(ValueError):
        b.try_acquire(math.nan)
    assert b.rate == 1 and b.capacity == 2.5


def test_refill_is_counted_once(impl, clock) -> None:
    b = impl.TokenBucket(10, capacity=10, clock=clock)
    b.try_acquire(10)
    clock.advance(0.3)
    assert b.available() == pytest.approx(3)
    assert b.available() == pytest.approx(3)  # reading twice adds nothing
    clock.advance(-0.2)  # a clock that steps back neither adds nor takes
    assert b.available() == pytest.approx(3)
    clock.advance(0.2)
    assert b.available() == pytest.approx(3)


def test_a_shortfall_below_epsilon_is_no_shortfall(impl, clock) -> None:
    b = impl.TokenBucket(6, capacity=1, clock=clock)
    b.try_acquire(1)
    clock.advance(1 / 6)  # from t=1000 this refills 1 - 2e-13 tokens: float rounding
    assert b.available() < 1
    assert b.try_acquire(1) == 0.0
    clock.advance(0.1)
    assert b.try_acquire(1) == pytest.approx(1 / 6 - 0.1)  # a real shortfall still waits


def test_sync_clamps_negative_values(impl, clock) -> None:
    b = impl.TokenBucket(10, capacity=10, clock=clock)
    b.sync(remaining=-5, reset_after=1)  # read as 0 remaining: one token at t+1
    assert b.available() == pytest.approx(-9)
    clock.advance(1)
    assert b.available() == pytest.approx(1)
    b.sync(remaining=0, reset_after=-5)  # read as a reset now: one token now, never raised
    assert b.available() == pytest.approx(1)
    clock.advance(1)  # full again
    b.sync(remaining=0, reset_after=-5)
    assert b.available() == pytest.approx(1)


def test_limiter_takes_its_clock_and_sleep(impl, clock) -> None:
    a = impl.TokenBucket(1, capacity=1, clock=clock)
    lim = impl.RateLimiter([a], clock=clock, sleep=clock.sleep)
    assert lim.buckets == (a,)
    assert lim.acquire([1]) and lim.acquire([1])
    assert clock.slept == [pytest.approx(1.0)]
    assert lim.acquire([1], timeout=0.5) is False
    with pytest.raises(ValueError, match="timeout"):
        lim.acquire([1], timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        a.acquire(1, timeout=-1)


def test_limiter_refund(impl, clock) -> None:
    a = impl.TokenBucket(1, capacity=5, clock=clock)
    b = impl.TokenBucket(1, capacity=50, clock=clock)
    lim = impl.RateLimiter([a, b])
    assert lim.try_acquire([3, 40]) == 0.0
    lim.refund([0, 15])  # 0: nothing for that bucket
    assert (a.available(), b.available()) == (pytest.approx(2), pytest.approx(25))
    lim.refund([1, 0])
    assert (a.available(), b.available()) == (pytest.approx(3), pytest.approx(25))
    with pytest.raises(ValueError, match="costs"):
        lim.refund([1])


def test_the_real_sleep_never_grants_early(impl) -> None:
    """With the default (real) sleep, which wakes early on purpose and spins the rest, a
    grant still never comes before its time (a lower bound only: it holds however loaded
    the machine is). 2000/s waits less than the spin margin, 250/s more."""
    import time

    for rate in (2000, 250):
        b = impl.TokenBucket(rate, capacity=1)
        start = time.monotonic()
        assert b.try_acquire(1) == 0.0  # empty from here on: the next token is 1/rate away
        assert b.acquire(1)
        assert time.monotonic() - start >= 1 / rate - 1e-6


def test_numbers_of_any_real_type(impl, clock) -> None:
    """Rates, costs, refunds and server counts may be ints, Decimals, numpy scalars...; the
    bucket works in floats."""
    from decimal import Decimal

    b = impl.TokenBucket(Decimal(10), capacity=10, clock=clock)
    assert type(b.rate) is float and type(b.capacity) is float
    assert b.try_acquire(Decimal(4)) == 0.0
    b.refund(Decimal(1))
    b.sync(Decimal(5), Decimal(1))
    b.charge(Decimal(1))
    clock.advance(0.1)
    assert b.available() == pytest.approx(5)


def test_timeout_zero_means_do_not_wait(impl, clock) -> None:
    b = impl.TokenBucket(1, capacity=1, clock=clock, sleep=clock.sleep)
    assert b.acquire(1, timeout=0) is True
    assert b.acquire(1, timeout=0) is False
    lim = impl.RateLimiter([impl.TokenBucket(1, capacity=1, clock=clock, sleep=clock.sleep)])
    assert lim.acquire([1], timeout=0) is True
    assert lim.acquire([1], timeout=0) is False
    assert clock.slept == []


def test_limiter_defaults_to_its_first_buckets_clock_and_sleep(impl, clock) -> None:
    lim = impl.RateLimiter(iter([impl.TokenBucket(1, capacity=1, clock=clock, sleep=clock.sleep)]))
    assert isinstance(lim.buckets, tuple) and len(lim.buckets) == 1
    assert lim.acquire([1])
    assert lim.acquire([1], timeout=1.0)  # the deadline is read on the bucket's clock
    assert clock.slept == [pytest.approx(1.0)]


def test_limiter_costs_may_be_any_iterable(impl, clock) -> None:
    a = impl.TokenBucket(1, capacity=5, clock=clock)
    b = impl.TokenBucket(1, capacity=5, clock=clock)
    lim = impl.RateLimiter([a, b])
    assert lim.try_acquire(iter([1, 2])) == 0.0
    assert lim.try_acquire(c for c in (1, 1)) == 0.0
    lim.refund(iter([2, 3]))
    assert (a.available(), b.available()) == (pytest.approx(5), pytest.approx(5))


def test_reprs(impl, clock) -> None:
    b = impl.TokenBucket(10, capacity=2.5, clock=clock)
    assert repr(b) == "<TokenBucket rate=10/s capacity=2.5>"
    assert repr(impl.RateLimiter([b])) == "<RateLimiter [<TokenBucket rate=10/s capacity=2.5>]>"
