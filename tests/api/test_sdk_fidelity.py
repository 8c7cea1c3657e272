"""The official openai SDK, as a client of the emulator: proof that it speaks the wire format."""

from __future__ import annotations

import json
from base64 import b64decode
from urllib.request import urlopen

import numpy as np
import pytest

openai = pytest.importorskip("openai")

from ipfs_accelerate_api.emulator import FaultPlan, ServiceConfig  # noqa: E402
from ipfs_accelerate_api.emulator.openai import embedding_for  # noqa: E402


@pytest.fixture
def client(emu):
    return openai.OpenAI(base_url=emu.base_url("openai"), api_key="sk-test", max_retries=0)


def test_chat(client) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r._request_id and r._request_id.startswith("req_")


def test_stream_with_usage(client) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": "hi"}])
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_embeddings_default_base64(client, emu) -> None:
    r = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert [d.index for d in r.data] == [0, 1]
    got = np.array(r.data[1].embedding, dtype=np.float32)
    assert np.allclose(got, embedding_for("beta", 1536, seed=1), atol=1e-6)
    r2 = client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=64,
                                  encoding_format="float")
    assert len(r2.data[0].embedding) == 64


def test_models(client) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_rate_limit_answer(emu) -> None:
    emu.config("openai").rpm = 1
    c = openai.OpenAI(base_url=emu.base_url("openai"), api_key="sk-test", max_retries=0)
    c.models.list()
    with pytest.raises(openai.RateLimitError) as info:
        c.models.list()
    headers = info.value.response.headers
    assert float(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert info.value.body["code"] == "rate_limit_exceeded"


def test_bad_key_is_401(emu) -> None:
    emu.config("openai").keys = ["sk-good"]
    c = openai.OpenAI(base_url=emu.base_url("openai"), api_key="sk-bad", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.models.list()


def test_audio_and_images(client, emu) -> None:
    t = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF1234"))
    assert "8 bytes" in t.text
    verbose = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF1234"),
                                                 response_format="verbose_json",
                                                 timestamp_granularities=["word", "segment"])
    assert verbose.text == t.text and verbose.words and verbose.segments
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input="hello")
    assert speech.content[:2] == b"\xff\xf3"  # an MPEG audio frame
    img = client.images.generate(model="dall-e-3", prompt="a cat", response_format="b64_json")
    assert img.data[0].b64_json
    url = client.images.generate(model="dall-e-3", prompt="a cat").data[0].url
    assert url.startswith(emu.root_url) and b64decode(img.data[0].b64_json) == urlopen(url).read()


TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"timezone": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_date", "parameters": {"type": "object"}}}]
HI = [{"role": "user", "content": "what time is it?"}]


def test_tool_call_stream(client) -> None:
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=HI, tools=TOOLS,
                                           tool_choice="required").choices[0]
    with client.chat.completions.stream(model="gpt-4o-mini", messages=HI, tools=TOOLS,
                                        tool_choice="required") as stream:
        final = stream.get_final_completion().choices[0]
    (call,) = final.message.tool_calls
    assert call.id == plain.message.tool_calls[0].id and call.function.name == "get_time"
    assert call.function.arguments == plain.message.tool_calls[0].function.arguments
    assert "timezone" in json.loads(call.function.arguments)
    assert final.finish_reason == plain.finish_reason == "tool_calls" and not final.message.content
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=HI, tools=TOOLS, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_date"}}))
    assert chunks[0].choices[0].delta.tool_calls[0].function.name == "get_date"


def test_n_choices(client) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=HI, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content != r.choices[1].message.content
    with client.chat.completions.stream(model="gpt-4o-mini", messages=HI, n=2) as stream:
        final = stream.get_final_completion()
    assert [c.message.content for c in final.choices] == [c.message.content for c in r.choices]


def test_refusals_reach_the_sdk_as_the_api_sends_them(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, temperature=3)
    assert (info.value.param, info.value.code) == ("temperature", "decimal_above_max_value")
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=HI)
    assert missing.value.code == "model_not_found"


def test_sdk_sees_in_stream_error(emu) -> None:
    emu.config("openai").faults = FaultPlan(script=["stream_error"])
    c = openai.OpenAI(base_url=emu.base_url("openai"), api_key="sk-test", max_retries=0)
    with pytest.raises(openai.APIError):
        list(c.chat.completions.create(model="gpt-4o-mini", stream=True,
                                       messages=[{"role": "user", "content": "hi"}]))


def test_service_config_validation() -> None:
    with pytest.raises(ValueError):
        FaultPlan(kinds=["explode"])
    assert ServiceConfig().faults.rate == 0
