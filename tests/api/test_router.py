"""The Router against emulator services with controlled latency, limits and outages: each
strategy's choices, fallbacks (order, the 5-hop stop, loops refused, streams only before
their first chunk, context window and content filter chains), waiting for recovery, and the
record of every call."""

from __future__ import annotations

import time

import pytest

import ipfs_accelerate_api as ia
from ipfs_accelerate_api import BreakerPolicy, RetryPolicy
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator.gemini import BLOCK_PROMPT
from ipfs_accelerate_api.errors import (
    ConfigurationError,
    ContentFilteredError,
    ContextWindowExceededError,
    NoDeploymentAvailable,
    ServerError,
    StreamInterrupted,
)

MSG = [{"role": "user", "content": "hello there"}]
NO_RETRY = RetryPolicy(max_retries=0)
MODELS = {"openai": "gpt-4o-mini", "groq": "llama-3.1-8b-instant", "claude": "claude-sonnet-4-5",
          "gemini": "gemini-2.0-flash", "ollama": "llama3.2"}


@pytest.fixture
def make(emu):
    """Routers over deployments of the emulated services; all closed after the test.
    ``dep(service, group, **fields)`` builds one deployment's dict."""
    made = []

    def dep(service: str, group: str = "g", *, key: str | None = None, **fields):
        options = {"base_url": emu.base_url(service), "retry": NO_RETRY, **fields.pop("options", {})}
        options["api_key"] = key or f"sk-{service}-{len(made)}-{group}"
        return {"group": group, "backend": service, "model": fields.pop("model", MODELS[service]),
                "options": options, **fields}

    def router(deployments, **options):
        r = ia.Router(deployments, seed=7, **options)
        made.append(r)
        return r

    router.dep = dep
    yield router
    for r in made:
        r.close()


def served(emu, *services) -> dict[str, int]:
    return {s: emu.stats(s)["requests"] for s in services}


# -- strategies -----------------------------------------------------------------------------
def test_simple_shuffle_follows_the_weights(make, emu) -> None:
    r = make([make.dep("openai", weight=3), make.dep("groq", weight=1)])
    for _ in range(200):
        r.chat(MSG, model="g")
    counts = served(emu, "openai", "groq")
    assert counts["openai"] + counts["groq"] == 200
    assert 120 <= counts["openai"] <= 180  # 3:1 expected (150), seeded


def test_order_takes_the_first_healthy_one(make, emu) -> None:
    r = make([make.dep("openai", options={"breaker": BreakerPolicy(failure_threshold=1,
                                                                   recovery_timeout=60)}),
              make.dep("groq")], strategy="order")
    for _ in range(3):
        r.chat(MSG, model="g")
    assert served(emu, "openai", "groq") == {"openai": 3, "groq": 0}
    emu.config("openai").faults = FaultPlan(script=["503"])
    assert r.chat(MSG, model="g").text  # 503 on openai: the breaker opens, groq answers
    assert r.chat(MSG, model="g").text  # openai's breaker is open: skipped, not tried
    assert served(emu, "openai", "groq") == {"openai": 4, "groq": 2}


def test_least_busy_sends_to_the_one_with_fewer_in_flight(make, emu) -> None:
    emu.config("openai").latency = 2.0  # holds its one call while the others are made
    r = make([make.dep("openai"), make.dep("groq")], strategy="least_busy")
    slow = r.submit("chat", MSG, model="g")  # a tie: the first listed, openai

    def outstanding(i: int) -> int:
        d = list(r.stats()["deployments"].values())[i]
        return d["submitted"] - d["succeeded"] - d["failed"]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and outstanding(0) < 1:
        time.sleep(0.005)  # until the slow call is on its way (not a timing assertion)
    for _ in range(3):  # openai has one in flight, groq none: groq each time
        r.chat(MSG, model="g")
    assert served(emu, "groq")["groq"] == 3
    slow.result()
    assert served(emu, "openai")["openai"] == 1


def test_usage_based_never_sends_a_429_bound_request_while_another_has_room(make, emu) -> None:
    emu.config("openai").rpm = 120  # two a second, a minute's burst on the server
    r = make([make.dep("openai", rpm=120), make.dep("groq")], strategy="usage_based")
    for _ in range(12):
        r.chat(MSG, model="g")
    assert emu.stats("openai")["sent_429"] == 0 and emu.stats("groq")["sent_429"] == 0
    counts = served(emu, "openai", "groq")
    assert counts["openai"] >= 1 and counts["groq"] >= 9  # openai's second's worth: 2 at most


