"""Fuzzing the readers and the response parsers: only the package's typed errors, never another
exception, never wrong data, never a hang.

- The SSE and NDJSON readers get arbitrary bytes split at arbitrary points: every split gives
  the same events (and the same error, if any), and the only error is ``ResponseFormatError``.
- Every backend's response parsers get answers from a real local server in which one field
  (at any depth) is replaced by an arbitrary JSON value or removed, or which are arbitrary
  JSON altogether. A later backend joins by adding rows to ``PARSERS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ipfs_accelerate_api as ia
from ipfs_accelerate_api import BreakerPolicy, RetryPolicy
from ipfs_accelerate_api.errors import AcceleratorError, ResponseFormatError
from ipfs_accelerate_api.transport import iter_ndjson, iter_sse
from ipfs_accelerate_api.types import ChatChunk, ChatResponse, CompletionResponse, Usage

from .hostile import HostileServer

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- the readers -----------------------------------------------------------------------------

SSE_PIECES = [b"data: ", b"data:", b"event: x\n", b"id: 7\n", b"retry: 12\n", b"retry: \xc2\xb2\n",
              b": comment\n", b"\n", b"\r\n", b"\r", b'{"a": 1}', b"[DONE]", b"h\xc3\xa9", b"\xff",
              b"\xe2\x82", b"\xac", b"field-without-colon\n", b"data", b" "]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, start = [], 0
    for p in points:
        out.append(data[start:p])
        start = p
    out.append(data[start:])
    return out


def _read(reader: Callable[[Any], Any], chunks: list[bytes]) -> tuple[list[Any], str | None]:
    events = []
    try:
        for ev in reader(iter(chunks)):
            events.append(ev)
    except ResponseFormatError as exc:
        return events, type(exc).__name__
    return events, None


stream_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(SSE_PIECES), max_size=40).map(b"".join),
)


@FUZZ
@given(data=stream_bytes, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_sse_reader_is_split_invariant_and_typed(data: bytes, cuts: list[int]) -> None:
    whole = _read(iter_sse, [data])
    assert _read(iter_sse, _split(data, cuts)) == whole
    assert _read(iter_sse, [data[i:i + 1] for i in range(len(data))]) == whole
    for ev in whole[0]:
        assert isinstance(ev.data, str) and isinstance(ev.event, str)
        assert ev.retry is None or (isinstance(ev.retry, int) and ev.retry >= 0)


ndjson_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b'{"a": 1}', b"[1, 2]", b"\n", b"\r\n", b" ", b"{", b"}", b"null",
                              b'"x"', b"\xff", b"1e400", b"NaN", b"\r"]), max_size=40).map(b"".join),
)


@FUZZ
@given(data=ndjson_bytes, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_ndjson_reader_is_split_invariant_and_typed(data: bytes, cuts: list[int]) -> None:
    whole = _read(iter_ndjson, [data])
    assert _read(iter_ndjson, _split(data, cuts)) == whole


# -- the response parsers ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

_REMOVE = object()


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = dict(value)
        if not rest and new is _REMOVE:
            out.pop(head, None)
        else:
            out[head] = _replace(value[head], rest, new)
        return out
    out_list = list(value)
    if not rest and new is _REMOVE:
        del out_list[head]
    else:
        out_list[head] = _replace(value[head], rest, new)
    return out_list


@st.composite
def mutated(draw: Any, template: Any) -> Any:
    """``template`` with one field replaced by an arbitrary JSON value or removed."""
    path = draw(st.sampled_from(_paths(template)))
    new = draw(st.one_of(json_values, st.just(_REMOVE))) if path else draw(json_values)
    return _replace(template, path, new)


def _usage_ok(u: Usage | None) -> None:
    if u is not None:
        for n in (u.prompt_tokens, u.completion_tokens, u.total_tokens):
            assert type(n) is int and n >= 0


def _chat_ok(r: ChatResponse) -> None:
    assert isinstance(r.text, str) and isinstance(r.message.role, str)
    assert r.finish_reason is None or isinstance(r.finish_reason, str)
    assert r.model is None or isinstance(r.model, str)
    for t in r.message.tool_calls:
        assert all(isinstance(x, str) for x in (t.id, t.name, t.arguments, t.type))
    _usage_ok(r.usage)


def _complete_ok(r: CompletionResponse) -> None:
    assert isinstance(r.text, str)
    assert r.finish_reason is None or isinstance(r.finish_reason, str)
    _usage_ok(r.usage)


def _embed_ok(r: np.ndarray) -> None:
    assert isinstance(r, np.ndarray) and r.dtype == np.float32 and r.ndim == 2 and r.shape[0] == 2
    assert r.shape[1] >= 1


def _stream_ok(chunks: list[ChatChunk]) -> None:
    for c in chunks:
        assert isinstance(c, ChatChunk) and isinstance(c.text, str)
        assert c.finish_reason is None or isinstance(c.finish_reason, str)
        assert all(isinstance(t, dict) for t in c.tool_calls)
        _usage_ok(c.usage)


def _sse(chunks: list[Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _gemini_sse(chunks: list[Any]) -> bytes:
    """Gemini's framing: data-only events and no terminator."""
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)


