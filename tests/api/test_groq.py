"""Groq: the official groq SDK against the emulator, and our backend end to end (PROTOCOLS.md §3)."""

from __future__ import annotations

import json

import pytest
import urllib3

from ipfs_accelerate_api import RetryPolicy, backend
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator.groq import groq_duration
from ipfs_accelerate_api.emulator.openai import reply_text
from ipfs_accelerate_api.errors import (
    AuthenticationError,
    ConfigurationError,
    StreamInterrupted,
    UnsupportedOperation,
)

from .conftest import MSG
from .hostile import HostileServer

MODEL = "llama-3.1-8b-instant"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def make(make):
    """Groq backends against the emulator."""
    return lambda **options: make("groq", **options)


# -- the official SDK ---------------------------------------------------------------------

@pytest.fixture
def sdk(emu):
    groq = pytest.importorskip("groq")
    # The SDK's base URL is the host: it adds /openai/v1 to every path itself.
    return groq, groq.Groq(base_url=emu.root_url + "/groq", api_key="gsk-test", max_retries=0)


def test_sdk_chat_and_models(sdk) -> None:
    _, client = sdk
    r = client.chat.completions.create(model=MODEL, messages=HI)
    assert r.choices[0].message.content == reply_text("hi", 1, 16)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.total_time is not None and r.x_groq.id.startswith("req_")
    assert "openai/gpt-oss-20b" in [m.id for m in client.models.list().data]
    assert client.models.retrieve("openai/gpt-oss-20b").id == "openai/gpt-oss-20b"


