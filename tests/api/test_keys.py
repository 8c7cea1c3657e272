"""The key pool: which key, per-key limits, the server's headers, token reconciliation,
cooldowns and per-key stats.

Driven through :class:`KeyPool`'s public methods and through the :class:`Engine` with plain
operations, both on an injected clock (nothing waits for real); the header sync also end to
end against the emulator.
"""

from __future__ import annotations

import pytest

from ipfs_accelerate_api import RetryPolicy
from ipfs_accelerate_api.config import Secret
from ipfs_accelerate_api.core import CircuitBreaker
from ipfs_accelerate_api.engine import OpResult
from ipfs_accelerate_api.engine.keys import KeyPool, RateLimitInfo
from ipfs_accelerate_api.errors import (
    APITimeoutError,
    AuthenticationError,
    CircuitOpenError,
    RateLimitError,
    ServerError,
)

NO_RETRY = RetryPolicy(max_retries=0)


def secrets(n: int) -> list[Secret]:
    return [Secret(f"sk-{i}", f"k{i}") for i in range(1, n + 1)]


def take(pool: KeyPool, est: float = 0.0):
    key, wait = pool.acquire(est)
    assert key is not None, f"no key, wait {wait}"
    assert wait == 0.0
    return key


def turns(pool: KeyPool, n: int) -> list[str]:
    """Labels of ``n`` requests in a row, each finished before the next."""
    out = []
    for _ in range(n):
        k = take(pool)
        out.append(k.label)
        pool.release(k, ok=True)
    return out


@pytest.fixture
def on_clock(engines, clock):
    """Engines on the test's fake clock, without retries unless told."""
    return lambda **options: engines(**{"clock": clock, "retry": NO_RETRY, **options})


def rate_limited(label: str, headers: dict[str, str]):
    """An operation: the first request on key ``label`` gets a 429 with ``headers``."""
    seen: list[str] = []

    def op(attempt):
        seen.append(attempt.key.label)
        if attempt.key.label == label and seen.count(label) == 1:
            raise RateLimitError("slow down", status=429, headers=headers)
        return "ok"

    return op, seen


# -- which key ----------------------------------------------------------------------------

def test_round_robin_order(clock) -> None:
    pool = KeyPool(secrets(3), clock=clock)
    assert turns(pool, 7) == ["k1", "k2", "k3", "k1", "k2", "k3", "k1"]


def test_round_robin_order_on_the_wire(make, emu) -> None:
    ai = make(api_keys=["k1", "k2", "k3"])
    for _ in range(5):
        ai.list_models()
    sent = [h["authorization"] for h in emu.record("openai").auth_headers_seen]
    assert sent == ["Bearer k1", "Bearer k2", "Bearer k3", "Bearer k1", "Bearer k2"]


def test_round_robin_gives_a_busy_key_its_turn(clock) -> None:
    pool = KeyPool(secrets(3), clock=clock)
    busy = take(pool)
    assert busy.label == "k1"
    assert turns(pool, 3) == ["k2", "k3", "k1"]  # k1 still in flight, used anyway


@pytest.mark.parametrize("strategy, expected", [("round_robin", "k1"), ("least_loaded", "k2")])
def test_least_loaded_picks_the_idle_key(clock, strategy, expected) -> None:
    pool = KeyPool(secrets(2), strategy=strategy, clock=clock)
    held = take(pool)
    assert held.label == "k1"
    pool.release(take(pool), ok=True)  # k2, done: k1 is next in turn but busy
    assert take(pool).label == expected


def test_least_loaded_breaks_ties_in_turn(clock) -> None:
    pool = KeyPool(secrets(3), strategy="least_loaded", clock=clock)
    assert turns(pool, 4) == ["k1", "k2", "k3", "k1"]


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="round_robin"):
        KeyPool(secrets(2), strategy="random")


def test_no_keys_is_one_anonymous_slot(clock) -> None:
    pool = KeyPool([], clock=clock)
    key = take(pool)
    assert key.secret is None and key.label == "anonymous"
    assert len(pool) == 1 and list(pool.stats()) == ["anonymous"]


