"""The Claude (Anthropic Messages API) backend end to end, and the official ``anthropic`` SDK,
both over real HTTP against the emulator's ``claude`` service."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import urllib3

from ipfs_accelerate_api import RetryPolicy, backend
from ipfs_accelerate_api.backends.claude import DEFAULT_MAX_TOKENS, ClaudeBackend
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator._server import reply_text
from ipfs_accelerate_api.emulator.anthropic import input_tokens
from ipfs_accelerate_api.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
)
from ipfs_accelerate_api.types import ChatResponse

from .conftest import MSG, backend_factory
from .hostile import HostileServer

MODEL = "claude-sonnet-4-5"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


@pytest.fixture
def claude(emu):
    """Create Claude backends against the emulator; all are closed after the test."""
    yield from backend_factory(emu, "claude", "sk-ant-test")


def _sent(emu, n: int = -1):
    """(headers, body) of a request the emulator's claude service received."""
    return emu.services["claude"].received[n]


# -- the official SDK against the emulator ------------------------------------------------------

anthropic = pytest.importorskip("anthropic")


@pytest.fixture
def sdk(emu):
    with anthropic.Anthropic(base_url=emu.base_url("claude"), api_key="sk-ant-test",
                             max_retries=0) as client:
        yield client


def test_sdk_messages_create(sdk) -> None:
    r = sdk.messages.create(model=MODEL, max_tokens=64, system="be terse",
                            messages=[{"role": "user", "content": "hello there"}])
    assert r.type == "message" and r.role == "assistant" and r.stop_reason == "end_turn"
    assert r.content[0].type == "text" and r.content[0].text == reply_text("hello there", 1, 64)
    assert r.usage.input_tokens > 0 and r.usage.output_tokens == len(r.content[0].text.split())
    assert r._request_id and r._request_id.startswith("req_")


