"""Hugging Face TGI: the official huggingface_hub client against the emulator, and our backend
end to end (PROTOCOLS.md §6, every gotcha there)."""

from __future__ import annotations

import json

import pytest
import urllib3

from ipfs_accelerate_api import RetryPolicy, backend
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator.tgi import MODEL_ID, tgi_tokens
from ipfs_accelerate_api.errors import (
    APIStatusError,
    AuthenticationError,
    RateLimitError,
    StreamInterrupted,
    UnprocessableEntityError,
    UnsupportedOperation,
)

from .hostile import HostileServer

HI = [{"role": "user", "content": "hi"}]
PROMPT = "My name is"


@pytest.fixture
def make(backends):
    """TGI backends against the emulator, with no key (TGI's default)."""
    return lambda **options: backends("tgi", **{"api_keys": (), **options})


def _sse(events: list[dict]) -> bytes:
    return b"".join(b"data:" + json.dumps(e).encode() + b"\n\n" for e in events)


# -- the official client ------------------------------------------------------------------

@pytest.fixture
def client(emu):
    hub = pytest.importorskip("huggingface_hub")
    return hub.InferenceClient(base_url=emu.base_url("tgi"))


def test_client_text_generation_plain_and_streamed_with_details(client) -> None:
    plain = client.text_generation(PROMPT, max_new_tokens=5, details=True)
    assert plain.details.finish_reason == "length" and plain.details.generated_tokens == 5
    assert "".join(t.text for t in plain.details.tokens) == plain.generated_text
    events = list(client.text_generation(PROMPT, max_new_tokens=5, details=True, stream=True))
    assert "".join(e.token.text for e in events) == plain.generated_text
    assert events[-1].generated_text == plain.generated_text
    assert events[-1].details.input_length == len(tgi_tokens(PROMPT))
    assert all(e.generated_text is None and e.details is None for e in events[:-1])


def test_client_text_generation_without_details_has_none(client) -> None:
    assert isinstance(client.text_generation(PROMPT, max_new_tokens=3), str)
    out = client.text_generation(PROMPT, max_new_tokens=3, details=False, stream=True)
    assert all(isinstance(t, str) for t in out)


def test_client_reads_the_errors_by_their_error_type(client, emu) -> None:
    errors = pytest.importorskip("huggingface_hub").errors
    with pytest.raises(errors.ValidationError, match="strictly positive"):  # 422
        client.text_generation(PROMPT, max_new_tokens=5, temperature=-1.0)
    with pytest.raises(errors.ValidationError):  # in-band, on the 200
        list(client.text_generation(PROMPT, max_new_tokens=5, temperature=0.0, stream=True))


def test_client_reads_injected_faults(client, emu) -> None:
    errors = pytest.importorskip("huggingface_hub").errors
    emu.config("tgi").faults = FaultPlan(script=["424", "429", "stream_error"])
    with pytest.raises(errors.GenerationError):
        client.text_generation(PROMPT, max_new_tokens=5)
    with pytest.raises(errors.OverloadedError):
        client.text_generation(PROMPT, max_new_tokens=5)
    with pytest.raises(errors.GenerationError):
        list(client.text_generation(PROMPT, max_new_tokens=8, stream=True))


def test_client_chat_completion_plain_and_streamed(client) -> None:
    plain = client.chat_completion(HI, max_tokens=20)
    assert plain.model == MODEL_ID and plain.choices[0].message.content
    chunks = list(client.chat_completion(HI, max_tokens=20, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content


# -- our backend: every operation -----------------------------------------------------------

def test_complete_maps_parameters_and_reads_usage_from_details(make, emu) -> None:
    ai = make()
    r = ai.complete(PROMPT, max_tokens=4, temperature=0.7, top_p=0.9, top_k=5, seed=3)
    assert r.finish_reason == "length" and len(r.text.split()) == 4
    assert r.usage.prompt_tokens == len(tgi_tokens(PROMPT))
    assert r.usage.completion_tokens == 4 and r.usage.total_tokens == r.usage.prompt_tokens + 4
    assert r.raw["details"]["generated_tokens"] == 4  # details asked for by default
    assert emu.stats("tgi")["refused"] == {}


def test_stream_complete_text_equals_plain(make) -> None:
    ai = make()
    for params in ({"max_tokens": 4}, {"max_tokens": 200}):
        plain = ai.complete(PROMPT, **params)
        chunks = list(ai.stream_complete(PROMPT, **params))
        assert "".join(c.text for c in chunks) == plain.text
        assert chunks[-1].finish_reason == plain.finish_reason
        assert chunks[-1].usage == plain.usage
        assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])