# -- per-key limits -----------------------------------------------------------------------

def test_several_keys_each_with_an_rpm(clock) -> None:
    pool = KeyPool(secrets(2), rpm=60, clock=clock)  # one request a second per key
    assert [take(pool).label for _ in range(2)] == ["k1", "k2"]
    assert pool.acquire() == (None, pytest.approx(1.0))
    clock.advance(0.25)
    assert pool.acquire() == (None, pytest.approx(0.75))
    clock.advance(0.75)
    assert [take(pool).label for _ in range(2)] == ["k1", "k2"]
    assert {k: s["limiter_waits"] for k, s in pool.stats().items()} == {"k1": 2, "k2": 2}


def test_several_keys_each_with_a_tpm_report_the_shortest_wait(clock) -> None:
    pool = KeyPool(secrets(2), tpm=600, clock=clock)  # 10 tokens a second, 10 at most
    assert take(pool, 8).label == "k1"  # k1 keeps 2
    assert take(pool, 4).label == "k2"  # k2 keeps 6
    assert pool.acquire(8) == (None, pytest.approx(0.2))  # k2 is the nearer (k1: 0.6 s)
    clock.advance(0.2)
    assert take(pool, 8).label == "k2"  # k1 has 4, k2 none
    assert pool.acquire(50) == (None, pytest.approx(0.6))  # a cost above the burst: clipped


def test_a_limited_key_is_passed_over_for_one_with_budget(clock) -> None:
    pool = KeyPool(secrets(2), tpm=600, clock=clock)
    assert take(pool, 10).label == "k1"  # k1 spent
    assert take(pool, 1).label == "k2"
    assert take(pool, 5).label == "k2"  # k1's turn, but it has no budget
    key, wait = pool.acquire()  # no estimate: costs no tokens, takes its turn
    assert (key.label, wait) == ("k1", 0.0)
    assert pool.stats()["k1"]["limiter_waits"] == 1


@pytest.mark.parametrize("rpm, burst, wait", [(600, 10, 0.1), (30, 1, 2.0)])
def test_the_request_burst_is_one_seconds_worth(clock, rpm, burst, wait) -> None:
    pool = KeyPool(secrets(1), rpm=rpm, clock=clock)
    for _ in range(burst):
        take(pool)
    assert pool.acquire() == (None, pytest.approx(wait))


@pytest.mark.parametrize("tpm, burst, wait", [(600, 10, 0.1), (30, 1, 2.0)])
def test_the_token_burst_is_one_seconds_worth(clock, tpm, burst, wait) -> None:
    pool = KeyPool(secrets(1), tpm=tpm, clock=clock)
    take(pool, 1000)  # an estimate above the burst takes the whole burst
    assert pool.acquire(1) == (None, pytest.approx(wait))
    clock.advance(wait)
    take(pool, 1)
    assert pool.acquire(burst) == (None, pytest.approx(burst * wait))
    clock.advance(60)  # a long pause refills the burst, no more
    take(pool, burst)
    assert pool.acquire(1) == (None, pytest.approx(wait))


def test_a_key_is_usable_from_the_start_of_any_clock() -> None:
    from ..conftest import FakeClock

    pool = KeyPool(secrets(2), clock=FakeClock(start=0.0))
    assert turns(pool, 2) == ["k1", "k2"]


def test_a_cooling_key_hands_its_turn_to_the_next(clock) -> None:
    pool = KeyPool(secrets(3), clock=clock)
    assert turns(pool, 3) == ["k1", "k2", "k3"]
    k1 = take(pool)
    assert k1.label == "k1"
    pool.release(k1, ok=True)
    pool.cooldown(k1, 10)
    assert turns(pool, 3) == ["k2", "k3", "k2"]


