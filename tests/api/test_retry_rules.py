"""The retry rules: the server's timing hints, what is retried, what counts against the
breaker, and the backoff policy; as functions, through the Engine with plain operations,
and against the emulator."""

from __future__ import annotations

import dataclasses
import email.utils

import pytest

from ipfs_accelerate_api import BreakerPolicy, RetryPolicy, Timeouts
from ipfs_accelerate_api.config import (
    DEFAULT_BASE_DELAY,
    DEFAULT_MAX_DELAY,
    DEFAULT_MAX_RETRIES,
    Secret,
)
from ipfs_accelerate_api.core import BreakerState
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.engine.retry import (
    RETRYABLE_STATUSES,
    counts_against_breaker,
    is_retryable,
    parse_duration,
    server_delay,
)
from ipfs_accelerate_api.errors import (
    AcceleratorError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    StreamInterrupted,
    status_error_class,
)

from .conftest import FAST_RETRY


def status(code: int, **headers: str) -> APIStatusError:
    return status_error_class(code)(f"HTTP {code}", status=code, headers=headers)


def exhausted(requests: str | None = None, tokens: str | None = None) -> dict[str, str]:
    """Rate-limit headers saying a window is spent and resets after the given duration."""
    h = {}
    for kind, reset in (("requests", requests), ("tokens", tokens)):
        if reset is not None:
            h[f"x-ratelimit-remaining-{kind}"] = "0"
            h[f"x-ratelimit-reset-{kind}"] = reset
    return h


# -- durations ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("6m0s", 360), ("1.5s", 1.5), ("1h", 3600), ("1h30m", 5400), ("1.5m", 90), ("0s", 0),
    ("12ms", 0.012), ("250us", 250e-6), ("250\u00b5s", 250e-6), ("40ns", 40e-9),
    ("1m500ms", 60.5), (" 5s ", 5), ("3", 3), ("2.5", 2.5), ("0", 0),
])
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=0)


@pytest.mark.parametrize("text", [
    "5sjunk", "junk5s", "5s junk", "5 s", "5x", "s", "", "   ", "1.s", "-5s", "-1", "inf",
    "nan", "-inf",
])
def test_parse_duration_refuses(text) -> None:
    assert parse_duration(text) is None


# -- the server's hints -------------------------------------------------------------------

def test_an_exhausted_tokens_window() -> None:
    assert server_delay(exhausted(tokens="2.5s")) == 2.5


@pytest.mark.parametrize("requests, tokens", [("1s", "6m0s"), ("6m0s", "1s")])
def test_both_windows_exhausted_wait_for_the_longer(requests, tokens) -> None:
    assert server_delay(exhausted(requests=requests, tokens=tokens)) == 360


@pytest.mark.parametrize("remaining", ["0", "0.0", " 0 "])
def test_what_counts_as_exhausted(remaining) -> None:
    assert server_delay({"x-ratelimit-remaining-tokens": remaining,
                         "x-ratelimit-reset-tokens": "4s"}) == 4