def test_sdk_stream_events_and_text(sdk) -> None:
    kw = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
    events = list(sdk.messages.create(stream=True, **kw))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    with sdk.messages.stream(**kw) as stream:
        final = stream.get_final_message()
    plain = sdk.messages.create(**kw)
    assert final.content[0].text == plain.content[0].text
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_sdk_tool_use_streamed_and_plain(sdk) -> None:
    tools = [{"name": "get_weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}]
    kw = {"model": MODEL, "max_tokens": 64, "tools": tools, "tool_choice": {"type": "any"},
          "messages": [{"role": "user", "content": "weather?"}]}
    plain = sdk.messages.create(**kw)
    with sdk.messages.stream(**kw) as stream:
        final = stream.get_final_message()
    assert plain.stop_reason == final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].name == "get_weather"
    assert final.content[0].input == plain.content[0].input and "city" in final.content[0].input


def test_sdk_count_tokens_and_models(sdk) -> None:
    msgs = [{"role": "user", "content": "count these words please"}]
    counted = sdk.messages.count_tokens(model=MODEL, messages=msgs, system="sys")
    made = sdk.messages.create(model=MODEL, max_tokens=8, messages=msgs, system="sys")
    assert counted.input_tokens == made.usage.input_tokens > 0
    ids = [m.id for m in sdk.models.list(limit=4)]  # the SDK pages through with after_id
    assert MODEL in ids and len(ids) == len(set(ids)) > 4
    assert sdk.models.retrieve(MODEL).id == MODEL
    with pytest.raises(anthropic.NotFoundError):
        sdk.models.retrieve("claude-9")


def test_sdk_retries_a_429(emu) -> None:
    emu.config("claude").faults = FaultPlan(script=["429"])
    with anthropic.Anthropic(base_url=emu.base_url("claude"), api_key="sk-ant-test",
                             max_retries=2) as c:
        r = c.messages.create(model=MODEL, max_tokens=8,
                              messages=[{"role": "user", "content": "hi"}])
    assert r.content[0].text
    stats = emu.stats("claude")
    assert stats["faults"] == {"429": 1} and stats["requests"] == 2


def test_sdk_error_bodies(sdk, emu) -> None:
    emu.config("claude").faults = FaultPlan(script=["503", "500"])  # the first two requests
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        sdk.models.list()
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.InternalServerError) as internal:
        sdk.models.list()
    assert internal.value.body["error"]["type"] == "api_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert bad.value.body["type"] == "error"
    assert bad.value.body["error"] == {"type": "invalid_request_error", "message":
                                       "max_tokens: Input should be greater than or equal to 1"}
    assert bad.value.request_id == bad.value.body["request_id"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(model="claude-9", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    emu.config("claude").keys = ["sk-ant-good"]
    with pytest.raises(anthropic.AuthenticationError) as auth:
        sdk.models.list()
    assert auth.value.body["error"]["type"] == "authentication_error"


def test_sdk_sees_the_in_stream_error(emu, sdk) -> None:
    emu.config("claude").faults = FaultPlan(script=["stream_error"])
    with pytest.raises(anthropic.APIStatusError) as info:
        list(sdk.messages.create(model=MODEL, max_tokens=64, stream=True,
                                 messages=[{"role": "user", "content": "hi"}]))
    assert info.value.body["error"]["type"] == "overloaded_error"


# -- our backend end to end ---------------------------------------------------------------------

def test_chat(claude, emu) -> None:
    ai = claude()
    r = ai.chat(MSG, model=MODEL)
    assert isinstance(r, ChatResponse) and isinstance(ai, ClaudeBackend)
    assert r.text == reply_text("hello there", 1, DEFAULT_MAX_TOKENS)
    assert r.message.role == "assistant" and r.message.content == r.text
    assert r.finish_reason == "stop" and r.raw["stop_reason"] == "end_turn"
    assert r.usage.prompt_tokens == input_tokens(_sent(emu)[1]) > 0
    assert r.usage.completion_tokens == len(r.text.split())
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == MODEL and r.request_id.startswith("req_")
    headers, body = _sent(emu)
    assert headers["x-api-key"] == "sk-ant-test" and "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS


def test_stream_equals_plain(claude) -> None:
    ai = claude()
    chunks = list(ai.stream_chat(MSG, model=MODEL, max_tokens=64))
    plain = ai.chat(MSG, model=MODEL, max_tokens=64)
    assert "".join(c.text for c in chunks) == plain.text
    assert sum(1 for c in chunks if c.text) > 1  # it did arrive in pieces
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.usage == plain.usage


def test_async_stream_and_count(claude) -> None:
    ai = claude()

    async def main():
        texts = [c.text async for c in ai.astream_chat(MSG, model=MODEL)]
        return "".join(texts), await ai.acount_tokens(MSG, model=MODEL)

    text, counted = asyncio.run(main())
    assert text == ai.chat(MSG, model=MODEL).text
    assert counted == ai.chat(MSG, model=MODEL).usage.prompt_tokens


def test_finish_reasons(claude) -> None:
    ai = claude()
    full = ai.chat(MSG, model=MODEL)
    short = ai.chat(MSG, model=MODEL, max_tokens=2)
    assert short.finish_reason == "length" and short.raw["stop_reason"] == "max_tokens"
    assert short.text == reply_text("hello there", 1, 2)
    word = full.text.split()[2]
    cut = ai.chat(MSG, model=MODEL, stop=word)
    assert cut.finish_reason == "stop" and cut.raw["stop_reason"] == "stop_sequence"
    assert cut.raw["stop_sequence"] == word and cut.text == full.text[:full.text.index(word)]
    streamed = list(ai.stream_chat(MSG, model=MODEL, max_tokens=2))
    assert streamed[-1].finish_reason == "length"


@pytest.fixture
def canned():
    """A backend against a server that answers whatever body (and status) the test sets."""
    with HostileServer() as server, backend("claude", base_url=server.url + "/json",
                                            api_key="sk-ant-x", retry=RetryPolicy(max_retries=0)) as ai:
        yield server, ai


def test_refusal_and_cached_input(canned) -> None:
    server, ai = canned
    server.body = json.dumps({
        "id": "m", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": "refusal", "usage": {"input_tokens": 3, "output_tokens": 0,
                                            "cache_creation_input_tokens": 10,
                                            "cache_read_input_tokens": 100}}).encode()
    r = ai.chat(MSG, model=MODEL)
    assert r.finish_reason == "content_filter" and r.text == "" and r.message.content is None
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (113, 113)


def _events(*events: dict) -> bytes:
    return b"".join(f"event: {e.pop('event', e['type'])}\ndata: {json.dumps(e)}\n\n".encode()
                    for e in events)


def test_stream_ignores_what_it_does_not_know(canned) -> None:
    server, ai = canned
    server.ctype = "text/event-stream"
    server.body = _events(
        {"type": "message_start", "message": {"usage": {"input_tokens": 4, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "future_event", "whatever": [1]},
        {"type": "ping"},
        {"event": "message", "type": "content_block_start", "index": 1,  # no name: its type says
         "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "ok"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"})
    chunks = list(ai.stream_chat(MSG, model=MODEL))
    assert "".join(c.text for c in chunks) == "ok"
    assert chunks[-1].usage.prompt_tokens == 4 and chunks[-1].usage.completion_tokens == 9


@pytest.mark.parametrize("status,kind,cls", [
    (400, "invalid_request_error", BadRequestError), (401, "authentication_error", AuthenticationError),
    (403, "permission_error", PermissionDeniedError), (404, "not_found_error", NotFoundError),
    (413, "request_too_large", APIStatusError), (429, "rate_limit_error", RateLimitError),
    (500, "api_error", ServerError), (529, "overloaded_error", ServerError),
])
def test_error_types(canned, status, kind, cls) -> None:
    server, ai = canned
    server.status = status
    server.body = json.dumps({"type": "error", "error": {"type": kind, "message": "nope"},
                              "request_id": "req_1"}).encode()
    with pytest.raises(cls) as info:
        ai.chat(MSG, model=MODEL)
    assert (info.value.status, info.value.code, info.value.message) == (status, kind, "nope")


def test_tools_both_ways(claude, emu) -> None:
    ai = claude()
    ask = [{"role": "user", "content": "weather in Paris?"}]
    r = ai.chat(ask, model=MODEL, tools=TOOLS, tool_choice="required")
    _, body = _sent(emu)
    assert body["tools"] == [{"name": "get_weather", "description": "The weather in a city.",
                              "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert body["tool_choice"] == {"type": "any"}
    assert r.finish_reason == "tool_calls" and r.message.content is None
    (call,) = r.message.tool_calls
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    assert set(json.loads(call.arguments)) == {"city"}
    chunks = list(ai.stream_chat(ask, model=MODEL, tools=TOOLS, tool_choice="required"))
    assert all(not c.tool_calls for c in chunks[:-1])
    assert chunks[-1].tool_calls == [{"index": 0, "id": call.id, "type": "function",
                                      "function": {"name": "get_weather",
                                                   "arguments": call.arguments}}]
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage == r.usage
    # the call and its result go back: tool_use in the assistant turn, tool_result after it
    answer = ai.chat(ask + [{"role": "assistant", "content": None, "tool_calls": [call]},
                            {"role": "tool", "tool_call_id": call.id, "content": "sunny"}],
                     model=MODEL, tools=TOOLS,
                     tool_choice={"type": "function", "function": {"name": "get_weather"}},
                     parallel_tool_calls=False)
    _, body = _sent(emu)
    assert body["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id,
                                           "name": "get_weather",
                                           "input": json.loads(call.arguments)}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                      "content": "sunny"}]}]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather",
                                   "disable_parallel_tool_use": True}
    assert answer.finish_reason == "tool_calls"
    # dict tool calls (OpenAI's form) work too, and a plain answer comes back without a choice
    as_dict = {"id": call.id, "type": "function",
               "function": {"name": call.name, "arguments": call.arguments}}
    follow = ai.chat(ask + [{"role": "assistant", "content": "Let me look.", "tool_calls": [as_dict]},
                            {"role": "tool", "tool_call_id": call.id, "content": "sunny"}],
                     model=MODEL, tools=TOOLS)
    assert follow.finish_reason == "stop" and follow.text
    assert _sent(emu)[1]["messages"][1]["content"][0] == {"type": "text", "text": "Let me look."}