def _tgi_sse(events: list[Any]) -> bytes:
    """TGI's framing: ``data:`` with no space, no terminator."""
    return b"".join(b"data:" + json.dumps(e).encode() + b"\n\n" for e in events)


def _tokens_ok(r: list[dict[str, Any]]) -> None:
    assert isinstance(r, list)
    for t in r:
        assert type(t["id"]) is int and isinstance(t["text"], str)
        assert type(t["start"]) is int and type(t["stop"]) is int


GEMINI_USAGE = {"promptTokenCount": 1, "candidatesTokenCount": 2, "totalTokenCount": 3}
def _named_sse(events: list[Any]) -> bytes:
    """Anthropic's framing: each event named by its ``type`` (``message`` when it has none)."""
    out = b""
    for e in events:
        name = e.get("type") if isinstance(e, dict) else None
        name = name if isinstance(name, str) and name.isprintable() and name.strip() else "message"
        out += b"event: " + name.encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n"
    return out



def _ndjson(lines: list[Any]) -> bytes:
    """Ollama's framing: one JSON value a line, no terminator."""
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def _bytes_sse(pieces: list[Any]) -> bytes:
    """OPEA's megaservice framing: ``data: b'...'`` (a bytes repr) per string, ``[DONE]``;
    a value that is not a string is written as JSON (a foreign event)."""
    return b"".join(b"data: " + (repr(p.encode()).encode() if isinstance(p, str)
                                 else json.dumps(p).encode()) + b"\n\n"
                    for p in pieces) + b"data: [DONE]\n\n"


OLLAMA_STATS = {"prompt_eval_count": 1, "eval_count": 2, "total_duration": 9, "eval_duration": 5}


B64 = "AACAPwAAAEA="  # float32 [1.0, 2.0]
MSG = [{"role": "user", "content": "hi"}]


def _infer_ok(r: Any) -> None:
    """A KServe answer: arrays of a KServe dtype whose shape the answer declared."""
    from ipfs_accelerate_api.backends.ovms import DATATYPES

    if not isinstance(r, dict) or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype in DATATYPES.values()
            for k, v in r.items()):
        pytest.fail(f"not a dict of KServe tensors: {r!r:.200}")


def _llvm_result_ok(r: Any) -> None:
    """An LLVM answer: an output (any JSON value), counts, the model's name or None."""
    from ipfs_accelerate_api.backends.llvm import InferResult

    if not isinstance(r, InferResult) or (r.model is not None and not isinstance(r.model, str)):
        pytest.fail(f"not an InferResult: {r!r:.200}")
    _usage_ok(r.usage)


@dataclass
class Row:
    """One response parser: a valid answer to mutate, the call that reads it, and what a
    successful result must look like."""

    backend: str
    name: str
    template: Any
    call: Callable[[Any], Any]
    check: Callable[[Any], None]
    ctype: str = "application/json"
    encode: Callable[[Any], bytes] = lambda v: json.dumps(v).encode()