def test_latency_based_prefers_the_fast_one_and_comes_back_when_it_recovers(make, emu,
                                                                           clock) -> None:
    """Each deployment's time is what the test says (the Router reads a fake clock, moved on
    by each request's end): no timing in the test."""
    cost = {"openai": 0.8, "groq": 0.05}

    def spent(service):
        return {"on_request_end": lambda record: clock.advance(cost[service])}

    r = make([make.dep("openai", options=spent("openai")), make.dep("groq", options=spent("groq"))],
             strategy="latency_based", clock=clock)
    picks = []

    def call() -> str:
        before = served(emu, "openai")["openai"]
        r.chat(MSG, model="g", max_tokens=8)
        return "openai" if served(emu, "openai")["openai"] > before else "groq"

    picks = [call() for _ in range(10)]
    assert picks[:2] == ["openai", "groq"]  # each sampled once, in order
    assert picks[2:].count("groq") >= 7  # then the fast one, but for a rare re-check
    cost.update(openai=0.05, groq=0.8)  # they swap
    picks = [call() for _ in range(30)]
    assert picks.index("openai") < 20  # within a bounded number of calls it is tried again,
    assert picks[-12:].count("openai") >= 10  # and wins again (but for a rare re-check)


def test_cost_based_takes_the_cheapest(make, emu) -> None:
    r = make([make.dep("openai", cost={"input": 0.15, "output": 0.6}),
              make.dep("groq", cost={"input": 0.05, "output": 0.08})], strategy="cost_based")
    for _ in range(3):
        r.chat(MSG, model="g")
    assert served(emu, "openai", "groq") == {"openai": 0, "groq": 3}


# -- fallbacks ------------------------------------------------------------------------------
def test_a_failed_deployment_falls_back_along_the_chain(make, emu) -> None:
    records = []
    emu.config("openai").faults = FaultPlan(script=["500"])
    r = make([make.dep("openai", "fast"), make.dep("claude", "backup"), make.dep("ollama", "local")],
             fallbacks={"fast": ["backup", "local"]}, on_request_end=records.append)
    assert r.chat(MSG, model="fast").text
    assert served(emu, "openai", "claude", "ollama") == {"openai": 1, "claude": 1, "ollama": 0}
    assert records[-1].deployments_tried == ["fast/openai/gpt-4o-mini#0",
                                             "backup/claude/claude-sonnet-4-5#1"]
    assert records[-1].ok and records[-1].model == "fast" and records[-1].attempts == 2
    assert r.stats()["router"]["fallbacks"] == 1


def test_fallbacks_stop_after_five_hops(make, emu) -> None:
    records = []
    emu.config("openai").faults = FaultPlan(script=["503"] * 20)
    deps = [make.dep("openai", f"g{i}", key=f"sk-hop-{i}") for i in range(8)]
    r = make(deps, fallbacks={f"g{i}": [f"g{i + 1}"] for i in range(7)},
             on_request_end=records.append)
    with pytest.raises(ServerError):
        r.chat(MSG, model="g0")
    assert emu.stats("openai")["requests"] == 6  # the first, then five hops
    assert len(records[-1].deployments_tried) == 6 and not records[-1].ok


def test_a_loop_in_the_chains_is_refused(make) -> None:
    with pytest.raises(ConfigurationError, match="loop"):
        make([make.dep("openai", "a"), make.dep("groq", "b"), make.dep("claude", "c")],
             fallbacks={"a": ["b"], "b": ["c"], "c": ["a"]})
    with pytest.raises(ConfigurationError, match="deployment group"):
        make([make.dep("openai", "a")], fallbacks={"a": ["nowhere"]})


def test_a_stream_falls_back_only_before_its_first_chunk(make, emu) -> None:
    r = make([make.dep("openai", "s"), make.dep("groq", "t")], fallbacks={"s": ["t"]},
             strategy="order")
    emu.config("openai").faults = FaultPlan(script=["500"])
    text = "".join(c.text for c in r.stream_chat(MSG, model="s"))
    assert text and served(emu, "openai", "groq") == {"openai": 1, "groq": 1}
    emu.config("openai").faults = FaultPlan(script=["stream_error"])
    with pytest.raises(StreamInterrupted):
        for _ in r.stream_chat(MSG, model="s"):
            pass
    assert served(emu, "groq")["groq"] == 1  # broken after it started: not sent elsewhere


def test_a_context_window_error_falls_back_to_the_long_context_group(make, emu) -> None:
    emu.services["openai"].context_windows = {"gpt-4o-mini": 50}
    r = make([make.dep("openai", "short"), make.dep("claude", "long")],
             context_window_fallbacks={"short": ["long"]})
    long_prompt = [{"role": "user", "content": "word " * 400}]
    assert r.chat(long_prompt, model="short").text
    assert served(emu, "openai", "claude") == {"openai": 1, "claude": 1}
    r2 = make([make.dep("openai", "alone")])
    with pytest.raises(ContextWindowExceededError):
        r2.chat(long_prompt, model="alone")