def test_finish_reasons_are_unified(make) -> None:
    ai = make()
    assert ai.complete(PROMPT, max_tokens=2).finish_reason == "length"
    eos = ai.complete(PROMPT, max_tokens=200)
    assert eos.finish_reason == "stop" and eos.raw["details"]["finish_reason"] == "eos_token"
    # the end-of-sequence token is special: counted, but it adds no text
    assert eos.usage.completion_tokens == len(eos.text.split()) + 1
    second = eos.text.split()[1]
    stopped = ai.complete(PROMPT, max_tokens=200, stop=second)
    assert stopped.finish_reason == "stop" and stopped.raw["details"]["finish_reason"] == \
        "stop_sequence"
    assert stopped.text.endswith(second) and len(stopped.text) < len(eos.text)
    chunks = list(ai.stream_complete(PROMPT, max_tokens=200, stop=[second]))
    assert chunks[-1].finish_reason == "stop" and "".join(c.text for c in chunks) == stopped.text


def test_chat_and_stream_chat_over_the_messages_api(make, emu) -> None:
    ai = make()
    plain = ai.chat(HI, max_tokens=20)
    assert plain.text and plain.model == MODEL_ID and plain.finish_reason in ("stop", "length")
    chunks = list(ai.stream_chat(HI, max_tokens=20))
    assert "".join(c.text for c in chunks) == plain.text
    assert [c.usage for c in chunks if c.usage][-1] == plain.usage
    assert emu.stats("tgi")["by_path"]["/v1/chat/completions"] == 2


def test_info_health_tokenize_and_models(make, emu) -> None:
    ai = make()
    info = ai.info()
    assert info["model_id"] == MODEL_ID and info["max_concurrent_requests"] == 128
    assert info["max_total_tokens"] > info["max_input_tokens"] > 0
    assert ai.health() is True
    emu.services["tgi"].healthy = False
    assert ai.health() is False
    assert ai.tokenize("hello big world") == tgi_tokens("hello big world")
    assert [t["text"] for t in ai.tokenize("hello big world")] == ["hello", " big", " world"]
    assert ai.list_models() == [MODEL_ID]


def test_health_is_false_when_nothing_listens() -> None:
    ai = backend("tgi", base_url="http://127.0.0.1:9")
    try:
        assert ai.health() is False
    finally:
        ai.close()


def test_operations_tgi_does_not_have(make) -> None:
    ai = make()
    with pytest.raises(UnsupportedOperation):
        ai.embed("x", model="m")
    with pytest.raises(UnsupportedOperation):
        ai.generate_image("cat")


def test_base_url_and_key_from_the_environment(emu, monkeypatch) -> None:
    emu.config("tgi").keys = ["hf-secret"]
    monkeypatch.setenv("HF_TGI_API_URL", emu.base_url("tgi"))
    monkeypatch.setenv("HF_TGI_API_KEY", "hf-secret")
    ai = backend("hf_tgi")
    try:
        assert ai.complete(PROMPT, max_tokens=2).text
    finally:
        ai.close()
    assert emu.stats("tgi")["by_key"] == {"hf-secret": 1}