@pytest.mark.parametrize("headers", [
    {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "4s"},
    {"x-ratelimit-remaining-requests": "0"},
    {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": ""},
    {"x-ratelimit-reset-requests": "4s"},
    {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "soon"},
    {"retry-after": "whenever"},
    {"retry-after-ms": "", "retry-after": ""},
    {},
])
def test_no_hint(headers) -> None:
    assert server_delay(headers) is None


def test_an_unreadable_reset_does_not_hide_the_other_window() -> None:
    h = exhausted(requests="soon", tokens="3s")
    assert server_delay(h) == 3


def test_retry_after_zero_means_now() -> None:
    assert server_delay({"retry-after": "0"}) == 0.0
    assert server_delay({"retry-after-ms": "0"}) == 0.0
    assert server_delay({"retry-after": "0", **exhausted(requests="9s")}) == 0.0


def test_retry_after_precedence_and_case() -> None:
    assert server_delay({"Retry-After-Ms": "1500", "Retry-After": "9"}) == 1.5
    assert server_delay({"retry-after-ms": "junk", "retry-after": "9"}) == 9
    assert server_delay({"retry-after": "2", **exhausted(requests="1m0s")}) == 2
    assert server_delay({"X-RateLimit-Remaining-Tokens": "0",
                         "X-RateLimit-Reset-Tokens": "7s"}) == 7
    assert server_delay({"retry-after": "-3"}) == 0.0
    assert server_delay({"retry-after-ms": "-3"}) == 0.0


def test_retry_after_as_an_http_date() -> None:
    when = 1_700_000_000.0
    date = email.utils.formatdate(when, usegmt=True)
    assert server_delay({"retry-after": date}, now=when - 30) == pytest.approx(30)
    assert server_delay({"retry-after": date}, now=when + 30) == 0.0  # already past
    assert server_delay({"retry-after": "Mon, 99 Foo 2024 99:99:99 GMT",
                         **exhausted(tokens="2s")}) == 2


# -- what is retried ------------------------------------------------------------------------

@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(code) -> None:
    assert is_retryable(status(code)) is True


@pytest.mark.parametrize("code", [400, 401, 403, 404, 405, 410, 413, 422, 499])
def test_statuses_never_retried(code) -> None:
    assert is_retryable(status(code)) is False


def test_retryable_set_is_exactly_the_documented_one() -> None:
    assert RETRYABLE_STATUSES == {408, 409, 429}


def test_retried_without_a_status() -> None:
    assert is_retryable(APIConnectionError("reset")) is True
    assert is_retryable(APITimeoutError("slow")) is True
    assert is_retryable(ResponseFormatError("half a JSON")) is True
    assert is_retryable(StreamInterrupted("cut", partial_text="ab")) is False
    assert is_retryable(APIStatusError("no status")) is False
    assert is_retryable(ConfigurationError("bad option")) is False


def test_the_server_overrides_the_status() -> None:
    assert is_retryable(status(503, **{"X-Should-Retry": "false"})) is False
    assert is_retryable(status(400, **{"x-should-retry": "true"})) is True
    assert is_retryable(status(503, **{"x-should-retry": "maybe"})) is True  # not a yes or no
    assert is_retryable(status(400, **{"x-should-retry": "TRUE"})) is False


# -- what counts against the breaker --------------------------------------------------------

COUNTED = [APIConnectionError("refused"), APITimeoutError("slow"), status(500), status(503),
           status(408)]
NOT_COUNTED = [status(400), status(401), status(404), status(409), status(429),
               ResponseFormatError("garbled"), APIStatusError("no status")]


@pytest.mark.parametrize("exc", COUNTED, ids=lambda e: repr(e.status or type(e).__name__))
def test_counts_against_the_breaker(exc) -> None:
    assert counts_against_breaker(exc) is True


@pytest.mark.parametrize("exc", NOT_COUNTED, ids=lambda e: repr(e.status or type(e).__name__))
def test_does_not_count_against_the_breaker(exc) -> None:
    assert counts_against_breaker(exc) is False


@pytest.mark.parametrize("exc, opens", [(e, True) for e in COUNTED] + [(e, False) for e in NOT_COUNTED],
                         ids=lambda v: repr(getattr(v, "status", None) or type(v).__name__))
def test_the_engines_breaker_follows_the_rule(engines, exc, opens) -> None:
    e = engines(retry=RetryPolicy(max_retries=0), breaker=BreakerPolicy(failure_threshold=1))

    def fail(attempt):
        raise exc

    with pytest.raises(AcceleratorError):
        e.call(fail)
    s = e.breaker.stats()
    assert (s["state"], s["failures"], s["successes"]) == (
        ("OPEN", 1, 0) if opens else ("CLOSED", 0, 1))


@pytest.mark.parametrize("kind, opens", [("500", True), ("reset", True), ("timeout", True),
                                         ("429", False)])
def test_breaker_against_the_emulator(make, emu, kind, opens) -> None:
    emu.config("openai").faults = FaultPlan(script=[kind], timeout_delay=1.0)
    ai = make(retry=RetryPolicy(max_retries=0), breaker=BreakerPolicy(failure_threshold=1),
              timeout=Timeouts(connect=2, read=0.2))
    with pytest.raises(AcceleratorError):
        ai.list_models()
    state = ai.engine.breaker.state
    assert state is (BreakerState.OPEN if opens else BreakerState.CLOSED)


def test_an_unexpected_exception_is_not_the_endpoints_fault(engines) -> None:
    e = engines(breaker=BreakerPolicy(failure_threshold=1))
    with pytest.raises(KeyError):
        e.call(lambda a: {}["missing"])
    assert e.breaker.stats()["state"] == "CLOSED"


# -- the engine's retry decisions -----------------------------------------------------------

@pytest.fixture
def engine(engines):
    """An Engine with keys k1.. and the list its request records go to."""

    def factory(retry=FAST_RETRY, keys=("sk-1",), **options):
        records: list = []
        e = engines(keys=[Secret(k, f"k{i + 1}") for i, k in enumerate(keys)], retry=retry,
                    on_request_end=records.append, **options)
        return e, records

    return factory


def failing(*errors):
    """An operation that raises ``errors`` in turn, then returns "ok"; records who tried."""
    tries: list[tuple[int, str]] = []

    def op(attempt):
        tries.append((attempt.number, attempt.key.label))
        if len(tries) <= len(errors):
            raise errors[len(tries) - 1]
        return "ok"

    return op, tries


def test_max_retries_bounds_the_attempts(engine) -> None:
    e, records = engine(retry=RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.002))
    op, tries = failing(*[status(503)] * 5)
    with pytest.raises(ServerError):
        e.call(op)
    assert [n for n, _ in tries] == [1, 2, 3]
    assert records[-1].attempts == 3 and records[-1].error == "ServerError"
    assert e.stats()["retried"] == 2