PARSERS = [
    Row("openai", "chat", {
        "id": "c", "model": "gpt", "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "hi", "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
        lambda ai: ai.chat(MSG, model="m"), _chat_ok),
    Row("openai", "complete", {
        "model": "gpt", "choices": [{"text": "hi", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
        lambda ai: ai.complete("hi", model="m"), _complete_ok),
    Row("openai", "embed-float", {
        "data": [{"index": 0, "embedding": [0.5, 1.5]}, {"index": 1, "embedding": [2.5, 3.5]}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2}},
        lambda ai: ai.embed(["a", "b"], model="m", encoding_format="float"), _embed_ok),
    Row("openai", "embed-base64", {
        "data": [{"index": 0, "embedding": B64}, {"index": 1, "embedding": B64}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2}},
        lambda ai: ai.embed(["a", "b"], model="m"), _embed_ok),
    Row("openai", "list_models", {"data": [{"id": "a", "object": "model"}, {"id": "b"}]},
        lambda ai: ai.list_models(),
        lambda r: (isinstance(r, list) and all(isinstance(x, str) for x in r)) or pytest.fail()),
    Row("openai", "generate_image", {"data": [{"b64_json": "aGk="}, {"url": "http://x/y.png"}]},
        lambda ai: ai.generate_image("cat"),
        lambda r: all(isinstance(x, (bytes, str)) for x in r) or pytest.fail()),
    Row("openai", "transcribe", {"text": "hello"}, lambda ai: ai.transcribe(b"RIFF"),
        lambda r: isinstance(r, str) or pytest.fail()),
    Row("openai", "stream_chat", [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "hel", "tool_calls": [
            {"index": 0, "id": "t", "function": {"name": "f", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}],
        lambda ai: list(ai.stream_chat(MSG, model="m")), _stream_ok,
        ctype="text/event-stream", encode=_sse),
    Row("groq", "stream_chat", [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
         "x_groq": {"id": "req_1"}},
        {"choices": [{"index": 0, "delta": {"content": "hel"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "x_groq": {
            "id": "req_1", "seed": 3, "error": None, "usage": {
                "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "total_time": 0.1}}}],
        lambda ai: list(ai.stream_chat(MSG, model="m")), _stream_ok,
        ctype="text/event-stream", encode=_sse),
    Row("gemini", "chat", {
        "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
            {"text": "hi"}, {"functionCall": {"name": "f", "args": {"x": 1}}}]}}],
        "promptFeedback": {"blockReason": None},
        "usageMetadata": GEMINI_USAGE, "modelVersion": "g", "responseId": "r"},
        lambda ai: ai.chat(MSG, model="m"), _chat_ok),
    Row("gemini", "complete", {
        "candidates": [{"finishReason": "MAX_TOKENS", "content": {"parts": [{"text": "hi"}]}}],
        "usageMetadata": GEMINI_USAGE},
        lambda ai: ai.complete("hi", model="m"), _complete_ok),
    Row("gemini", "embed-one", {"embedding": {"values": [0.5, 1.5]}},
        lambda ai: ai.embed("a", model="m"),
        lambda r: (isinstance(r, np.ndarray) and r.shape[0] == 1 and r.dtype == np.float32)
        or pytest.fail()),
    Row("gemini", "embed-batch", {"embeddings": [{"values": [0.5, 1.5]}, {"values": [2.5, 3]}]},
        lambda ai: ai.embed(["a", "b"], model="m"), _embed_ok),
    Row("gemini", "count_tokens", {"totalTokens": 3, "promptTokensDetails": []},
        lambda ai: ai.count_tokens("hi", model="m"),
        lambda r: (type(r) is int and r >= 0) or pytest.fail()),
    Row("gemini", "list_models", {"models": [{"name": "models/a"}, {"name": "b"}]},
        lambda ai: ai.list_models(),
        lambda r: (isinstance(r, list) and all(isinstance(x, str) for x in r)) or pytest.fail()),
    Row("gemini", "stream_chat", [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "hel"}]}}],
         "usageMetadata": {"promptTokenCount": 1}},
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}}]},
        {"candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
         "usageMetadata": GEMINI_USAGE}],
        lambda ai: list(ai.stream_chat(MSG, model="m")), _stream_ok,
        ctype="text/event-stream", encode=_gemini_sse),
    Row("claude", "chat", {
        "id": "msg", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "text", "text": "hi"},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 3}},
        lambda ai: ai.chat(MSG, model="m"), _chat_ok),
    Row("claude", "count_tokens", {"input_tokens": 12},
        lambda ai: ai.count_tokens(MSG, model="m"),
        lambda r: (type(r) is int and r >= 0) or pytest.fail()),
    Row("claude", "list_models", {"data": [{"type": "model", "id": "a"}, {"id": "b"}],
                                  "has_more": False},
        lambda ai: ai.list_models(),
        lambda r: (isinstance(r, list) and all(isinstance(x, str) for x in r)) or pytest.fail()),
    Row("claude", "stream_chat", [
        {"type": "message_start", "message": {"id": "m", "role": "assistant", "content": [],
                                              "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"a": '}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": "1}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 7}},
        {"type": "message_stop"}],
        lambda ai: list(ai.stream_chat(MSG, model="m")), _stream_ok,
        ctype="text/event-stream", encode=_named_sse),
    Row("tgi", "complete", {
        "generated_text": " hi", "details": {
            "finish_reason": "eos_token", "generated_tokens": 2, "seed": None, "prefill": [],
            "tokens": [{"id": 1, "text": " hi", "logprob": -0.1, "special": False}]}},
        lambda ai: ai.complete("hi"), _complete_ok),
    Row("tgi", "stream_complete", [
        {"index": 1, "token": {"id": 1, "text": " hi", "logprob": -0.1, "special": False},
         "generated_text": None, "details": None},
        {"index": 2, "token": {"id": 2, "text": "</s>", "logprob": -0.1, "special": True},
         "generated_text": " hi", "details": {"finish_reason": "length", "generated_tokens": 2,
                                             "seed": None, "input_length": 1}}],
        lambda ai: list(ai.stream_complete("hi")), _stream_ok,
        ctype="text/event-stream", encode=_tgi_sse),
    Row("tgi", "chat", {
        "id": "c", "model": "tgi", "choices": [{"index": 0, "finish_reason": "eos_token",
                                                "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
        lambda ai: ai.chat(MSG), _chat_ok),
    Row("tgi", "stream_chat", [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "eos_token"}]},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}],
        lambda ai: list(ai.stream_chat(MSG)), _stream_ok,
        ctype="text/event-stream", encode=_sse),
    Row("tgi", "tokenize", [{"id": 1, "text": "hi", "start": 0, "stop": 2}],
        lambda ai: ai.tokenize("hi"), _tokens_ok),
    Row("tgi", "info", {"model_id": "m", "max_concurrent_requests": 128},
        lambda ai: ai.info(), lambda r: isinstance(r, dict) or pytest.fail()),
    Row("ollama", "chat", {
        "model": "m", "created_at": "2025-01-01T00:00:00Z", "message": {
            "role": "assistant", "content": "hi", "tool_calls": [
                {"function": {"name": "f", "arguments": {"x": 1}}}]},
        "done": True, "done_reason": "stop", **OLLAMA_STATS},
        lambda ai: ai.chat(MSG, model="m"), _chat_ok),
    Row("ollama", "complete", {"model": "m", "response": "hi", "done": True,
                               "done_reason": "length", "context": [1, 2], **OLLAMA_STATS},
        lambda ai: ai.complete("hi", model="m"), _complete_ok),
    Row("ollama", "embed", {"model": "m", "embeddings": [[0.5, 1.5], [2.5, 3.5]],
                            "prompt_eval_count": 2},
        lambda ai: ai.embed(["a", "b"], model="m"), _embed_ok),
    Row("ollama", "list_models", {"models": [{"name": "a:latest", "model": "a:latest"},
                                             {"name": "b"}]},
        lambda ai: ai.list_models(),
        lambda r: (isinstance(r, list) and all(isinstance(x, str) for x in r)) or pytest.fail()),
    Row("ollama", "running_models", {"models": [{"name": "a:latest", "size_vram": 1}]},
        lambda ai: ai.running_models(),
        lambda r: all(isinstance(m["name"], str) for m in r) or pytest.fail()),
    Row("ollama", "version", {"version": "0.12.6"}, lambda ai: ai.version(),
        lambda r: isinstance(r, str) or pytest.fail()),
    Row("ollama", "stream_chat", [
        {"model": "m", "message": {"role": "assistant", "content": "hel"}, "done": False},
        {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "f", "arguments": {}}}]}, "done": False},
        {"model": "m", "message": {"role": "assistant", "content": "lo"}, "done": False},
        {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
         "done_reason": "stop", **OLLAMA_STATS}],
        lambda ai: list(ai.stream_chat(MSG, model="m")), _stream_ok,
        ctype="application/x-ndjson", encode=_ndjson),
    Row("ollama", "stream_complete", [
        {"model": "m", "response": "hel", "done": False},
        {"model": "m", "response": "", "done": True, "done_reason": "length", **OLLAMA_STATS}],
        lambda ai: list(ai.stream_complete("hi", model="m")), _stream_ok,
        ctype="application/x-ndjson", encode=_ndjson),
    Row("ollama", "pull_model", [
        {"status": "pulling manifest"},
        {"status": "pulling abc", "digest": "sha256:abc", "total": 10, "completed": 5},
        {"status": "success"}],
        lambda ai: ai.pull_model("m"), lambda r: isinstance(r, dict) or pytest.fail(),
        ctype="application/x-ndjson", encode=_ndjson),
    Row("tei", "embed", [[0.5, 1.5], [2.5, 3.5]], lambda ai: ai.embed(["a", "b"]), _embed_ok),
    Row("tei", "embed-openai", {
        "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": B64},
                                   {"object": "embedding", "index": 1, "embedding": [2.5, 3.5]}],
        "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}},
        lambda ai: ai.embed(["a", "b"], route="openai"), _embed_ok),
    Row("tei", "embed_sparse", [[{"index": 3, "value": 0.5}], [{"index": 9, "value": 1.5}]],
        lambda ai: ai.embed_sparse(["a", "b"]),
        lambda r: (len(r) == 2 and all(type(k) is int and type(v) is float
                                       for d in r for k, v in d.items())) or pytest.fail()),
    Row("tei", "rerank", [{"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}],
        lambda ai: ai.rerank("q", ["a", "b"]),
        lambda r: (all(type(i) is int and 0 <= i < 2 and type(s) is float for i, s in r)
                   and [s for _, s in r] == sorted((s for _, s in r), reverse=True))
        or pytest.fail()),
    Row("tei", "predict", [[{"label": "a", "score": 0.9}], [{"label": "b", "score": 0.1}]],
        lambda ai: ai.predict(["x", "y"]),
        lambda r: (len(r) == 2 and all(type(lab) is str and type(s) is float
                                       for row in r for lab, s in row)) or pytest.fail()),
    Row("tei", "tokenize", [[{"id": 101, "text": "[CLS]", "special": True, "start": 0, "stop": 0},
                             {"id": 7, "text": "a", "special": False, "start": 0, "stop": 1}]],
        lambda ai: ai.tokenize(["a"]),
        lambda r: (len(r) == 1 and all(type(t["id"]) is int for t in r[0])) or pytest.fail()),
    Row("tei", "info", {"model_id": "m", "max_client_batch_size": 32},
        lambda ai: ai.info(), lambda r: isinstance(r, dict) or pytest.fail()),
    Row("ovms", "infer", {"model_name": "m", "model_version": "1", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.5]},
        {"name": "n", "datatype": "INT64", "shape": [2], "data": [[1], [2]]},
        {"name": "b", "datatype": "BOOL", "shape": [1], "data": [True]},
        {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]},
        lambda ai: ai.infer("m", {"x": np.zeros((1, 2), np.float32)}), _infer_ok),
    Row("ovms", "model_metadata", {"name": "m", "versions": ["1"], "platform": "OpenVINO",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]},
        lambda ai: ai.model_metadata("m"), lambda r: isinstance(r, dict) or pytest.fail()),
    Row("ovms", "model_status", {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]},
        lambda ai: ai.model_status("m"), lambda r: isinstance(r, list) or pytest.fail()),
    Row("opea", "chat", {
        "id": "c", "object": "chat.completion", "model": "chatqna", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi €"},
             "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0}},
        lambda ai: ai.chat(MSG), _chat_ok),
    Row("opea", "stream_chat", [" it's", ' "q" ', "\u20ac \\ 日本", "\U0001f680"],
        lambda ai: list(ai.stream_chat(MSG)), _stream_ok,
        ctype="text/event-stream", encode=_bytes_sse),
    Row("opea", "embed", {
        "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 1.5]},
                                   {"object": "embedding", "index": 1, "embedding": [2.5, 3.5]}],
        "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}},
        lambda ai: ai.embed(["a", "b"]), _embed_ok),
    Row("opea", "retrieve", {"id": "r", "retrieved_docs": [{"id": "1", "text": "doc"}],
                             "initial_query": "q", "top_n": 1},
        lambda ai: ai.retrieve("q", embedding=[0.5, 1.5]),
        lambda r: (isinstance(r, list) and all(isinstance(x, str) for x in r)) or pytest.fail()),
    Row("opea", "rerank", {"id": "r", "reranked_docs": [{"text": "b", "score": 0.9},
                                                         {"text": "a", "score": 0.1}]},
        lambda ai: ai.rerank("q", ["a", "b"], top_n=2),
        lambda r: (all(type(i) is int and 0 <= i < 2 and type(s) is float for i, s in r)
                   and [s for _, s in r] == sorted((s for _, s in r), reverse=True))
        or pytest.fail()),
    Row("llvm", "infer", {"model": "m", "output": "hi", "usage": {"input_tokens": 1,
                                                                "output_tokens": 2}},
        lambda ai: ai.infer("m", "hi"), _llvm_result_ok),
    Row("llvm", "batch_infer", {"model": "m", "results": [
        {"index": 0, "output": [0.5, 1.5], "usage": {"input_tokens": 1, "output_tokens": 0}},
        {"index": 1, "error": {"message": "no", "type": "validation_error", "param": "inputs[1]"}}],
        "usage": {"input_tokens": 1, "output_tokens": 0}},
        lambda ai: ai.batch_infer("m", ["a", "b"], return_exceptions=True),
        lambda r: (len(r) == 2 and all(isinstance(x, AcceleratorError) or _llvm_result_ok(x)
                                       is None for x in r)) or pytest.fail()),
    Row("llvm", "list_models", {"models": [{"id": "a", "type": "embedding", "status": "ready"}]},
        lambda ai: ai.list_models(details=True),
        lambda r: all(isinstance(m[k], str) for m in r for k in ("id", "type", "status"))
        or pytest.fail()),
    Row("llvm", "model_info", {"id": "a", "type": "embedding", "status": "ready",
                               "parameters": {"dimensions": 2}},
        lambda ai: ai.model_info("a"),
        lambda r: isinstance(r["parameters"], dict) or pytest.fail()),
    Row("llvm", "model_statistics", {"model": "a", "requests": 1, "inputs": 2, "input_tokens": 3,
                                     "output_tokens": 4, "errors": 0},
        lambda ai: ai.model_statistics("a"),
        lambda r: all(type(r[k]) is int and r[k] >= 0 for k in
                      ("requests", "inputs", "input_tokens", "output_tokens", "errors"))
        or pytest.fail()),
    Row("llvm", "optimize", {"model": "a", "optimization_type": "speed", "status": "optimized"},
        lambda ai: ai.optimize("a", "speed"),
        lambda r: all(isinstance(r[k], str) for k in ("model", "optimization_type", "status"))
        or pytest.fail()),
]