def test_a_wrong_key_gets_the_bare_401(make, emu) -> None:
    emu.config("tgi").keys = ["hf-right"]
    ai = make(api_key="hf-wrong", api_keys=None)
    with pytest.raises(AuthenticationError):
        ai.complete(PROMPT, max_tokens=2)
    assert emu.stats("tgi")["requests"] == 1
    http = urllib3.PoolManager()
    bare = http.request("POST", emu.base_url("tgi") + "/generate", json={"inputs": "x"})
    assert bare.status == 401 and bare.data == b""
    for path in ("/info", "/health", "/v1/models"):  # open without the key
        assert http.request("GET", emu.base_url("tgi") + path).status == 200


# -- errors: 422, 424, 429, in-stream ---------------------------------------------------------

def test_422_validation_is_not_retried(make, emu) -> None:
    ai = make()
    with pytest.raises(UnprocessableEntityError, match="strictly positive") as info:
        ai.complete(PROMPT, max_tokens=2, temperature=0)
    assert info.value.code == "validation" and emu.stats("tgi")["requests"] == 1
    with pytest.raises(UnprocessableEntityError, match="max_new_tokens"):
        ai.complete(PROMPT, max_tokens=10_000)
    with pytest.raises(UnprocessableEntityError, match="stop sequences"):
        ai.complete(PROMPT, stop=["a", "b", "c", "d", "e"])
    assert ai.stats()["retried"] == 0


def test_422_inside_a_stream_is_typed_and_not_retried(make, emu) -> None:
    """TGI sends a stream's validation error as an event on the 200."""
    ai = make()
    with pytest.raises(UnprocessableEntityError, match="strictly positive"):
        list(ai.stream_complete(PROMPT, max_tokens=2, temperature=-1))
    assert emu.stats("tgi")["requests"] == 1 and ai.stats()["retried"] == 0


def _generation_call(stream: bool):
    if stream:
        return lambda ai: list(ai.stream_complete(PROMPT, max_tokens=3))
    return lambda ai: ai.complete(PROMPT, max_tokens=3)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_424_generation_error_is_retried(make, emu, stream) -> None:
    emu.config("tgi").faults = FaultPlan(script=["424"])
    ai = make()
    assert _generation_call(stream)(ai)
    assert ai.stats()["retried"] == 1 and emu.stats("tgi")["requests"] == 2


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_424_generation_error_is_retried_only_once(make, emu, stream) -> None:
    emu.config("tgi").faults = FaultPlan(script=["424", "424", "424"])
    ai = make()  # three retries allowed for other errors
    with pytest.raises(APIStatusError) as info:
        _generation_call(stream)(ai)
    assert info.value.status == 424 and info.value.code == "generation"
    assert emu.stats("tgi")["requests"] == 2 and ai.stats()["retried"] == 1
    assert ai.complete(PROMPT, max_tokens=3).text  # the next request has its own retry


def test_424_inside_a_stream_before_any_text_is_retried_once() -> None:
    """A generation error as a stream's first event counts as the 424 it stands for."""
    error = {"error": "Request failed during generation: boom", "error_type": "generation"}
    with HostileServer() as server:
        server.ctype, server.body = "text/event-stream", _sse([error])
        ai = backend("tgi", base_url=server.url + "/json",
                     retry=RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01))
        try:
            with pytest.raises(APIStatusError, match="boom") as info:
                list(ai.stream_complete("x"))
            assert info.value.status == 424 and ai.stats()["retried"] == 1
        finally:
            ai.close()


def test_429_overloaded_is_retried_after_a_backoff(make, emu) -> None:
    emu.config("tgi").faults = FaultPlan(script=["429", "429"])
    ai = make()
    assert ai.complete(PROMPT, max_tokens=2).text
    stats = ai.stats()
    assert stats["retried"] == 2 and emu.stats("tgi")["sent_429"] == 2
    assert stats["errors"] == {} or "RateLimitError" not in stats["errors"]