def test_sdk_stream_usage_is_in_x_groq(sdk) -> None:
    _, client = sdk
    chunks = list(client.chat.completions.create(model=MODEL, messages=HI, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = client.chat.completions.create(model=MODEL, messages=HI)
    assert text == plain.choices[0].message.content
    assert all(c.usage is None for c in chunks)  # not asked for: only x_groq has it
    assert chunks[-1].x_groq.usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[0].x_groq.id == chunks[-1].x_groq.id and chunks[0].x_groq.id.startswith("req_")
    assert all(c.x_groq is None for c in chunks[1:-1])


def test_sdk_sees_groqs_refusals_and_errors(sdk, emu) -> None:
    groq, client = sdk
    with pytest.raises(groq.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=HI, logprobs=True)
    assert info.value.body["error"]["param"] == "logprobs" and "unsupported" in info.value.message
    with pytest.raises(groq.BadRequestError, match="at most 1"):
        client.chat.completions.create(model=MODEL, messages=HI, n=2)
    with pytest.raises(groq.BadRequestError):
        client.audio.transcriptions.create(model="whisper-large-v3", file=("a.wav", b"RIFF"),
                                           response_format="srt")
    with pytest.raises(groq.NotFoundError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    emu.config("groq").keys = ["gsk-good"]
    with pytest.raises(groq.AuthenticationError):
        client.models.list()


def test_sdk_rate_limit_answer(sdk, emu) -> None:
    groq, client = sdk
    emu.config("groq").rpm = 1
    client.models.list()
    with pytest.raises(groq.RateLimitError) as info:
        client.models.list()
    h = info.value.response.headers
    assert int(h["retry-after"]) >= 1 and "retry-after-ms" not in h
    assert h["x-ratelimit-limit-requests"] == "14400"  # the day's budget, not the minute's
    assert "per minute (RPM)" in info.value.message


# -- our backend --------------------------------------------------------------------------

def test_chat_stream_and_usage_from_x_groq(make, emu) -> None:
    ai = make()
    r = ai.chat(MSG, model=MODEL)
    assert r.text == reply_text("hello there", 1, 16) and r.request_id.startswith("req_")
    assert r.raw["x_groq"]["id"] == r.request_id
    chunks = list(ai.stream_chat(MSG, model=MODEL))
    assert "".join(c.text for c in chunks) == r.text
    assert all(c.raw.get("usage") is None for c in chunks)  # no usage chunk was asked for
    assert chunks[-1].usage == r.usage  # read from the last chunk's x_groq.usage
    assert any(c.finish_reason == "stop" for c in chunks)


def test_operations(make, emu) -> None:
    ai = make()
    assert "whisper-large-v3" in ai.list_models()
    assert ai.transcribe(b"12345") == "transcript of 5 bytes from audio.wav"
    assert ai.transcribe(b"1", model="whisper-large-v3", response_format="verbose_json")
    sent = emu.stats("groq")["requests"]
    for call in (lambda: ai.embed(["a"], model="nomic-embed-text-v1_5"),
                 lambda: ai.complete("hi", model=MODEL), lambda: ai.generate_image("a cat"),
                 lambda: ai.speech("hi")):
        with pytest.raises(UnsupportedOperation):
            call()
    assert emu.stats("groq")["requests"] == sent


@pytest.mark.parametrize("params", [
    {"logprobs": True}, {"logprobs": False}, {"top_logprobs": 2}, {"logit_bias": {"1": 5}},
    {"n": 2}, {"messages": [{"role": "user", "content": "hi", "name": "bob"}]},
])
def test_refused_parameters_raise_before_sending(make, emu, params) -> None:
    ai = make()
    kwargs = {"messages": MSG, **params}
    with pytest.raises(ValueError, match="groq"):
        ai.chat(model=MODEL, **kwargs)
    with pytest.raises(ValueError, match="groq"):
        ai.stream_chat(model=MODEL, **kwargs)
    with pytest.raises(ValueError, match="srt"):
        ai.transcribe(b"1", response_format="srt")
    assert emu.stats("groq")["requests"] == 0
    assert ai.chat(MSG, model=MODEL, n=1).text  # n=1 is fine


def test_day_request_budget_never_paces_the_minute(make, emu) -> None:
    ai = make(rpm=6000, max_concurrency=1)
    for _ in range(5):
        ai.list_models()
    # 14395 requests left today would lower a per-minute bucket if read as one; it is not.
    assert ai.stats()["limiter_waits"] == 0


def test_exhausted_day_budget_waits_for_one_request(make, emu) -> None:
    groq_service = emu.services["groq"]
    groq_service.requests_per_day, groq_service.day = 2, 1.0  # a day of one second
    ai = make(rpm=6000, max_concurrency=1)
    for _ in range(3):
        assert ai.list_models()
    s = ai.stats()
    assert emu.stats("groq")["sent_429"] == 0  # the client waited instead of being refused
    assert s["limiter_waits"] >= 1 and s["retried"] == 0
    # The wait is one request's share of the window (0.5 s), not the whole window (1 s).
    assert s["limiter_wait_seconds"] < 0.9


def test_token_headers_are_synced(make, emu) -> None:
    emu.config("groq").tpm = 120_000
    url = emu.base_url("groq") + "/chat/completions"
    # Another client of the same key spent most of this minute's tokens (a body is charged
    # by its size before it is read, so a junk one will do).
    urllib3.request("POST", url, body=b"x" * 4 * 119_800,
                    headers={"Authorization": "Bearer sk-test"})
    ai = make(tpm=120_000, max_concurrency=1)
    ai.chat(MSG, model=MODEL, max_tokens=1000)  # answered with remaining-tokens ~ 150
    ai.chat(MSG, model=MODEL, max_tokens=1000)
    assert ai.stats()["limiter_waits"] >= 1  # paced by the server's count, not its own
    assert emu.stats("groq")["sent_429"] == 0


def test_429_retry_after_is_honoured(make, emu) -> None:
    emu.config("groq").faults = FaultPlan(script=["429"])
    ai = make()
    assert ai.list_models()
    s = ai.stats()
    assert s["retried"] == 1 and s["keys"]["groq-key-1"]["cooldowns"] == 1
    assert emu.stats("groq")["requests"] == 2


def test_5xx_retried_and_401_not(make, emu) -> None:
    emu.config("groq").faults = FaultPlan(script=["500", "503"])
    ai = make()
    assert ai.chat(MSG, model=MODEL).text
    assert ai.stats()["retried"] == 2
    emu.config("groq").keys = ["gsk-good"]
    bad = make(api_key="gsk-bad")
    before = emu.stats("groq")["requests"]
    with pytest.raises(AuthenticationError):
        bad.list_models()
    assert emu.stats("groq")["requests"] == before + 1 and bad.stats()["retried"] == 0


def test_key_pool_rotates_and_env_key(make, emu, monkeypatch) -> None:
    ai = make(api_keys=["gsk-1", "gsk-2", "gsk-3"])
    for _ in range(6):
        ai.list_models()
    assert emu.stats("groq")["by_key"] == {"gsk-1": 2, "gsk-2": 2, "gsk-3": 2}
    for var in ("GROQ_API_KEYS", "GROQ_API_KEY_1"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("IPFS_ACCEL_CREDENTIALS", "/nonexistent/creds.json")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-env")
    with backend("groq", base_url=emu.base_url("groq")) as env_ai:
        env_ai.list_models()
    assert emu.stats("groq")["by_key"]["gsk-env"] == 1
    monkeypatch.delenv("GROQ_API_KEY")
    with pytest.raises(ConfigurationError, match="GROQ_API_KEY"):
        backend("groq")
    with backend("groq", api_key="gsk-x") as default:
        assert default.base_url == "https://api.groq.com/openai/v1"


def test_x_groq_error_ends_the_stream_typed(make) -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "par"}, "finish_reason": None}]}
    stop = {"id": "c", "object": "chat.completion.chunk", "choices": [],
            "x_groq": {"id": "req_1", "error": "over capacity"}}
    with HostileServer() as server:
        server.ctype = "text/event-stream"
        server.body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in (chunk, stop))
        ai = make(base_url=server.url + "/json", retry=RetryPolicy(max_retries=0))
        with pytest.raises(StreamInterrupted, match="over capacity") as info:
            list(ai.stream_chat(MSG, model=MODEL))
    assert info.value.partial_text == "par"


def test_groq_durations() -> None:
    from ipfs_accelerate_api.engine.retry import parse_duration

    for seconds, text in ((179.56, "2m59.56s"), (7.66, "7.66s"), (17280, "4h48m0s"),
                          (0.43, "430ms"), (6, "6s")):
        assert groq_duration(seconds) == text
        assert parse_duration(text) == pytest.approx(seconds)