PNG_URL = "data:image/png;base64,iVBORw0KGgo="


def test_system_merging_and_images_as_sent(claude, emu) -> None:
    ai = claude()
    ai.chat([{"role": "system", "content": "Be terse."},
             {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
             {"role": "user", "content": "Look:"},
             {"role": "user", "content": [
                 {"type": "image_url", "image_url": {"url": PNG_URL}},
                 {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                 {"type": "text", "text": "what are these?"}]},
             {"role": "assistant", "content": "Two"},
             {"role": "assistant", "content": "images"},
             {"role": "user", "content": "and?"}], model=MODEL, temperature=0.5, top_k=5,
            stop=["END", "STOP"], user="u-1")
    _, body = _sent(emu)
    assert body["system"] == "Be terse.\n\nUse French."
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            {"type": "text", "text": "what are these?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Two"},
                                          {"type": "text", "text": "images"}]},
        {"role": "user", "content": "and?"}]
    assert body["stop_sequences"] == ["END", "STOP"] and body["metadata"] == {"user_id": "u-1"}
    assert (body["temperature"], body["top_k"]) == (0.5, 5)


@pytest.mark.parametrize("messages,params,error", [
    ([{"role": "function", "content": "x"}], {}, ValueError),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,xx"}}]}],
     {}, ValueError),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}],
     {}, ValueError),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "t", "function": {"name": "f", "arguments": "[1]"}}]}], {}, ValueError),
    ([{"role": "assistant", "content": None, "tool_calls": ["call"]}], {}, TypeError),
    ([{"role": "system", "content": "a"}, {"role": "user", "content": "b"}], {"system": "c"},
     ValueError),
    ([], {}, ValueError),
])
def test_caller_errors_before_sending(claude, emu, messages, params, error) -> None:
    ai = claude()
    with pytest.raises(error):
        ai.chat(messages, model=MODEL, **params)
    assert emu.stats("claude")["requests"] == 0


