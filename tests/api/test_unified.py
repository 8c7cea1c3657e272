"""One behaviour across every chat-capable backend, each against its own emulated service.

A backend joins by adding a row to ``CHAT_BACKENDS``: the name it is built by, the emulator
service it talks to and a model that service knows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pytest

import ipfs_accelerate_api as ia
from ipfs_accelerate_api import RetryPolicy
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.errors import AuthenticationError, StreamInterrupted

UNIFIED_FINISH = {"stop", "length", "tool_calls", "content_filter"}
FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01)
MSG = [{"role": "user", "content": "tell me about the weather"}]


@dataclass(frozen=True)
class ChatRow:
    backend: str
    service: str
    model: str
    #: Why the service reports no usage and no finish reason on a stream, if it does not.
    no_usage: str = ""


CHAT_BACKENDS = [
    ChatRow("openai", "openai", "gpt-4o-mini"),
    ChatRow("groq", "groq", "llama-3.1-8b-instant"),
    ChatRow("claude", "claude", "claude-sonnet-4-5"),
    ChatRow("gemini", "gemini", "gemini-2.0-flash"),
    ChatRow("tgi", "tgi", "tgi"),
    # Ollama asks for no key; its emulator's ``keys`` stand for an authenticating proxy in
    # front of it (a Bearer key), which is what the auth, key-pool and 429 tests exercise.
    ChatRow("ollama", "ollama", "llama3.2"),
    # OVMS's OpenAI-compatible /v3 (an LLM graph); its key guard is ``--api_key_file``.
    ChatRow("ovms", "ovms", "ovms-llm"),
    # OPEA's ChatQnA megaservice: its emulator's ``keys`` stand for a gateway in front of it.
    ChatRow("opea", "opea", "chatqna",
            no_usage="OPEA's megaservice answers usage zeros and streams bare text (data: b'...')"),
]


@pytest.fixture(params=CHAT_BACKENDS, ids=lambda r: r.backend)
def row(request) -> ChatRow:
    return request.param


@pytest.fixture
def build(emu, row):
    made = []

    def factory(**options):
        options.setdefault("api_key", "sk-unified-test")
        options.setdefault("retry", FAST)
        b = ia.backend(row.backend, base_url=emu.base_url(row.service), **options)
        made.append(b)
        return b

    yield factory
    for b in made:
        b.close()


def test_chat_text_usage_and_finish_reason(build, row) -> None:
    r = build().chat(MSG, model=row.model)
    assert isinstance(r.text, str) and r.text
    assert r.finish_reason in UNIFIED_FINISH
    if row.no_usage:
        pytest.skip(row.no_usage)
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_streamed_text_equals_the_plain_text(build, row) -> None:
    ai = build()
    plain = ai.chat(MSG, model=row.model)
    chunks = list(ai.stream_chat(MSG, model=row.model))
    assert "".join(c.text for c in chunks) == plain.text
    if row.no_usage:
        pytest.skip(row.no_usage)
    finishes = [c.finish_reason for c in chunks if c.finish_reason]
    assert finishes and finishes[-1] in UNIFIED_FINISH
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens > 0


def test_a_429_with_a_retry_hint_is_honoured(build, emu, row) -> None:
    emu.config(row.service).faults = FaultPlan(script=["429"])
    ai = build()
    assert ai.chat(MSG, model=row.model).text
    assert ai.stats()["retried"] == 1 and emu.stats(row.service)["requests"] == 2
    assert ai.stats()["rate_limited"] == 1  # seen, though the call succeeded
    assert ai.stats()["keys"][f"{ai.name}-key-1"]["cooldowns"] == 1


@pytest.mark.parametrize("fault", ["500", "503"])
def test_a_5xx_is_retried(build, emu, row, fault) -> None:
    emu.config(row.service).faults = FaultPlan(script=[fault])
    ai = build()
    assert ai.chat(MSG, model=row.model).text
    assert ai.stats()["retried"] == 1


def test_an_auth_failure_is_not_retried(build, emu, row) -> None:
    emu.config(row.service).keys = ["sk-the-right-one"]
    ai = build(api_key="sk-a-wrong-one")
    with pytest.raises(AuthenticationError):
        ai.chat(MSG, model=row.model)
    assert emu.stats(row.service)["requests"] == 1


def test_a_mid_stream_error_carries_the_text_so_far(build, emu, row) -> None:
    emu.config(row.service).faults = FaultPlan(script=[None, "stream_error"])
    ai = build()
    full = "".join(c.text for c in ai.stream_chat(MSG, model=row.model))
    got = []
    with pytest.raises(StreamInterrupted) as info:
        for c in ai.stream_chat(MSG, model=row.model):
            got.append(c.text)
    assert info.value.partial_text == "".join(got)
    assert full.startswith(info.value.partial_text)


def test_a_key_pool_rotates(build, emu, row) -> None:
    keys = ["sk-pool-one", "sk-pool-two", "sk-pool-three"]
    ai = build(api_keys=keys)
    for _ in range(6):
        ai.chat(MSG, model=row.model)
    assert emu.stats(row.service)["by_key"] == {k: 2 for k in keys}


def test_a_canary_key_never_leaks(build, emu, row, caplog) -> None:
    canary = "sk-CANARY-unified-5d1e"
    emu.config(row.service).faults = FaultPlan(script=["500", "429", "stream_error"])
    seen = []
    with caplog.at_level(logging.DEBUG, logger="ipfs_accelerate_api"):
        ai = build(api_key=canary, on_request_end=lambda rec: seen.append(repr(rec)))
        ai.chat(MSG, model=row.model)
        try:
            for _ in ai.stream_chat(MSG, model=row.model):
                pass
        except StreamInterrupted as exc:
            seen += [str(exc), repr(exc), json.dumps(exc.body), json.dumps(exc.headers)]
        emu.config(row.service).keys = ["sk-someone-else"]
        with pytest.raises(AuthenticationError) as info:
            ai.chat(MSG, model=row.model)
        seen += [str(info.value), repr(info.value), json.dumps(info.value.body),
                 json.dumps(info.value.headers), repr(ai), json.dumps(ai.stats(), default=str)]
    assert all(canary not in text for text in seen)
    assert canary not in caplog.text
