"""Gemini: the official google-genai SDK against the emulator (proof of the wire format), and
our backend end to end over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
import urllib3

from ipfs_accelerate_api import RetryPolicy, backend
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator._server import embedding_for, reply_text
from ipfs_accelerate_api.emulator.gemini import BLOCK_PROMPT, BLOCK_REPLY
from ipfs_accelerate_api.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilteredError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
)

from .conftest import MSG
from .hostile import HostileServer

genai = pytest.importorskip("google.genai")
from google.genai import errors as genai_errors, types as genai_types  # noqa: I001

MODEL = "gemini-2.0-flash"
EMBED = "text-embedding-004"
PROMPT = "hello there"  # MSG's text: the emulator's reply is reply_text(PROMPT, seed, limit)
TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "now", "parameters": {
    "type": "object", "properties": {"timezone": {"type": "string"}, "hours": {"type": "integer"}}}}}]


@pytest.fixture
def gem(backends):
    return lambda **options: backends("gemini", **options)


def _seen(emu):
    return list(emu.services["gemini"].seen)


def _paths(emu):
    return emu.stats("gemini")["by_path"]


# -- the official SDK ----------------------------------------------------------------------------

@pytest.fixture
def sdk(emu):
    return genai.Client(api_key="AIza-sdk", http_options=genai_types.HttpOptions(
        base_url=emu.root_url + "/gemini/", retry_options=None))


def test_sdk_generate_and_stream(sdk, emu) -> None:
    r = sdk.models.generate_content(model=MODEL, contents="hi")
    assert r.text == reply_text("hi", 1, 64)
    assert r.candidates[0].finish_reason == genai_types.FinishReason.STOP
    u = r.usage_metadata
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    chunks = list(sdk.models.generate_content_stream(model=MODEL, contents="hi"))
    assert len(chunks) > 1 and "".join(c.text for c in chunks) == r.text
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    config = genai_types.GenerateContentConfig(system_instruction="be terse", max_output_tokens=2,
                                               temperature=0.5, top_p=0.9, top_k=5, seed=7)
    short = sdk.models.generate_content(model=MODEL, contents="hi", config=config)
    assert short.candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS
    assert emu.record("gemini").auth_headers_seen[0] == {"x-goog-api-key": "AIza-sdk"}


def test_sdk_embed_and_count(sdk, emu) -> None:
    one = sdk.models.embed_content(model=EMBED, contents="alpha")
    assert _paths(emu) == {f"/v1/models/{EMBED}:batchEmbedContents": 1}  # even for one text
    assert np.allclose(one.embeddings[0].values, embedding_for("alpha", 768, seed=1), atol=1e-6)
    many = sdk.models.embed_content(model=EMBED, contents=["a", "b", "c"],
                                    config=genai_types.EmbedContentConfig(output_dimensionality=16))
    assert [len(e.values) for e in many.embeddings] == [16, 16, 16]
    assert sdk.models.count_tokens(model=MODEL, contents="hello world, again").total_tokens == 4
    assert "models/" + MODEL in [m.name for m in sdk.models.list()]


def test_sdk_errors(sdk, emu) -> None:
    with pytest.raises(genai_errors.ClientError) as bad:
        sdk.models.generate_content(model=MODEL, contents="hi",
                                    config=genai_types.GenerateContentConfig(temperature=3))
    assert (bad.value.code, bad.value.status) == (400, "INVALID_ARGUMENT")
    with pytest.raises(genai_errors.ClientError) as missing:
        sdk.models.generate_content(model="gemini-9", contents="hi")
    assert (missing.value.code, missing.value.status) == (404, "NOT_FOUND")
    emu.config("gemini").keys = ["AIza-good"]
    with pytest.raises(genai_errors.ClientError) as key:
        sdk.models.generate_content(model=MODEL, contents="hi")
    assert key.value.code == 400 and "API key not valid" in key.value.message
    assert key.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_sdk_sees_in_stream_error(sdk, emu) -> None:
    emu.config("gemini").faults = FaultPlan(script=["stream_error"])  # the first request
    with pytest.raises(genai_errors.APIError):
        list(sdk.models.generate_content_stream(model=MODEL, contents="hi"))


def test_emulator_takes_the_key_from_the_query_and_streams_an_array_without_alt_sse(emu) -> None:
    emu.config("gemini").keys = ["AIza-q"]
    url = emu.base_url("gemini") + f"/models/{MODEL}:streamGenerateContent?key=AIza-q"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    r = urllib3.request("POST", url, json=body)
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    events = json.loads(r.data)  # one JSON array, not SSE
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == \
        reply_text("hi", 1, 64)
    assert urllib3.request("POST", url.replace("AIza-q", "AIza-x"), json=body).status == 400


# -- our backend ---------------------------------------------------------------------------------

def test_chat_usage_and_finish_reasons(gem, backends, emu) -> None:
    ai = gem()
    r = ai.chat(MSG, model=MODEL)
    assert r.text == reply_text(PROMPT, 1, 64) and r.message.role == "assistant"
    assert r.finish_reason == "stop" and r.model == MODEL and r.request_id
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert r.raw["candidates"][0]["finishReason"] == "STOP"
    short = ai.chat(MSG, model="models/" + MODEL, max_tokens=1)
    assert short.finish_reason == "length" and len(short.text.split()) == 1
    assert ai.complete(PROMPT, model=MODEL).text == r.text
    assert MODEL in ai.list_models()
    google = backends("google", base_url=emu.base_url("gemini"))
    assert type(google) is type(ai) and google.chat(MSG, model=MODEL).text == r.text


def test_stream_equals_plain_text(gem) -> None:
    ai = gem()
    chunks = list(ai.stream_chat(MSG, model=MODEL))
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == ai.chat(MSG, model=MODEL).text
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.completion_tokens > 0

    async def main():
        return [c.text async for c in ai.astream_chat(MSG, model=MODEL)]

    assert "".join(asyncio.run(main())) == "".join(c.text for c in chunks)


def test_request_mapping_seen_by_the_emulator(gem, emu) -> None:
    ai = gem()
    png = base64.b64encode(b"\x89PNG fake").decode()
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {
            "type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]},
        {"role": "assistant", "content": "a picture"},
        {"role": "user", "content": "more"},
    ]
    ai.chat(messages, model=MODEL, max_tokens=20, stop="END", temperature=0.5, top_p=0.9, top_k=3)
    body = _seen(emu)[-1].data
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": png}}
    assert body["generationConfig"] == {"maxOutputTokens": 20, "stopSequences": ["END"],
                                        "temperature": 0.5, "topP": 0.9, "topK": 3}


def test_tools_both_ways(gem, emu) -> None:
    ai = gem()
    r = ai.chat(MSG, model=MODEL, tools=TOOLS, tool_choice="required")
    assert r.finish_reason == "tool_calls" and r.message.content is None
    (call,) = r.message.tool_calls
    assert call.name == "get_time" and set(json.loads(call.arguments)) == {"timezone", "hours"}
    sent = _seen(emu)[-1].data
    assert sent["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == \
        TOOLS[0]["function"]["parameters"]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    (chunk,) = [c for c in ai.stream_chat(MSG, model=MODEL, tools=TOOLS, tool_choice={
        "type": "function", "function": {"name": "get_time"}}) if c.tool_calls]
    assert chunk.finish_reason == "tool_calls"
    assert chunk.tool_calls[0]["function"]["name"] == "get_time"
    follow = [*MSG, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"time": "noon"}'}]
    again = ai.chat(follow, model=MODEL, tools=TOOLS)
    assert again.finish_reason == "stop" and again.text
    contents = _seen(emu)[-1].data["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "get_time",
                                                      "args": json.loads(call.arguments)}}]
    assert contents[2]["parts"] == [{"functionResponse": {"name": "get_time",
                                                          "response": {"time": "noon"}}}]


def test_rate_limit_retry_info_is_honoured_with_a_key_cooldown(gem, emu, caplog) -> None:
    emu.config("gemini").faults = FaultPlan(script=["429"])
    ai = gem(api_keys=["AIza-one", "AIza-two"], retry=RetryPolicy(max_retries=2, base_delay=5,
                                                                  max_delay=5))
    with caplog.at_level("DEBUG", logger="ipfs_accelerate_api"):
        assert ai.chat(MSG, model=MODEL).text
    assert "retry in 0.051s (server hint)" in caplog.text  # RetryInfo, not the 5 s backoff
    keys = ai.stats()["keys"]
    assert keys["gemini-key-1"]["cooldowns"] == 1 and keys["gemini-key-2"]["succeeded"] == 1


def test_rate_limit_error_carries_the_body_hint(gem, emu) -> None:
    emu.config("gemini").faults = FaultPlan(script=["429"])
    with pytest.raises(RateLimitError) as info:
        gem(retry=RetryPolicy(max_retries=0)).chat(MSG, model=MODEL)
    assert info.value.retry_after == pytest.approx(0.051) and info.value.code == "RESOURCE_EXHAUSTED"
    assert "retry-after" not in info.value.headers  # the wait is only in the body, as Google sends it


@pytest.mark.parametrize("fault", ["503", "500"])
def test_server_errors_are_retried(gem, emu, fault) -> None:
    emu.config("gemini").faults = FaultPlan(script=[fault, fault])
    ai = gem()
    assert "".join(c.text for c in ai.stream_chat(MSG, model=MODEL)) == reply_text(PROMPT, 1, 64)
    assert ai.stats()["retried"] == 2


@pytest.mark.parametrize("fault", ["503", "500"])
def test_server_errors_are_typed(gem, emu, fault) -> None:
    emu.config("gemini").faults = FaultPlan(script=[fault])
    with pytest.raises(ServerError) as info:
        gem(retry=RetryPolicy(max_retries=0)).chat(MSG, model=MODEL)
    assert info.value.code == {"503": "UNAVAILABLE", "500": "INTERNAL"}[fault]


def test_bad_key_is_an_authentication_error_not_retried(gem, emu) -> None:
    emu.config("gemini").keys = ["AIza-good"]
    ai = gem(api_key="AIza-bad")
    with pytest.raises(AuthenticationError) as info:
        ai.chat(MSG, model=MODEL)
    assert info.value.status == 400 and info.value.code == "API_KEY_INVALID"
    assert emu.stats("gemini")["requests"] == 1 and ai.stats()["retried"] == 0
    assert ai.stats()["keys"]["gemini-key-1"]["disabled"].startswith("400")


def test_typed_errors_for_refusals(gem) -> None:
    ai = gem()
    with pytest.raises(BadRequestError) as info:
        ai.chat(MSG, model=MODEL, temperature=3)
    assert info.value.code == "INVALID_ARGUMENT" and "temperature" in info.value.message
    with pytest.raises(NotFoundError):
        ai.chat(MSG, model="gemini-9")


@pytest.mark.parametrize("kind", ["stream_error", "truncate"])
def test_mid_stream_failure_carries_partial_text(gem, emu, kind) -> None:
    emu.config("gemini").faults = FaultPlan(script=[kind])
    ai = gem(retry=RetryPolicy(max_retries=0))
    got = []
    with pytest.raises(StreamInterrupted) as info:
        for chunk in ai.stream_chat(MSG, model=MODEL):
            got.append(chunk.text)
    assert got and info.value.partial_text == "".join(got)


@pytest.mark.parametrize("word,reason", [(BLOCK_PROMPT, "SAFETY"), (BLOCK_REPLY, "SAFETY")])
def test_safety_verdicts_are_content_filtered(gem, emu, word, reason) -> None:
    ai = gem()
    msgs = [{"role": "user", "content": f"please {word}"}]
    for call in (lambda: ai.chat(msgs, model=MODEL), lambda: list(ai.stream_chat(msgs, model=MODEL))):
        with pytest.raises(ContentFilteredError) as info:
            call()
        assert info.value.reason == reason and info.value.backend == "gemini"
    assert emu.stats("gemini")["requests"] == 2 and ai.stats()["retried"] == 0


def test_embed_250_texts_in_three_ordered_requests(gem, emu) -> None:
    ai = gem()
    texts = [f"text {i}" for i in range(250)]
    out = ai.embed(texts, model=EMBED)
    assert out.shape == (250, 768) and out.dtype == np.float32
    assert _paths(emu) == {f"/v1beta/models/{EMBED}:batchEmbedContents": 3}
    assert sorted(len(r.data["requests"]) for r in _seen(emu)) == [50, 100, 100]  # concurrent
    for i in (0, 99, 100, 249):
        assert np.allclose(out[i], embedding_for(texts[i], 768, seed=1), atol=1e-6)
    one = ai.embed("solo", model="models/" + EMBED, dimensions=32, task_type="RETRIEVAL_QUERY")
    assert one.shape == (1, 32)
    assert _seen(emu)[-1].data == {"content": {"parts": [{"text": "solo"}]},
                                   "outputDimensionality": 32, "taskType": "RETRIEVAL_QUERY"}
    assert _seen(emu)[-1].path == f"/v1beta/models/{EMBED}:embedContent"


def test_count_tokens(gem, emu) -> None:
    ai = gem()
    assert ai.count_tokens("hello world, again", model=MODEL) == 4
    system = [{"role": "system", "content": "be terse"}, *MSG]
    assert asyncio.run(ai.acount_tokens(system, model=MODEL)) == 5
    assert set(_seen(emu)[-1].data) == {"generateContentRequest"}


def test_the_key_is_never_in_a_url(gem, emu) -> None:
    key = "AIza-url-canary-123"
    ai = gem(api_key=key)
    ai.chat(MSG, model=MODEL)
    list(ai.stream_chat(MSG, model=MODEL))
    ai.embed(["a", "b"], model=EMBED)
    ai.count_tokens("x", model=MODEL)
    ai.list_models()
    seen = _seen(emu)
    assert len(seen) == 5
    for req in seen:
        assert key not in req.path and key not in json.dumps(req.query)
        assert req.headers["x-goog-api-key"] == key


@pytest.mark.parametrize("model", ["../admin", "models/a/b", "gemini:generateContent",
                                   "gemini?alt=json", "gemini 2", "models/", "gemini%2Fx"])
def test_a_model_cannot_inject_path_segments(gem, emu, model) -> None:
    ai = gem()
    with pytest.raises(ValueError):
        ai.chat(MSG, model=model)
    assert emu.stats("gemini")["requests"] == 0


def test_a_canary_key_never_leaks(caplog) -> None:
    canary = "AIza-CANARY-7f3a9"
    with HostileServer() as server:
        server.status = 400
        server.body = json.dumps({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                            "message": f"API key not valid: {canary}"}}).encode()
        ai = backend("gemini", base_url=server.url + "/json", api_key=canary,
                     retry=RetryPolicy(max_retries=0))
        with caplog.at_level("DEBUG", logger="ipfs_accelerate_api"), \
                pytest.raises(AuthenticationError) as info:
            ai.chat(MSG, model=MODEL)
        err = info.value
        seen = " ".join([str(err), repr(err), err.message, json.dumps(err.body),
                         json.dumps(err.headers), str(err.args), repr(ai), json.dumps(ai.stats())])
        assert canary not in seen and "[redacted]" in err.message
        assert canary not in caplog.text
        assert all(canary not in path for path, _, _ in server.requests)
        ai.close()


def test_env_prefixes(emu, monkeypatch) -> None:
    for var in ("GEMINI_API_KEY", "GEMINI_API_KEYS", "GOOGLE_API_KEY", "GOOGLE_API_KEYS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-env")
    with backend("google", base_url=emu.base_url("gemini")) as ai:
        ai.list_models()
    assert emu.record("gemini").auth_headers_seen[-1] == {"x-goog-api-key": "AIza-env"}


def test_a_safety_stop_mid_stream_keeps_its_type_and_the_text_so_far() -> None:
    events = [{"candidates": [{"content": {"role": "model", "parts": [{"text": "Once upon "}]}}]},
              {"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "SAFETY"}]}]
    with HostileServer() as server:
        server.ctype = "text/event-stream"
        server.body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        with backend("gemini", base_url=server.url, api_key="k-test",
                     retry=RetryPolicy(max_retries=0)) as ai:
            got = []
            with pytest.raises(ContentFilteredError) as info:
                for chunk in ai.stream_chat(MSG, model=MODEL):
                    got.append(chunk.text)
    assert got == ["Once upon "] and info.value.partial_text == "Once upon "
    assert info.value.reason == "SAFETY"