def test_max_concurrent_requests_answers_429_overloaded(make, emu) -> None:
    cfg = emu.config("tgi")
    cfg.capacity, cfg.stream_delay = 1, 1.0
    ai = make(retry=RetryPolicy(max_retries=0))
    held = ai.stream_complete(PROMPT, max_tokens=10)  # in flight until it is read or closed
    next(held)
    with pytest.raises(RateLimitError, match="overloaded") as info:
        ai.complete(PROMPT, max_tokens=2)
    assert info.value.code == "overloaded"
    with pytest.raises(RateLimitError):  # a stream's overload comes in-band, on the 200
        list(ai.stream_complete(PROMPT, max_tokens=2))
    raw = urllib3.PoolManager().request("POST", emu.base_url("tgi") + "/generate",
                                        json={"inputs": "x"}, retries=False)
    assert raw.status == 429
    assert json.loads(raw.data) == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert "retry-after" not in raw.headers
    held.close()


def test_a_mid_stream_error_carries_the_text_so_far(make, emu) -> None:
    emu.config("tgi").faults = FaultPlan(script=[None, "stream_error"])
    ai = make()
    full = "".join(c.text for c in ai.stream_complete(PROMPT, max_tokens=8))
    got = []
    with pytest.raises(StreamInterrupted, match="generation") as info:
        for c in ai.stream_complete(PROMPT, max_tokens=8):
            got.append(c.text)
    assert info.value.partial_text == "".join(got) and got
    assert full.startswith(info.value.partial_text)
    assert ai.stats()["retried"] == 0


def test_a_stream_cut_before_its_final_event_is_interrupted(make, emu) -> None:
    emu.config("tgi").faults = FaultPlan(script=["truncate"])
    ai = make()
    with pytest.raises(StreamInterrupted):
        list(ai.stream_complete(PROMPT, max_tokens=8))


def test_data_without_a_space_and_no_done_against_a_raw_server() -> None:
    """Exactly TGI's framing from a server we do not control: ``data:`` with no space, a
    special end-of-sequence token, no ``[DONE]``, connection closed after the last event."""
    events = [
        {"index": 1, "token": {"id": 5, "text": " Deep", "logprob": -1, "special": False},
         "generated_text": None, "details": None},
        {"index": 2, "token": {"id": 2, "text": "</s>", "logprob": -1, "special": True},
         "generated_text": " Deep", "details": {"finish_reason": "eos_token",
                                                 "generated_tokens": 2, "input_length": 3}}]
    with HostileServer() as server:
        server.ctype, server.body = "text/event-stream", _sse(events)
        ai = backend("tgi", base_url=server.url + "/json", retry=RetryPolicy(max_retries=0))
        try:
            chunks = list(ai.stream_complete("x"))
        finally:
            ai.close()
    assert [c.text for c in chunks] == [" Deep", ""]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.total_tokens == 5


def test_chat_finish_reasons_of_older_servers_are_unified() -> None:
    answer = {"model": "m", "choices": [{"index": 0, "finish_reason": "eos_token",
                                         "message": {"role": "assistant", "content": "hi"}}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    with HostileServer() as server:
        server.body = json.dumps(answer).encode()
        ai = backend("tgi", base_url=server.url + "/json", retry=RetryPolicy(max_retries=0))
        try:
            assert ai.chat(HI).finish_reason == "stop"
        finally:
            ai.close()


def test_details_come_only_when_asked(make) -> None:
    """TGI leaves ``details`` out unless asked: the usage then comes from its headers, and a
    stream has no finish reason or usage; the default asks for them."""
    ai = make()
    bare = ai.complete(PROMPT, max_tokens=3, details=False)
    assert "details" not in bare.raw and bare.finish_reason is None
    assert bare.usage.completion_tokens == 3
    assert bare.usage.prompt_tokens == len(tgi_tokens(PROMPT))
    chunks = list(ai.stream_complete(PROMPT, max_tokens=3, details=False))
    assert chunks[-1].raw["details"] is None and chunks[-1].usage is None
    assert "".join(c.text for c in chunks) == bare.text


def test_max_new_tokens_left_out_runs_to_the_end_of_sequence(make) -> None:
    r = make().complete(PROMPT)
    assert r.finish_reason == "stop" and r.raw["details"]["finish_reason"] == "eos_token"
