"""The OpenAI backend end to end, over real HTTP against the emulator."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from ipfs_accelerate_api import Priority, RetryPolicy
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator.openai import embedding_for, reply_text
from ipfs_accelerate_api.errors import (
    AcceleratorError,
    AuthenticationError,
    BadRequestError,
    ClientClosed,
    ConfigurationError,
    NotFoundError,
    ResponseFormatError,
    StreamInterrupted,
    UnsupportedOperation,
)
from ipfs_accelerate_api.types import ChatResponse

from .conftest import MSG


def test_chat_response(make) -> None:
    ai = make()
    r = ai.chat(MSG, model="gpt-4o-mini")
    assert isinstance(r, ChatResponse)
    assert r.text == reply_text("hello there", 1, 16)
    assert r.message.role == "assistant" and r.message.content == r.text
    assert r.finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert r.model == "gpt-4o-mini" and r.request_id.startswith("req_")
    assert r.raw["object"] == "chat.completion"


def test_tool_calls(make) -> None:
    ai = make()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    r = ai.chat(MSG, model="gpt-4o-mini", tools=tools, tool_choice="required")
    assert r.finish_reason == "tool_calls"
    assert r.message.tool_calls[0].name == "lookup"
    assert r.message.tool_calls[0].arguments.startswith("{")


def test_stream_chat_matches_plain(make) -> None:
    ai = make()
    chunks = list(ai.stream_chat(MSG, model="gpt-4o-mini"))
    assert "".join(c.text for c in chunks) == ai.chat(MSG, model="gpt-4o-mini").text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.finish_reason == "stop" for c in chunks)


def test_complete_models_images_audio(make) -> None:
    ai = make()
    assert ai.complete("say hi", model="gpt-4o-mini").text == reply_text("say hi", 1, 16)
    assert "gpt-4o-mini" in ai.list_models()
    png = ai.generate_image("a cat")[0]
    assert png.startswith(b"\x89PNG")
    assert ai.transcribe(b"12345", model="whisper-1") == "transcript of 5 bytes from audio.wav"
    assert ai.transcribe(b"123", model="whisper-1", response_format="text").startswith("transcript")
    assert len(ai.speech("hello")) > 0


def test_embed_order_shape_and_batching(make, emu) -> None:
    ai = make(batch_size=64, batch_timeout=0.05)
    texts = [f"text {i}" for i in range(150)]
    big = ai.embed(texts, model="text-embedding-3-small")
    assert big.shape == (150, 1536) and big.dtype == np.float32
    for i in (0, 77, 149):
        assert np.allclose(big[i], embedding_for(texts[i], 1536, seed=1), atol=1e-6)
    assert emu.stats("openai")["by_path"]["/v1/embeddings"] == 3  # split 64 + 64 + 22
    one = ai.embed("solo", model="text-embedding-3-small")
    assert one.shape == (1, 1536)
    before = emu.stats("openai")["by_path"]["/v1/embeddings"]
    futures = [ai.submit("embed", f"single {i}", model="text-embedding-3-small") for i in range(40)]
    results = [f.result() for f in futures]
    after = emu.stats("openai")["by_path"]["/v1/embeddings"]
    assert after - before < 40  # combined into far fewer requests
    for i, r in enumerate(results):
        assert r.shape == (1, 1536)
        assert np.allclose(r[0], embedding_for(f"single {i}", 1536, seed=1), atol=1e-6)


def test_embed_bad_input(make) -> None:
    ai = make()
    with pytest.raises(ValueError):
        ai.embed([], model="text-embedding-3-small")
    with pytest.raises(TypeError):
        ai.embed([1, 2], model="text-embedding-3-small")


def test_async_forms(make) -> None:
    ai = make()

    async def main():
        return await asyncio.gather(ai.achat(MSG, model="gpt-4o-mini"),
                                    ai.aembed(["a", "b"], model="text-embedding-3-small"),
                                    ai.alist_models())

    chat, emb, models = asyncio.run(main())
    assert chat.text and emb.shape == (2, 1536) and models


def test_unsupported_and_status_errors(make) -> None:
    ai = make()
    with pytest.raises(UnsupportedOperation):
        ai.submit("translate_poetry", "x")
    with pytest.raises(BadRequestError) as info:  # the service refuses it: a typed 400
        ai.embed([""], model="text-embedding-3-small")
    assert info.value.status == 400 and info.value.backend == "openai"
    assert "input" in info.value.message and info.value.request_id
    with pytest.raises(ValueError):
        ai.chat([], model="gpt-4o-mini")


def test_not_found_is_not_retried(make, emu) -> None:
    ai = make(base_url=emu.root_url + "/openai/v2")
    with pytest.raises(NotFoundError):
        ai.list_models()
    assert emu.stats("openai")["requests"] == 1
    assert ai.stats()["retried"] == 0


@pytest.mark.parametrize("kind,error", [
    ("malformed", ResponseFormatError),
    ("bad_utf8", ResponseFormatError),
    ("wrong_shape", ResponseFormatError),
])
def test_malformed_answers_are_typed(make, emu, kind, error) -> None:
    emu.config("openai").faults = FaultPlan(script=[kind])
    ai = make(retry=RetryPolicy(max_retries=0))
    with pytest.raises(error) as info:
        ai.chat(MSG, model="gpt-4o-mini")
    assert isinstance(info.value, AcceleratorError)
    assert info.value.backend == "openai" and info.value.status == 200


@pytest.mark.parametrize("kind", ["truncate", "stream_error", "malformed"])
def test_broken_streams_carry_partial_text(make, emu, kind) -> None:
    emu.config("openai").faults = FaultPlan(script=[kind])
    ai = make(retry=RetryPolicy(max_retries=0))
    got = []
    with pytest.raises(StreamInterrupted) as info:
        for chunk in ai.stream_chat(MSG, model="gpt-4o-mini"):
            got.append(chunk.text)
    assert info.value.partial_text == "".join(got)
    assert isinstance(info.value, ResponseFormatError)


def test_stream_retries_before_first_byte(make, emu) -> None:
    emu.config("openai").faults = FaultPlan(script=["503", "reset"])
    ai = make()
    text = "".join(c.text for c in ai.stream_chat(MSG, model="gpt-4o-mini"))
    assert text == reply_text("hello there", 1, 16)
    assert ai.stats()["retried"] == 2


def test_priority_order_under_saturation(make, emu) -> None:
    emu.config("openai").latency = 0.02
    ai = make(max_concurrency=1)
    order: list[str] = []
    lock = threading.Lock()
    gate = ai.submit("list_models")  # occupies the only worker
    futures = []
    for _ in range(6):
        for name, prio in (("low", Priority.LOW), ("high", Priority.HIGH), ("normal", Priority.NORMAL)):
            f = ai.submit("list_models", priority=prio)
            f.add_done_callback(lambda _f, n=name: (lock.acquire(), order.append(n), lock.release()))
            futures.append(f)
    gate.result()
    for f in futures:
        f.result()
    # Whatever was queued behind the gate is served HIGH, then NORMAL, then LOW.
    assert order == sorted(order, key=["high", "normal", "low"].index)


def test_concurrency_limit_is_never_exceeded(make, emu) -> None:
    emu.config("openai").latency = 0.02
    ai = make(max_concurrency=3)
    futures = [ai.submit("list_models") for _ in range(30)]
    for f in futures:
        f.result()
    assert emu.stats("openai")["peak_concurrency"] == 3


def test_close_resolves_every_future(make, emu) -> None:
    emu.config("openai").latency = 0.02
    ai = make(max_concurrency=1)
    futures = [ai.submit("list_models") for _ in range(20)]
    ai.close()
    outcomes = []
    for f in futures:
        try:
            f.result(timeout=10)
            outcomes.append("ok")
        except ClientClosed:
            outcomes.append("closed")
    assert "closed" in outcomes and len(outcomes) == 20
    with pytest.raises(ClientClosed):
        ai.submit("list_models")


def test_configuration_errors(emu, monkeypatch) -> None:
    from ipfs_accelerate_api import backend

    for var in ("OPENAI_API_KEY", "OPENAI_API_KEYS", "OPENAI_API_KEY_1"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("IPFS_ACCEL_CREDENTIALS", "/nonexistent/creds.json")
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        backend("openai")
    with pytest.raises(ConfigurationError, match="unknown backend"):
        backend("nope")
    with pytest.raises(ConfigurationError, match="base_url"):
        backend("openai", api_key="k", base_url="ftp://x")


def test_auth_error_when_every_key_is_bad(make, emu) -> None:
    emu.config("openai").keys = ["sk-good"]
    ai = make(api_key="sk-bad")
    with pytest.raises(AuthenticationError):
        ai.list_models()
    with pytest.raises(AuthenticationError, match="disabled"):
        ai.list_models()
    assert ai.stats()["keys"]["openai-key-1"]["disabled"].startswith("401")


def test_async_media_forms(make) -> None:
    ai = make()

    async def main():
        return await asyncio.gather(ai.agenerate_image("a dog"), ai.atranscribe(b"abc"),
                                    ai.aspeech("hi"))

    images, text, audio = asyncio.run(main())
    assert images[0].startswith(b"\x89PNG") and text.startswith("transcript") and audio


def test_read_timeout_is_typed(make, emu) -> None:
    from ipfs_accelerate_api import Timeouts
    from ipfs_accelerate_api.errors import APITimeoutError

    emu.config("openai").faults = FaultPlan(script=["timeout"], timeout_delay=1.0)
    ai = make(timeout=Timeouts(connect=1, read=0.2), retry=RetryPolicy(max_retries=0))
    with pytest.raises(APITimeoutError):
        ai.list_models()
    assert ai.list_models()  # the next request is fine


def test_emulator_capacity_limits_concurrency(make, emu) -> None:
    emu.config("openai").latency = 0.01
    emu.config("openai").capacity = 2
    ai = make(max_concurrency=6)
    for f in [ai.submit("list_models") for _ in range(24)]:
        f.result()
    assert emu.stats("openai")["peak_concurrency"] == 2  # served at once; the rest waited


def test_stats_and_request_records(make, emu) -> None:
    records = []
    ai = make(api_keys=["sk-one", "sk-two"], on_request_end=records.append)
    ai.chat(MSG, model="gpt-4o-mini")
    with pytest.raises(BadRequestError):
        ai.embed([""], model="text-embedding-3-small")
    s = ai.stats()
    assert s["backend"] == "openai" and s["submitted"] == 2
    assert s["succeeded"] == 1 and s["failed"] == 1 and s["in_flight"] == 0
    assert s["errors"] == {"BadRequestError": 1}
    assert s["queue_depth"] == {"HIGH": 0, "NORMAL": 0, "LOW": 0}
    assert s["latency"]["count"] == 1 and s["latency"]["p50"] > 0
    assert s["prompt_tokens"] > 0 and s["completion_tokens"] > 0
    assert s["breaker"]["state"] == "CLOSED"
    assert set(s["keys"]) == {"openai-key-1", "openai-key-2"}
    ok, bad = records
    assert ok.ok and ok.operation == "chat" and ok.attempts == 1 and ok.key == "openai-key-1"
    assert not bad.ok and bad.error == "BadRequestError" and bad.key == "openai-key-2"
    assert len({ok.request_id, bad.request_id}) == 2
    assert emu.record("openai").request_ids == [ok.request_id, bad.request_id]


def test_embed_float_answer(make, emu) -> None:
    import json as _json

    import urllib3

    from ipfs_accelerate_api.backends.openai import _float_arrays

    ai = make()
    texts = ["alpha", "beta", "gamma"]
    got = ai.embed(texts, model="text-embedding-3-small", encoding_format="float", dimensions=32)
    assert got.shape == (3, 32) and got.dtype == np.float32
    for i, t in enumerate(texts):
        assert np.array_equal(got[i], embedding_for(t, 32, seed=1))  # float32 exactly
    # The fast reader on the same wire bytes agrees with json, and steps aside for base64.
    body = urllib3.request("POST", emu.base_url("openai") + "/embeddings",
                           headers={"Authorization": "Bearer sk-test"},
                           json={"model": "text-embedding-3-small", "input": texts,
                                 "dimensions": 32}).data
    data, vectors = _float_arrays(body)
    reference = _json.loads(body)["data"]
    assert [d["index"] for d in data["data"]] == [0, 1, 2]
    for vec, ref in zip(vectors, reference):
        assert np.array_equal(vec, np.asarray(ref["embedding"], dtype=np.float32))
    assert _float_arrays(b'{"data": [{"embedding": "AAAA"}]}') is None


def test_transcribe_sends_list_options_as_repeated_fields(make, emu) -> None:
    ai = make()
    text = ai.transcribe(b"12345", model="whisper-1", response_format="verbose_json",
                         timestamp_granularities=["word", "segment"])
    assert text == "transcript of 5 bytes from audio.wav"  # the emulator refuses a JSON-text list