def test_rpm_and_tpm_together_wait_for_the_longer(clock) -> None:
    pool = KeyPool(secrets(1), rpm=120, tpm=600, clock=clock)  # 2 req/s and 10 tokens/s
    take(pool, 5)
    take(pool, 5)
    assert pool.acquire(1) == (None, pytest.approx(0.5))  # tokens would be 0.1 s
    clock.advance(0.5)
    take(pool, 1)
    assert pool.stats()["k1"]["limiter_waits"] == 1


def test_limits_follow_the_injected_clock(clock) -> None:
    pool = KeyPool(secrets(1), rpm=60, tpm=600, clock=clock)
    take(pool, 10)
    assert pool.acquire(10) == (None, pytest.approx(1.0))
    clock.advance(1.0)
    take(pool, 10)


# -- the server's rate-limit headers ------------------------------------------------------

def test_release_reconciles_a_direct_caller(clock) -> None:
    pool = KeyPool(secrets(1), tpm=600, clock=clock)
    k = take(pool)
    pool.release(k, ok=True, used_tokens=4)  # no estimate given: all 4 are charged now
    assert pool.acquire(10) == (None, pytest.approx(0.4))
    k = take(pool, 3)
    pool.release(k, ok=False)  # no usage known: the estimate stays charged
    assert pool.acquire(10) == (None, pytest.approx(0.7))
    assert pool.stats()["k1"]["tokens"] == 4


def test_sync_lowers_the_request_budget_to_the_servers(clock) -> None:
    pool = KeyPool(secrets(1), rpm=600, clock=clock)  # 10 a second, burst 10
    k = take(pool)
    pool.release(k, ok=True)
    pool.sync(k, RateLimitInfo(remaining_requests=2, reset_requests=30.0))
    take(pool)
    take(pool)
    assert pool.acquire() == (None, pytest.approx(0.1))


def test_sync_lowers_the_token_budget_to_the_servers(clock) -> None:
    pool = KeyPool(secrets(1), tpm=6000, clock=clock)  # 100 tokens a second, burst 100
    k = take(pool, 10)
    pool.release(k, ok=True, est_tokens=10, used_tokens=10)
    pool.sync(k, RateLimitInfo(remaining_tokens=30, reset_tokens=5.0))
    assert pool.acquire(40) == (None, pytest.approx(0.1))
    pool.sync(k, RateLimitInfo(remaining_tokens=0, reset_tokens=3.0))
    assert pool.acquire(1) == (None, pytest.approx(3.0))  # nothing until the window resets


def test_sync_without_a_reset_time_or_a_count(clock) -> None:
    pool = KeyPool(secrets(1), rpm=600, tpm=6000, clock=clock)
    k = take(pool, 10)
    pool.sync(k, RateLimitInfo(remaining_requests=0, remaining_tokens=0))
    assert pool.acquire(1) == (None, pytest.approx(0.1))  # empty, not in debt
    clock.advance(0.1)
    pool.sync(k, RateLimitInfo())  # the headers said nothing: nothing changes
    take(pool, 1)


def test_sync_never_raises_the_budget(clock) -> None:
    pool = KeyPool(secrets(1), rpm=60, clock=clock)
    k = take(pool)
    pool.sync(k, RateLimitInfo(remaining_requests=500, reset_requests=1.0))
    assert pool.acquire() == (None, pytest.approx(1.0))


def test_sync_on_a_key_without_limits_is_harmless(clock) -> None:
    pool = KeyPool(secrets(1), clock=clock)
    k = take(pool)
    pool.sync(k, RateLimitInfo(0, 60.0, 0, 60.0))
    take(pool)


@pytest.mark.parametrize("window", ["requests", "tokens"])
def test_client_follows_a_server_that_allows_less(make, emu, window) -> None:
    """The emulator allows 2 per minute while the client was told far more: after the
    server's headers say the window is spent, the client waits instead of earning a 429."""
    setattr(emu.config("openai"), "rpm" if window == "requests" else "tpm", 2)
    told = {"rpm": 600} if window == "requests" else {"tpm": 60_000}
    ai = make(retry=RetryPolicy(max_retries=0, deadline=5), **told)
    ai.list_models()
    ai.list_models()
    with pytest.raises(APITimeoutError, match="rate budget"):
        ai.list_models()
    seen = emu.stats("openai")
    assert seen["requests"] == 2 and seen["sent_429"] == 0
    assert ai.stats()["keys"]["openai-key-1"]["limiter_waits"] == 1