def test_no_retries_at_all(engine) -> None:
    e, _ = engine(retry=RetryPolicy(max_retries=0))
    op, tries = failing(APIConnectionError("reset"))
    with pytest.raises(APIConnectionError):
        e.call(op)
    assert len(tries) == 1


def test_a_final_error_is_not_retried(engine) -> None:
    e, _ = engine()
    op, tries = failing(NotFoundError("gone", status=404))
    with pytest.raises(NotFoundError):
        e.call(op)
    assert len(tries) == 1


def test_retry_after_zero_retries_at_once(engine) -> None:
    e, records = engine(retry=RetryPolicy(max_retries=1, base_delay=60, max_delay=60))
    op, tries = failing(status(503, **{"retry-after": "0"}))  # the backoff would be 60 s
    assert e.call(op) == "ok"
    assert [n for n, _ in tries] == [1, 2]
    assert records[-1].attempts == 2


@pytest.mark.parametrize("ms, retried", [("50", True), ("51", False)])
def test_a_hint_longer_than_max_server_delay_is_not_waited_for(engine, ms, retried) -> None:
    e, _ = engine(retry=RetryPolicy(max_retries=3, max_server_delay=0.05))
    op, tries = failing(status(503, **{"retry-after-ms": ms}))
    if retried:
        assert e.call(op) == "ok"
    else:
        with pytest.raises(ServerError):
            e.call(op)
    assert len(tries) == (2 if retried else 1)


def test_no_retry_past_the_deadline(engine) -> None:
    e, records = engine(retry=RetryPolicy(max_retries=3, deadline=1.0))
    op, tries = failing(status(503, **{"retry-after": "2"}))
    with pytest.raises(ServerError):
        e.call(op)
    assert len(tries) == 1 and records[-1].error == "ServerError"


def test_a_rejected_key_gets_one_extra_try_on_another(engine) -> None:
    e, _ = engine(retry=RetryPolicy(max_retries=0), keys=("sk-bad", "sk-good"))
    op, tries = failing(AuthenticationError("bad key", status=401))
    assert e.call(op) == "ok"
    assert tries == [(1, "k1"), (2, "k2")]
    assert e.stats()["keys"]["k1"]["disabled"] == "401 bad key"


def test_a_rejected_only_key_fails(engine) -> None:
    e, _ = engine()
    op, tries = failing(AuthenticationError("bad key", status=401))
    with pytest.raises(AuthenticationError):
        e.call(op)
    assert len(tries) == 1


@pytest.mark.parametrize("headers, cooldown", [
    (exhausted(tokens="7s"), 7),
    (exhausted(requests="2s", tokens="7s"), 7),
    (exhausted(requests="7s", tokens="2s"), 7),
    ({"retry-after": "0"}, 0),
])
def test_a_429_cools_its_key_for_the_servers_wait(engine, clock, headers, cooldown) -> None:
    e, _ = engine(retry=RetryPolicy(max_retries=0), clock=clock)
    op, _ = failing(RateLimitError("slow", status=429, headers=headers))
    with pytest.raises(RateLimitError):
        e.call(op)
    assert e.stats()["keys"]["k1"]["cooling_down_for"] == pytest.approx(cooldown)


# -- the policy -----------------------------------------------------------------------------

def test_backoff_grows_exponentially_below_the_cap() -> None:
    p = RetryPolicy(base_delay=0.5, max_delay=100, jitter=False)
    assert [p.backoff(n, 0.5) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 16]


def test_backoff_is_capped() -> None:
    p = RetryPolicy(base_delay=0.5, max_delay=3, jitter=False)
    assert [p.backoff(n, 0.9) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]


def test_jitter_scales_the_capped_delay() -> None:
    p = RetryPolicy(base_delay=1, max_delay=3)
    assert p.backoff(2, 0.25) == 0.5
    assert p.backoff(9, 0.5) == 1.5
    assert p.backoff(1, 0.0) == 0.0