#: The microservices of a backend that has several servers, all at the fuzzing server.
SERVICE_URLS = {"opea": ("llm", "embedding", "retrieval", "reranking")}


@pytest.fixture(scope="module")
def server():
    with HostileServer() as s:
        yield s


@pytest.fixture(scope="module")
def clients(server):
    made: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in made:
            extra = ({"services": {s: server.url + "/json" for s in SERVICE_URLS[name]}}
                     if name in SERVICE_URLS else {})
            made[name] = ia.backend(name, base_url=server.url + "/json", api_key="sk-fuzz", **extra,
                                    retry=RetryPolicy(max_retries=0), batch_timeout=0,
                                    breaker=BreakerPolicy(failure_threshold=10 ** 9))
            # batch_timeout=0: one call, one request (no limits read first), one answer parsed
        return made[name]

    yield get
    for b in made.values():
        b.close()


def _run(row: Row, server: HostileServer, clients: Any, answer: Any) -> None:
    try:
        server.body = row.encode(answer)
    except (ValueError, TypeError):
        return
    server.ctype = row.ctype
    ai = clients(row.backend)
    try:
        result = row.call(ai)
    except AcceleratorError:
        return  # a typed error: what a malformed answer must give
    row.check(result)


@pytest.mark.parametrize("row", PARSERS, ids=lambda r: f"{r.backend}-{r.name}")
def test_parser_reads_its_valid_template(row: Row, server, clients) -> None:
    server.body, server.ctype = row.encode(row.template), row.ctype
    row.check(row.call(clients(row.backend)))


@pytest.mark.parametrize("row", PARSERS, ids=lambda r: f"{r.backend}-{r.name}")
def test_parser_survives_one_bad_field(row: Row, server, clients) -> None:
    @FUZZ
    @given(answer=mutated(row.template))
    def check(answer: Any) -> None:
        _run(row, server, clients, answer)

    check()


@pytest.mark.parametrize("row", PARSERS, ids=lambda r: f"{r.backend}-{r.name}")
def test_parser_survives_arbitrary_json(row: Row, server, clients) -> None:
    @settings(FUZZ, max_examples=40)
    @given(answer=json_values if row.ctype == "application/json"
           else st.lists(json_values, max_size=4))
    def check(answer: Any) -> None:
        _run(row, server, clients, answer)

    check()