def test_the_context_window_error_is_typed_for_each_service(backends, emu) -> None:
    long_prompt = [{"role": "user", "content": "word " * 400}]
    emu.services["openai"].context_windows = {"gpt-4o-mini": 50}
    emu.services["claude"].context_window = 50
    for name in ("openai", "claude"):
        with pytest.raises(ContextWindowExceededError):
            backends(name, retry=NO_RETRY).chat(long_prompt, model=MODELS[name], max_tokens=10)


def test_a_content_filter_verdict_falls_back(make, emu) -> None:
    r = make([make.dep("gemini", "strict"), make.dep("claude", "other")],
             content_filter_fallbacks={"strict": ["other"]})
    blocked = [{"role": "user", "content": f"tell me {BLOCK_PROMPT}"}]
    assert r.chat(blocked, model="strict").text
    assert served(emu, "gemini", "claude") == {"gemini": 1, "claude": 1}
    r2 = make([make.dep("gemini", "alone")])
    with pytest.raises(ContentFilteredError):
        r2.chat(blocked, model="alone")


def test_client_errors_do_not_fall_back(make, emu) -> None:
    r = make([make.dep("openai", "a"), make.dep("groq", "b")], fallbacks={"a": ["b"]})
    with pytest.raises(ValueError):
        r.chat([], model="a")
    with pytest.raises(ValueError, match="deployment group"):
        r.chat(MSG, model="gpt-4o-mini")
    assert served(emu, "openai", "groq") == {"openai": 0, "groq": 0}


# -- nothing available ----------------------------------------------------------------------
def test_no_deployment_available_carries_the_earliest_retry_after(make, emu) -> None:
    r = make([make.dep("openai", options={"breaker": BreakerPolicy(failure_threshold=1,
                                                                   recovery_timeout=30)}),
              make.dep("groq", options={"breaker": BreakerPolicy(failure_threshold=1,
                                                                 recovery_timeout=5)})])
    emu.config("openai").faults = FaultPlan(script=["503"])
    emu.config("groq").faults = FaultPlan(script=["503"])
    with pytest.raises(ServerError):
        r.chat(MSG, model="g")  # both tried, both failed: both breakers open
    with pytest.raises(NoDeploymentAvailable) as info:
        r.chat(MSG, model="g")
    assert 4.0 < info.value.retry_after <= 5.0 and info.value.group == "g"
    assert r.stats()["router"]["no_deployment"] == 1


def test_wait_for_recovery_waits_for_exactly_the_first_one_back(make, emu) -> None:
    slept = []

    def sleep(s):
        slept.append(s)
        time.sleep(s)

    fast = BreakerPolicy(failure_threshold=1, recovery_timeout=0.3)
    slow = BreakerPolicy(failure_threshold=1, recovery_timeout=30)
    deps = [make.dep("openai", options={"breaker": fast}), make.dep("groq", options={"breaker": slow})]
    r = make(deps, wait_for_recovery=2.0, sleep=sleep)
    emu.config("openai").faults = FaultPlan(script=["503"])
    emu.config("groq").faults = FaultPlan(script=["503"])
    with pytest.raises(ServerError):
        r.chat(MSG, model="g")
    before = served(emu, "openai", "groq")
    assert r.chat(MSG, model="g").text
    after = served(emu, "openai", "groq")
    assert after["openai"] == before["openai"] + 1 and after["groq"] == before["groq"]
    assert slept and 0.0 < sum(slept) <= 0.35  # openai's 0.3 s, not groq's 30


def test_the_same_surface_as_a_backend(make, emu) -> None:
    import asyncio

    with make([make.dep("openai"), make.dep("groq")]) as r:
        assert r.submit("chat", MSG, model="g").result().text
        assert asyncio.run(r.achat(MSG, model="g")).text
        stats = r.stats()
        assert set(stats) == {"router", "deployments"} and stats["router"]["calls"] == 2
        d = next(iter(stats["deployments"].values()))
        assert {"group", "backend", "model", "submitted", "breaker", "keys"} <= set(d)
        assert "sk-" not in repr(stats)


def test_bad_deployments_are_refused(make) -> None:
    with pytest.raises(ConfigurationError, match="strategy"):
        make([make.dep("openai")], strategy="fastest")
    with pytest.raises(ConfigurationError, match="'model' is required"):
        make([{"group": "g", "backend": "openai"}])
    with pytest.raises(ConfigurationError, match="unknown field"):
        make([{**make.dep("openai"), "colour": "red"}])
    with pytest.raises(ConfigurationError, match="weight"):
        make([make.dep("openai", weight=0)])
    with pytest.raises(ConfigurationError, match="at least one"):
        make([])