@pytest.mark.parametrize("options, match", [
    ({"max_retries": -1}, "max_retries"),
    ({"base_delay": -0.01}, "base_delay"),
    ({"max_delay": -1}, "max_delay"),
    ({"deadline": 0}, "deadline"),
    ({"deadline": -5}, "deadline"),
])
def test_policy_refuses(options, match) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RetryPolicy(**options)


@pytest.mark.parametrize("options", [
    {"max_retries": 0}, {"base_delay": 0}, {"max_delay": 0}, {"deadline": 0.001},
    {"deadline": None},
])
def test_policy_boundaries_accepted(options) -> None:
    p = RetryPolicy(**options)
    assert p.backoff(1, 1.0) >= 0


def test_policy_defaults_and_value_semantics() -> None:
    p = RetryPolicy()
    assert (p.max_retries, p.base_delay, p.max_delay, p.jitter, p.deadline,
            p.max_server_delay) == (DEFAULT_MAX_RETRIES, DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY,
                                    True, None, 120.0)
    assert (DEFAULT_MAX_RETRIES, DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY) == (3, 0.5, 8.0)
    assert RetryPolicy(max_retries=1) != p
    with pytest.raises(TypeError):
        RetryPolicy(3)  # keyword-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_retries = 5  # type: ignore[misc]
    b = BreakerPolicy()
    assert b == BreakerPolicy(failure_threshold=5, recovery_timeout=30.0, half_open_max_calls=1,
                              success_threshold=1)
    with pytest.raises(TypeError):
        BreakerPolicy(5)  # keyword-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.failure_threshold = 1  # type: ignore[misc]


def test_jitter_is_a_boolean() -> None:
    with pytest.raises(ConfigurationError, match="jitter"):
        RetryPolicy(jitter=1)  # type: ignore[arg-type]
    assert RetryPolicy(jitter=False).backoff(1, 0.1) == DEFAULT_BASE_DELAY


def test_breaker_policy_boundaries() -> None:
    assert BreakerPolicy(recovery_timeout=0, failure_threshold=1).recovery_timeout == 0
    with pytest.raises(ConfigurationError, match="recovery_timeout"):
        BreakerPolicy(recovery_timeout=-0.1)


@pytest.mark.parametrize("name", ["connect", "read"])
def test_connect_and_read_are_never_unbounded(name) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Timeouts(**{name: None})


def test_timeouts_defaults_and_value_semantics() -> None:
    t = Timeouts()
    assert (t.connect, t.read, t.total, t.stream_idle, t.stream_total) == (5.0, 120.0, None,
                                                                           60.0, None)
    assert Timeouts(read=1) == Timeouts(read=1) != t and "read=1" in repr(Timeouts(read=1))
    with pytest.raises(TypeError):
        Timeouts(5)  # keyword-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.read = 1  # type: ignore[misc]


@pytest.mark.parametrize("options", [
    {"connect": 0.001, "read": 0.001}, {"total": None, "stream_idle": None, "stream_total": None},
    {"total": 1, "stream_idle": 1, "stream_total": 1},
])
def test_timeouts_boundaries_accepted(options) -> None:
    assert Timeouts(**options) == Timeouts(**options)


@pytest.mark.parametrize("headers,expected", [
    # OpenAI refills continuously: an exhausted window's next request is one request's share
    # of the minute away (600/min: 0.1 s), not when the window is full again (59.9 s)
    ({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-requests": "59.9s"}, (0.1, None)),
    # a window that is full sooner than that keeps its own reset
    ({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-requests": "20ms"}, (0.02, None)),
    # tokens the same way (150,000 a minute: 0.4 ms a token)
    ({"x-ratelimit-limit-tokens": "150000", "x-ratelimit-remaining-tokens": "0",
      "x-ratelimit-reset-tokens": "6s"}, (None, 60 / 150000)),
    # remaining above 0, or no limit header: the reset as it was said
    ({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "3",
      "x-ratelimit-reset-requests": "59.9s"}, (59.9, None)),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}, (2.0, None)),
])
def test_openai_exhausted_window_next_unit(headers, expected) -> None:
    from ipfs_accelerate_api.backends.openai import OpenAIBackend

    b = OpenAIBackend(api_key="sk-test", base_url="http://127.0.0.1:9")
    try:
        info = b._ratelimit_info(headers)
    finally:
        b.close()
    got = (info.reset_requests, info.reset_tokens)
    assert got == pytest.approx(expected)