# -- token estimates reconciled with the usage --------------------------------------------

@pytest.mark.parametrize("est, used, wait", [
    (8, 2, 0.2),    # over-estimate: 6 given back, 8 left
    (2, 8, 0.8),    # under-estimate: 6 more taken, 2 left
    (2, 14, 1.4),   # used more than was left: 4 in debt
    (5, 5, 0.5),
    (0, 0, 0.0),
])
def test_bucket_ends_where_the_real_usage_puts_it(on_clock, est, used, wait) -> None:
    e = on_clock(keys=secrets(1), tpm=600)  # 10 tokens a second, burst 10
    assert e.call(lambda a: OpResult("x", prompt_tokens=used - used // 2,
                                     completion_tokens=used // 2), est_tokens=est) == "x"
    assert e.keys.acquire(10)[1] == pytest.approx(wait)
    assert e.stats()["keys"]["k1"]["tokens"] == used


def test_a_plain_value_uses_its_estimate(on_clock) -> None:
    e = on_clock(keys=secrets(1), tpm=600)
    e.call(lambda a: "plain", est_tokens=7)
    assert e.keys.acquire(10)[1] == pytest.approx(0.7)
    assert e.stats()["keys"]["k1"]["tokens"] == 7


def test_a_failed_request_gives_its_estimate_back(on_clock) -> None:
    e = on_clock(keys=secrets(1), tpm=600)

    def fail(attempt):
        raise ServerError("down", status=503)

    with pytest.raises(ServerError):
        e.call(fail, est_tokens=9)
    assert e.keys.acquire(10)[1] == 0.0
    assert e.stats()["keys"]["k1"]["tokens"] == 0


def test_an_unsent_request_gives_its_budget_back(on_clock, clock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60, clock=clock)
    e = on_clock(keys=secrets(1), rpm=60, tpm=600, circuit=breaker)

    def fail(attempt):
        raise ServerError("down", status=503)

    with pytest.raises(ServerError):
        e.call(fail, est_tokens=4)
    clock.advance(1.0)
    with pytest.raises(CircuitOpenError):
        e.call(fail, est_tokens=4)
    s = e.stats()["keys"]["k1"]
    assert (s["requests"], s["in_flight"], s["errors"]) == (1, 0, 1)
    assert e.keys.acquire(10)[1] == 0.0  # both the request and its tokens came back


# -- cooldown -----------------------------------------------------------------------------

def test_a_cooling_key_is_skipped_by_other_requests_until_it_ends(on_clock, clock) -> None:
    e = on_clock(keys=secrets(2))
    op, seen = rate_limited("k1", {"retry-after": "10"})
    with pytest.raises(RateLimitError):
        e.call(op)
    assert e.stats()["keys"]["k1"]["cooling_down_for"] == pytest.approx(10)
    for _ in range(3):
        e.call(op)
    clock.advance(9.5)
    e.call(op)
    assert e.stats()["keys"]["k1"]["cooling_down_for"] == pytest.approx(0.5)
    clock.advance(0.5)  # the cooldown is over exactly now
    e.call(op)
    e.call(op)
    assert seen == ["k1", "k2", "k2", "k2", "k2", "k1", "k2"]
    k1 = e.stats()["keys"]["k1"]
    assert (k1["cooldowns"], k1["cooling_down_for"]) == (1, 0.0)


def test_a_single_cooling_key_makes_requests_wait(on_clock, clock) -> None:
    e = on_clock(keys=secrets(1), retry=RetryPolicy(max_retries=0, deadline=5))
    op, seen = rate_limited("k1", {"retry-after": "10"})
    with pytest.raises(RateLimitError):
        e.call(op)
    with pytest.raises(APITimeoutError, match="before the deadline"):
        e.call(op)  # 10 s of cooldown left, 5 s allowed: fails without being sent
    assert seen == ["k1"]
    clock.advance(10)
    assert e.call(op) == "ok"
    assert seen == ["k1", "k1"]


def test_cooldown_without_a_hint_is_the_backoff(on_clock) -> None:
    e = on_clock(keys=secrets(2), retry=RetryPolicy(max_retries=0, base_delay=2, jitter=False))
    op, _ = rate_limited("k1", {})
    with pytest.raises(RateLimitError):
        e.call(op)
    assert e.stats()["keys"]["k1"]["cooling_down_for"] == pytest.approx(2)


def test_a_cooldown_is_never_shortened(clock) -> None:
    pool = KeyPool(secrets(1), clock=clock)
    k = take(pool)
    pool.cooldown(k, 10)
    pool.cooldown(k, 3)
    assert pool.stats()["k1"]["cooling_down_for"] == pytest.approx(10)
    assert pool.stats()["k1"]["cooldowns"] == 2
    assert pool.acquire() == (None, pytest.approx(10))


# -- disabled keys ------------------------------------------------------------------------

def test_disabled_keys_are_skipped_and_reported(clock) -> None:
    pool = KeyPool(secrets(2), clock=clock)
    k1 = take(pool)
    pool.disable(k1, "401 bad key")
    assert pool.available() == 1
    assert turns(pool, 3) == ["k2", "k2", "k2"]
    pool.disable(take(pool), "403 no access")
    assert pool.available() == 0
    with pytest.raises(AuthenticationError, match="k1: 401 bad key; k2: 403 no access"):
        pool.acquire()
    assert pool.stats()["k2"]["disabled"] == "403 no access"


def test_a_single_disabled_key(clock) -> None:
    pool = KeyPool(secrets(1), clock=clock)
    pool.disable(take(pool), "401 bad key")
    with pytest.raises(AuthenticationError, match="every API key is disabled") as info:
        pool.acquire()
    assert info.value.status == 401


# -- per-key stats ------------------------------------------------------------------------

def test_per_key_stats(on_clock, clock) -> None:
    e = on_clock(keys=secrets(2))
    inside = []

    def ok(attempt):
        inside.append(e.stats()["keys"][attempt.key.label]["in_flight"])
        return OpResult("fine", prompt_tokens=3, completion_tokens=4)

    def fail(attempt):
        inside.append(e.stats()["in_flight"])
        raise ServerError("down", status=500)

    e.call(ok)  # k1 at 1000
    clock.advance(5)
    with pytest.raises(ServerError):
        e.call(fail)  # k2 at 1005
    clock.advance(5)
    e.call(lambda a: "plain", est_tokens=6)  # k1 at 1010
    with pytest.raises(ZeroDivisionError):
        e.call(lambda a: 1 / 0)  # k2 at 1010: a bug in the operation is still an error
    assert inside == [1, 1]
    base = {"in_flight": 0, "cooling_down_for": 0.0, "cooldowns": 0, "disabled": None,
            "limiter_waits": 0}
    assert e.stats()["keys"] == {
        "k1": {"requests": 2, "succeeded": 2, "errors": 0, "tokens": 13, "last_used": 1010.0,
               **base},
        "k2": {"requests": 2, "succeeded": 0, "errors": 2, "tokens": 0, "last_used": 1010.0,
               **base},
    }
    assert e.stats()["in_flight"] == 0


def test_a_single_keys_stats(on_clock, clock) -> None:
    e = on_clock(keys=secrets(1))
    e.call(lambda a: OpResult("x", prompt_tokens=2, completion_tokens=3))
    clock.advance(2)
    e.call(lambda a: "y")
    s = e.stats()["keys"]["k1"]
    assert (s["requests"], s["succeeded"], s["tokens"], s["in_flight"], s["last_used"]) == (
        2, 2, 5, 0, 1002.0)


def test_stats_before_any_request(clock) -> None:
    pool = KeyPool(secrets(1), rpm=60, clock=clock)
    assert pool.stats() == {"k1": {
        "requests": 0, "succeeded": 0, "errors": 0, "tokens": 0, "in_flight": 0,
        "last_used": None, "cooling_down_for": 0.0, "cooldowns": 0, "disabled": None,
        "limiter_waits": 0}}


# -- readiness, for callers that choose where to send (the Router) -------------------------
def test_ready_in_says_when_a_key_could_be_had_without_taking_one(clock) -> None:
    pool = KeyPool(secrets(2), rpm=60, clock=clock)  # one a second, a burst of one each
    assert pool.ready_in() == 0.0
    a, b = take(pool), take(pool)
    pool.release(a, ok=True)
    pool.release(b, ok=True)
    assert pool.ready_in() == pytest.approx(1.0)  # both buckets empty: a second
    clock.advance(0.25)
    assert pool.ready_in() == pytest.approx(0.75)
    assert pool.ready_in() == pytest.approx(0.75)  # asking took nothing
    pool.cooldown(a, 5.0)
    clock.advance(0.75)
    assert pool.ready_in() == 0.0  # b has room again; a is cooling
    take(pool)
    assert pool.ready_in() == pytest.approx(1.0)  # b spent, a cooling for 4.25 more
    pool.disable(a, "401")
    pool.disable(b, "401")
    assert pool.ready_in() == float("inf")


def test_ready_in_counts_the_tokens_a_request_needs(clock) -> None:
    pool = KeyPool(secrets(1), tpm=6000, clock=clock)  # 100 a second, a burst of 100
    assert pool.ready_in(est_tokens=50) == 0.0
    pool.release(take(pool, 80), ok=True, est_tokens=80, used_tokens=80)
    assert pool.ready_in(est_tokens=50) == pytest.approx(0.3)  # 20 left, 30 short


def test_engine_ready_in_waits_for_an_open_breaker(on_clock, clock) -> None:
    from ipfs_accelerate_api import BreakerPolicy

    e = on_clock(breaker=BreakerPolicy(failure_threshold=1, recovery_timeout=10))

    def fail(attempt):
        raise ServerError("down", status=503)

    with pytest.raises(ServerError):
        e.call(fail)
    assert 9.0 < e.ready_in() <= 10.0  # the breaker keeps its own (real) clock
    assert e.outstanding == 0


def test_usage_is_counted_per_model_and_key(make, emu) -> None:
    ai = make(api_keys=["sk-usage-a", "sk-usage-b"])
    seen = []
    ai2 = make(on_request_end=seen.append)
    msg = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        ai.chat(msg, model="gpt-4o-mini")
    ai.chat(msg, model="gpt-4o")
    ai.embed(["x", "y"], model="text-embedding-3-small")
    usage = ai.stats()["usage"]
    assert set(usage) == {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"}
    assert {k: v["requests"] for k, v in usage["gpt-4o-mini"].items()} == \
        {"openai-key-1": 1, "openai-key-2": 1}  # round robin
    row = next(iter(usage["gpt-4o"].values()))
    assert row["succeeded"] == 1 and row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert sum(v["prompt_tokens"] for v in usage["text-embedding-3-small"].values()) > 0
    ai2.chat(msg, model="gpt-4o-mini")
    assert seen[-1].model == "gpt-4o-mini"


def test_without_keys_a_refusal_does_not_disable_the_only_slot(on_clock) -> None:
    """A keyless server (or a proxy in front of it) answering 403 once: that request fails,
    and the next one is sent, not refused with "every API key is disabled"."""
    from ipfs_accelerate_api.errors import PermissionDeniedError

    e = on_clock()  # no keys: one anonymous slot
    answers = iter([PermissionDeniedError("proxy says no", status=403), "ok"])

    def op(attempt):
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    with pytest.raises(PermissionDeniedError):
        e.call(op)
    assert e.call(op) == "ok"
    assert e.stats()["keys"]["anonymous"]["disabled"] is None
