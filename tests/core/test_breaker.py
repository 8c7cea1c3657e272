"""CircuitBreaker state machine with an injected clock."""

from __future__ import annotations

import pytest

from ipfs_accelerate_api.core import BreakerState

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def test_opens_after_consecutive_failures(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=3, recovery_timeout=10, clock=clock)
    br.record_failure()
    br.record_failure()
    br.record_success()  # resets the run
    br.record_failure()
    br.record_failure()
    assert br.state is CLOSED
    br.record_failure()
    assert br.state is OPEN
    assert br.allow() is False
    assert br.retry_after() == pytest.approx(10)
    clock.advance(4)
    assert br.retry_after() == pytest.approx(6)


def test_half_open_lets_exactly_max_probes(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=5, half_open_max_calls=2,
                             clock=clock)
    br.record_failure()
    clock.advance(5)
    assert br.state is HALF
    assert [br.allow() for _ in range(4)] == [True, True, False, False]
    assert br.retry_after() == pytest.approx(5)
    br.record_success()
    assert br.state is CLOSED
    assert br.allow()


def test_half_open_failure_reopens(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=5, clock=clock)
    br.record_failure()
    clock.advance(5)
    assert br.allow()
    br.record_failure()
    assert br.state is OPEN
    assert br.retry_after() == pytest.approx(5)  # timeout restarts
    assert br.stats()["trips"] == 2


def test_success_threshold(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=1, success_threshold=3,
                             clock=clock)
    br.record_failure()
    clock.advance(1)
    for _ in range(2):
        assert br.allow()
        assert not br.allow()  # one probe in flight at a time
        br.record_success()
        assert br.state is HALF
    assert br.allow()
    br.record_success()
    assert br.state is CLOSED


def test_listeners_see_every_transition(impl, clock) -> None:
    seen = []
    br = impl.CircuitBreaker(failure_threshold=2, recovery_timeout=3, clock=clock)
    br.add_listener(lambda old, new: seen.append((old, new)))
    br.record_failure()
    br.record_failure()
    clock.advance(3)
    br.allow()
    br.record_failure()
    clock.advance(3)
    br.allow()
    br.record_success()
    br.record_failure()
    br.record_failure()
    br.reset()
    assert seen == [
        (CLOSED, OPEN), (OPEN, HALF), (HALF, OPEN), (OPEN, HALF), (HALF, CLOSED),
        (CLOSED, OPEN), (OPEN, CLOSED),
    ]
    assert all(type(s) is BreakerState for pair in seen for s in pair)
    with pytest.raises(TypeError):
        br.add_listener(42)


def test_stats_and_reset(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=1, clock=clock)
    br.record_success()
    br.record_failure()
    br.allow()
    br.allow()
    s = br.stats()
    assert s == {"state": "OPEN", "trips": 1, "failures": 1, "successes": 1, "rejected": 2,
                 "consecutive_failures": 0}
    br.reset()
    assert br.state is CLOSED and br.allow()
    assert br.stats()["trips"] == 1  # cumulative


def test_late_outcomes_while_open_change_nothing(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=10, clock=clock)
    br.record_failure()
    br.record_success()
    br.record_failure()
    assert br.state is OPEN
    assert br.retry_after() == pytest.approx(10)
    assert br.stats()["trips"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"failure_threshold": 0}, {"recovery_timeout": -1}, {"half_open_max_calls": 0},
     {"success_threshold": 1.5}, {"recovery_timeout": float("nan")}],
)
def test_bad_arguments(impl, kwargs) -> None:
    with pytest.raises(ValueError):
        impl.CircuitBreaker(**kwargs)


def test_real_clock_default(impl) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=0)
    br.record_failure()
    assert br.state is HALF  # zero timeout: probes are allowed at once


def test_exactly_the_threshold_opens(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=2, recovery_timeout=10, clock=clock)
    assert br.failure_threshold == 2 and br.recovery_timeout == 10
    br.record_failure()
    assert br.state is CLOSED and br.stats()["consecutive_failures"] == 1
    br.record_failure()
    assert br.state is OPEN
    assert br.stats()["consecutive_failures"] == 0  # the run is over once it opened


def test_it_stays_open_until_the_recovery_timeout(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=10, clock=clock)
    br.record_failure()
    clock.advance(9.999)
    assert br.allow() is False and br.state is OPEN
    assert br.retry_after() == pytest.approx(0.001)
    clock.advance(0.001)
    assert br.retry_after() == 0.0  # half-open with a free probe slot: go now
    assert br.state is HALF