def test_version_header_can_be_set_by_the_caller(claude, emu) -> None:
    ai = claude(headers={"Anthropic-Version": "2023-01-01", "anthropic-beta": "tools-2024-04-04"})
    ai.chat(MSG, model=MODEL)
    headers, _ = _sent(emu)
    assert headers["anthropic-version"] == "2023-01-01"
    assert headers["anthropic-beta"] == "tools-2024-04-04"


def test_count_tokens_and_models(claude, emu) -> None:
    ai = claude()
    n = ai.count_tokens(MSG, model=MODEL, tools=TOOLS, max_tokens=10, temperature=0.2)
    _, body = _sent(emu)
    assert "max_tokens" not in body and "temperature" not in body and body["tools"]
    assert n == ai.chat(MSG, model=MODEL, tools=TOOLS).usage.prompt_tokens
    models = ai.list_models()
    assert MODEL in models and "claude-3-5-haiku-20241022" in models


def test_status_errors_are_typed(claude) -> None:
    ai = claude()
    with pytest.raises(BadRequestError) as bad:
        ai.chat(MSG, model=MODEL, temperature=1.5)
    assert bad.value.status == 400 and bad.value.code == "invalid_request_error"
    assert bad.value.message.startswith("temperature:") and bad.value.request_id.startswith("req_")
    with pytest.raises(NotFoundError) as missing:
        ai.chat(MSG, model="claude-9")
    assert missing.value.code == "not_found_error" and missing.value.backend == "claude"


def test_529_is_retried(claude, emu) -> None:
    emu.config("claude").faults = FaultPlan(script=["503", "500"])
    ai = claude()
    assert ai.chat(MSG, model=MODEL).text
    assert emu.stats("claude")["faults"] == {"503": 1, "500": 1}
    assert ai.stats()["retried"] == 2
    emu.config("claude").faults = FaultPlan(script=["503"] * 10)
    with pytest.raises(ServerError) as info:
        claude(retry=RetryPolicy(max_retries=1, base_delay=0.001)).chat(MSG, model=MODEL)
    assert info.value.status == 529 and info.value.code == "overloaded_error"


def test_401_is_not_retried(claude, emu) -> None:
    emu.config("claude").keys = ["sk-ant-good"]
    ai = claude(api_key="sk-ant-bad")
    with pytest.raises(AuthenticationError) as info:
        ai.chat(MSG, model=MODEL)
    assert info.value.code == "authentication_error"
    assert emu.stats("claude")["requests"] == 1


def test_429_hint_cools_the_key_and_the_next_key_answers(claude, emu) -> None:
    emu.config("claude").faults = FaultPlan(script=["429"])
    ai = claude(api_keys=["sk-ant-one", "sk-ant-two"])
    assert ai.chat(MSG, model=MODEL).text
    keys = ai.stats()["keys"]
    assert keys["claude-key-1"]["cooldowns"] == 1 and keys["claude-key-2"]["succeeded"] == 1
    assert emu.stats("claude")["by_key"] == {"sk-ant-one": 1, "sk-ant-two": 1}


