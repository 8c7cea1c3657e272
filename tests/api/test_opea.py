"""OPEA (PROTOCOLS.md §9): our backend end to end against the emulator — the ChatQnA
megaservice (plain and its bytes-literal stream), each microservice at its own URL, FastAPI's
422s — and the stream framing's edge cases on a raw server."""

from __future__ import annotations

import json

import numpy as np
import pytest
import urllib3

from ipfs_accelerate_api import RetryPolicy, backend
from ipfs_accelerate_api.backends.opea import bytes_literal
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator.opea import DOCUMENTS, EXTRA_TEXT, STREAM_BYTES, chatqna_answer
from ipfs_accelerate_api.errors import (
    ResponseFormatError,
    ServerError,
    StreamInterrupted,
    UnprocessableEntityError,
    UnsupportedOperation,
)

from .hostile import HostileServer

HI = [{"role": "user", "content": "hi"}]
SERVICES = ("llm", "embedding", "retrieval", "reranking")


@pytest.fixture
def make(backends, emu):
    """OPEA backends with every microservice at the emulator, no key (OPEA's default)."""
    url = emu.base_url("opea")
    return lambda **options: backends("opea", **{"api_keys": (),
                                                 "services": {s: url for s in SERVICES},
                                                 **options})


def _post(emu, path: str, body: dict) -> urllib3.BaseHTTPResponse:
    return urllib3.request("POST", emu.base_url("opea") + path, body=json.dumps(body).encode(),
                           headers={"content-type": "application/json"}, preload_content=True)


# -- the megaservice ------------------------------------------------------------------------

def test_chat_plain_and_stream_agree_with_non_ascii_text_split_across_events(make, emu) -> None:
    ai = make()
    plain = ai.chat(HI)
    assert plain.text == chatqna_answer("hi", 1) and plain.text.endswith(EXTRA_TEXT)
    assert plain.model == "chatqna" and plain.finish_reason == "stop"
    chunks = list(ai.stream_chat(HI))
    assert "".join(c.text for c in chunks) == plain.text
    assert len(chunks) > 3
    assert all(c.text.isprintable() for c in chunks)  # no replacement or half characters
    assert emu.stats("opea")["by_path"]["/v1/chatqna"] == 2


def test_chat_always_sends_stream_since_the_route_defaults_to_true(emu, make) -> None:
    raw = _post(emu, "/v1/chatqna", {"messages": "hi"})  # no ``stream``: a stream comes
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.data.startswith(b"data: b'") and raw.data.endswith(b"data: [DONE]\n\n")
    assert make().chat("hi").text == chatqna_answer("hi", 1)  # a string prompt, plain answer


def test_422_names_the_field_and_is_not_retried(make, emu) -> None:
    ai = make()
    with pytest.raises(UnprocessableEntityError, match="max_tokens") as info:
        ai.chat(HI, max_tokens="lots")
    assert info.value.status == 422 and info.value.body["detail"][0]["loc"] == ["body", "max_tokens"]
    assert ai.stats()["retried"] == 0
    with pytest.raises(UnprocessableEntityError, match="top_k"):
        list(ai.stream_chat(HI, top_k=0))


def test_5xx_is_retried(make, emu) -> None:
    emu.config("opea").faults = FaultPlan(script=["500", "503"])
    ai = make()
    assert ai.chat(HI).text == chatqna_answer("hi", 1)
    assert ai.stats()["retried"] == 2


def test_5xx_gives_up_typed_after_the_retries(make, emu) -> None:
    emu.config("opea").faults = FaultPlan(script=["500", "500"])
    with pytest.raises(ServerError, match="error"):
        make(retry=RetryPolicy(max_retries=1, base_delay=0.001)).chat(HI)


def test_mid_stream_cut_raises_stream_interrupted_with_the_text_so_far(make, emu) -> None:
    emu.config("opea").faults = FaultPlan(script=["truncate"])
    ai = make()
    got = []
    with pytest.raises(StreamInterrupted) as info:
        for c in ai.stream_chat(HI):
            got.append(c.text)
    assert info.value.partial_text == "".join(got)
    assert chatqna_answer("hi", 1).startswith(info.value.partial_text)
    assert len(info.value.partial_text.encode()) == 2 * STREAM_BYTES


def test_a_stream_that_stops_without_done_is_interrupted(make, emu) -> None:
    emu.config("opea").faults = FaultPlan(script=["stream_error"])
    with pytest.raises(StreamInterrupted, match="terminator"):
        list(make().stream_chat(HI))


# -- the microservices ------------------------------------------------------------------------

def test_llm_microservice_chat_and_stream_via_llm(make, emu) -> None:
    ai = make()
    plain = ai.chat(HI, via="llm", max_tokens=6)
    assert plain.text and plain.model == "Intel/neural-chat-7b-v3-3"
    streamed = "".join(c.text for c in ai.stream_chat(HI, via="llm", max_tokens=6))
    assert streamed == plain.text
    assert ai.chat("hi", via="llm", max_tokens=6).text == plain.text  # a string prompt
    assert emu.stats("opea")["by_path"]["/v1/chat/completions"] == 3
    with pytest.raises(ValueError, match="via"):
        ai.chat(HI, via="nope")


def test_embed(make) -> None:
    vectors = make().embed(["a", "b", "a"])
    assert vectors.shape == (3, 256) and vectors.dtype == np.float32
    assert np.allclose(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])