def test_closed_retry_after_is_zero(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=3, clock=clock)
    br.record_failure()
    assert br.retry_after() == 0.0 and br.allow()


def test_reset_clears_the_failure_run(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=3, recovery_timeout=10, clock=clock)
    br.record_failure()
    br.record_failure()
    br.reset()  # while closed: no transition, but the run starts over
    br.record_failure()
    br.record_failure()
    assert br.state is CLOSED
    br.record_failure()
    assert br.state is OPEN


def test_a_success_without_a_probe_frees_no_slot(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=1, half_open_max_calls=1,
                             success_threshold=3, clock=clock)
    br.record_failure()
    clock.advance(1)
    assert br.state is HALF
    br.record_success()  # a late answer from before the breaker opened: no probe was out
    assert br.allow() is True
    assert br.allow() is False  # still only one probe at a time
    br.record_success()
    assert br.state is HALF
    assert br.allow()
    br.record_success()
    assert br.state is CLOSED


def test_half_open_failure_restarts_the_clock(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=10, clock=clock)
    br.record_failure()
    clock.advance(25)
    assert br.allow()
    br.record_failure()
    clock.advance(9)
    assert br.state is OPEN and br.retry_after() == pytest.approx(1)
    s = br.stats()
    assert (s["trips"], s["failures"], s["rejected"]) == (2, 2, 0)
    clock.advance(1)
    assert br.allow() is True  # the probe that failed no longer holds its slot


def test_probe_successes_start_over_after_a_reopen(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=1, success_threshold=2,
                             clock=clock)
    br.record_failure()
    clock.advance(1)
    assert br.allow()
    br.record_success()  # one of two
    assert br.allow()
    br.record_failure()  # back to open
    clock.advance(1)
    assert br.allow()
    br.record_success()
    assert br.state is HALF  # one success since it half-opened again
    assert br.allow()
    br.record_success()
    assert br.state is CLOSED


@pytest.mark.parametrize("read", ["state", "allow", "retry_after", "stats"])
def test_the_timed_transition_is_announced_by_every_reader(impl, clock, read) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=1, clock=clock)
    seen = []
    br.add_listener(lambda old, new: seen.append((old, new)))
    br.record_failure()
    clock.advance(1)
    value = getattr(br, read)
    if callable(value):
        value()
    assert seen == [(CLOSED, OPEN), (OPEN, HALF)]


def test_defaults(impl, clock) -> None:
    br = impl.CircuitBreaker(clock=clock)
    assert (br.failure_threshold, br.recovery_timeout) == (5, 30.0)
    assert repr(br) == "<CircuitBreaker CLOSED>"
    for _ in range(4):
        br.record_failure()
    assert br.state is CLOSED
    br.record_failure()
    assert repr(br) == "<CircuitBreaker OPEN>"
    clock.advance(29.9)
    assert br.state is OPEN
    clock.advance(0.1)
    assert br.allow() and not br.allow()  # one probe
    br.record_success()  # one success closes
    assert br.state is CLOSED


@pytest.mark.parametrize("kwargs, name", [
    ({"failure_threshold": 0}, "failure_threshold"),
    ({"half_open_max_calls": 0}, "half_open_max_calls"),
    ({"success_threshold": 1.5}, "success_threshold"),
    ({"recovery_timeout": -1}, "recovery_timeout"),
])
def test_a_bad_argument_is_named(impl, kwargs, name) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be"):
        impl.CircuitBreaker(**kwargs)


def test_a_listener_may_read_the_breaker(impl, clock) -> None:
    br = impl.CircuitBreaker(failure_threshold=1, recovery_timeout=1, clock=clock)
    seen = []
    br.add_listener(lambda old, new: seen.append((new, br.state, br.stats()["state"])))
    br.add_listener(lambda old, new: seen.append("second"))
    br.record_failure()
    clock.advance(1)
    br.allow()
    assert seen == [(OPEN, OPEN, "OPEN"), "second", (HALF, HALF, "HALF_OPEN"), "second"]


def test_infinite_recovery_timeout_is_refused(impl) -> None:
    with pytest.raises(ValueError, match="recovery_timeout"):
        impl.CircuitBreaker(recovery_timeout=float("inf"))
    with pytest.raises(ValueError, match="failure_threshold"):
        impl.CircuitBreaker(failure_threshold=-2)