def test_a_long_retry_after_is_not_hammered(claude, emu) -> None:
    emu.config("claude").rpm = 1
    ai = claude(retry=RetryPolicy(max_retries=3, base_delay=0.001, max_server_delay=5))
    ai.chat(MSG, model=MODEL)
    with pytest.raises(RateLimitError) as info:
        ai.chat(MSG, model=MODEL)
    err = info.value
    assert err.code == "rate_limit_error" and float(err.headers["retry-after"]) > 5
    assert err.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert emu.stats("claude")["requests"] == 2  # the hint was longer than allowed: no retry
    assert ai.stats()["keys"]["claude-key-1"]["cooling_down_for"] > 5


def test_ratelimit_headers_are_read(claude, emu) -> None:
    emu.config("claude").rpm, emu.config("claude").tpm = 100, 10_000
    pool = urllib3.PoolManager(retries=False)
    answer = pool.request("GET", emu.base_url("claude") + "/v1/models",
                          headers={"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"})
    assert answer.status == 200
    info = claude()._ratelimit_info(answer.headers)
    assert info.remaining_requests == 99 and 0 < info.reset_requests <= 61
    assert 0 < info.remaining_tokens < 10_000 and 0 < info.reset_tokens <= 61
    ai = claude()
    assert ai._ratelimit_info({"anthropic-ratelimit-requests-remaining": "3",
                               "anthropic-ratelimit-requests-reset": "not a time"}).reset_requests is None
    assert ai._ratelimit_info({"anthropic-ratelimit-input-tokens-remaining": "7000",
                               "anthropic-ratelimit-input-tokens-reset": "2020-01-01T00:00:00Z"}
                              ).reset_tokens == 0.0
    assert ai._ratelimit_info({}) is None


def test_mid_stream_error_keeps_the_text_so_far(claude, emu) -> None:
    emu.config("claude").faults = FaultPlan(script=[None, "stream_error"])
    ai = claude()
    full = ai.chat(MSG, model=MODEL, max_tokens=64).text
    got = []
    with pytest.raises(StreamInterrupted) as info:
        for chunk in ai.stream_chat(MSG, model=MODEL, max_tokens=64):
            got.append(chunk.text)
    assert info.value.partial_text == "".join(got) == " ".join(full.split()[:2])
    assert info.value.code == "overloaded_error" and "overloaded" in info.value.message.lower()


def test_a_cut_stream_is_interrupted(claude, emu) -> None:
    emu.config("claude").faults = FaultPlan(script=["truncate"])
    ai = claude()
    with pytest.raises(StreamInterrupted) as info:
        list(ai.stream_chat(MSG, model=MODEL))
    words = reply_text("hello there", 1, DEFAULT_MAX_TOKENS).split()
    assert info.value.partial_text == " ".join(words[:2])


def test_key_pool_rotates(claude, emu) -> None:
    ai = claude(api_keys=["sk-ant-a", "sk-ant-b", "sk-ant-c"])
    for _ in range(6):
        ai.chat(MSG, model=MODEL)
    assert emu.stats("claude")["by_key"] == {"sk-ant-a": 2, "sk-ant-b": 2, "sk-ant-c": 2}


def test_canary_key_never_leaks(claude, emu, caplog) -> None:
    canary = "sk-ant-CANARY-0123456789abcdef"
    emu.config("claude").keys = ["sk-ant-other"]
    caplog.set_level(logging.DEBUG)
    ai = claude(api_key=canary)
    with pytest.raises(AuthenticationError) as info:
        ai.chat(MSG, model=MODEL)
    err = info.value
    seen = [str(err), repr(err), json.dumps(err.body), json.dumps(err.headers), repr(ai),
            json.dumps(ai.stats(), default=str), caplog.text]
    assert not any(canary in s for s in seen)


def test_alias_and_environment(monkeypatch, emu) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("CLAUDE_API_KEY", "sk-ant-env")
    with backend("anthropic", base_url=emu.base_url("claude")) as ai:
        assert isinstance(ai, ClaudeBackend) and ai.name == "claude"
        ai.chat(MSG, model=MODEL)
    assert emu.stats("claude")["by_key"] == {"sk-ant-env": 1}