def test_retrieve_embeds_first_when_no_embedding_is_given(make, emu) -> None:
    ai = make()
    docs = ai.retrieve("what is OPEA?", k=3)
    assert len(docs) == 3 and set(docs) <= set(DOCUMENTS)
    assert emu.stats("opea")["by_path"]["/v1/embeddings"] == 1
    given = ai.retrieve("what is OPEA?", embedding=ai.embed("what is OPEA?")[0], k=3)
    assert given == docs
    with pytest.raises(ValueError, match="k must"):
        ai.retrieve("q", embedding=[1.0], k=0)


def test_rerank_maps_texts_back_to_indices_best_first(make) -> None:
    texts = ["a", "OPEA is an AI platform", "b", "a"]
    ranked = make().rerank("what is OPEA?", texts, top_n=4)
    assert sorted(i for i, _ in ranked) == [0, 1, 2, 3]  # duplicates map to distinct indices
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    assert len(make().rerank("q", texts)) == 1  # top_n defaults to 1


def test_health_of_each_service(make, emu) -> None:
    ai = make()
    assert ai.health() and all(ai.health(s) for s in SERVICES)
    down = make(services={"llm": "http://127.0.0.1:9"})
    assert down.health("llm") is False


def test_default_microservice_urls_are_the_host_on_their_ports() -> None:
    ai = backend("opea", base_url="http://opea.internal:8888", api_keys=())
    try:
        assert ai.services == {"llm": "http://opea.internal:9000",
                               "embedding": "http://opea.internal:6000",
                               "retrieval": "http://opea.internal:7000",
                               "reranking": "http://opea.internal:8000"}
        with pytest.raises(UnsupportedOperation):
            ai.complete("x")
    finally:
        ai.close()
    with pytest.raises(ValueError, match="unknown services"):
        backend("opea", services={"vectors": "http://x"})


def test_emulator_unions_dispatch_on_the_keys_present(emu) -> None:
    vec = [1.0] * 8
    doc = json.loads(_post(emu, "/v1/retrieval", {"text": "q", "embedding": vec, "k": 2}).data)
    assert doc["initial_query"] == "q" and len(doc["retrieved_docs"]) == 2
    req = json.loads(_post(emu, "/v1/retrieval", {"input": "q", "embedding": vec}).data)
    assert "initial_query" not in req and "metadata" in req["retrieved_docs"][0]
    searched = json.loads(_post(emu, "/v1/reranking", {
        "initial_query": "q", "retrieved_docs": [{"text": "x"}, {"text": "y"}]}).data)
    assert searched["query"] == "q" and len(searched["documents"]) == 1
    bad = _post(emu, "/v1/reranking", {"input": "q"})
    assert bad.status == 422 and json.loads(bad.data)["detail"][0]["loc"] == ["body", "retrieved_docs"]


# -- the bytes-literal framing on a raw server ------------------------------------------------

def _framed(*pieces: bytes, done: bool = True) -> bytes:
    out = b"".join(b"data: " + repr(p).encode() + b"\n\n" for p in pieces)
    return out + (b"data: [DONE]\n\n" if done else b"")


def _stream_text(body: bytes) -> str:
    with HostileServer() as server:
        server.ctype, server.body = "text/event-stream", body
        ai = backend("opea", base_url=server.url + "/json", api_keys=(),
                     retry=RetryPolicy(max_retries=0))
        try:
            return "".join(c.text for c in ai.stream_chat(HI))
        finally:
            ai.close()


def test_framing_escapes_quotes_and_a_character_split_across_events() -> None:
    euro = "€".encode()  # b'\xe2\x82\xac'
    body = _framed(b"price: ", euro[:1], euro[1:], b" it's", b' "q"', b" back\\slash",
                   b"\ttab\n", "日本".encode())
    assert b"\\xe2" in body and b"\\'" not in body.split(b"it's")[0]
    assert _stream_text(body) == 'price: € it\'s "q" back\\slash\ttab\n日本'
    both = b"data: b'it\\'s \"both\"'\n\n" + b"data: [DONE]\n\n"  # repr escapes ' when both occur
    assert _stream_text(both) == 'it\'s "both"'
    assert _stream_text(b"data:b' no space'\r\n\r\ndata: [DONE]\r\n\r\n") == " no space"


def test_framing_errors_are_typed() -> None:
    with pytest.raises(ResponseFormatError, match="bytes literal"):
        _stream_text(b"data: hello\n\ndata: [DONE]\n\n")
    with pytest.raises(StreamInterrupted):  # a character left unfinished at [DONE]
        _stream_text(_framed(b"ok ", "€".encode()[:2]))
    with pytest.raises(StreamInterrupted, match="terminator"):
        _stream_text(_framed(b"a", b"b", done=False))


@pytest.mark.parametrize("data, expected", [
    ("b'abc'", b"abc"), ('b"it\'s"', b"it's"), ("b'\\xe2\\x82\\xac'", "€".encode()),
    ("b'\\\\'", b"\\"), ("b''", b""),
])
def test_bytes_literal(data: str, expected: bytes) -> None:
    assert bytes_literal(data) == expected


@pytest.mark.parametrize("data", ["'abc'", "b'abc", "x'abc'", "b'a' + b'b'", "u'x'", "b", "",
                                  "b'\\x'", "(b'a',)"])
def test_bytes_literal_refuses_anything_else(data: str) -> None:
    with pytest.raises(ResponseFormatError):
        bytes_literal(data)
