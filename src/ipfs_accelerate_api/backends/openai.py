"""OpenAI (and any OpenAI-compatible server: vLLM, xAI, llama.cpp... via ``base_url``).

Thin: request building, response and stream parsing, error and header mapping.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np

from .._enums import Priority
from ..config import Secret
from ..core import parse_floats
from ..engine import OpResult, RateLimitInfo
from ..engine.retry import parse_duration
from ..errors import ResponseFormatError, StreamInterrupted
from ..transport import Response, SSEEvent
from ..types import ChatChunk, ChatMessage, ChatResponse, CompletionResponse, ToolCall, Usage
from ._shape import as_count, as_dict, as_list, as_str, field, id_list
from .base import (
    STREAM_END,
    Backend,
    Plan,
    StreamParser,
    check_messages,
    estimate_tokens,
    unified_finish_reason,
)

__all__ = ["OpenAIBackend", "embeddings_parser"]

DEFAULT_MAX_TOKENS_ESTIMATE = 256


def _usage(data: Any) -> Usage:
    if data is None:
        return Usage()
    data = as_dict(data, "usage")
    p = as_count(data.get("prompt_tokens"), "usage.prompt_tokens")
    c = as_count(data.get("completion_tokens"), "usage.completion_tokens")
    total = data.get("total_tokens")
    return Usage(p, c, p + c if total is None else as_count(total, "usage.total_tokens"))


def _tool_calls(raw: Any, where: str) -> list[ToolCall]:
    out = []
    for i, t in enumerate(as_list(raw, where) if raw is not None else []):
        t = as_dict(t, f"{where}[{i}]")
        fn = as_dict(field(t, "function", f"{where}[{i}]"), f"{where}[{i}].function")
        out.append(ToolCall(id=as_str(field(t, "id", f"{where}[{i}]"), f"{where}[{i}].id"),
                            name=as_str(field(fn, "name", f"{where}[{i}].function"),
                                        f"{where}[{i}].function.name"),
                            arguments=as_str(fn.get("arguments", ""),
                                             f"{where}[{i}].function.arguments"),
                            type=as_str(t.get("type", "function"), f"{where}[{i}].type")))
    return out


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    return as_dict(as_list(field(data, "choices", "response"), "choices", nonempty=True)[0],
                   "choices[0]")


class OpenAIBackend(Backend):
    name = "openai"
    env_prefix = "OPENAI"
    default_base_url = "https://api.openai.com/v1"
    #: Ask for the usage chunk at the end of a stream (``stream_options.include_usage``).
    stream_include_usage = True
    #: The model ``transcribe`` uses when none is named.
    transcribe_model = "whisper-1"
    #: Prefixed to the chat and model-listing paths (``/v1`` for a server whose base URL is
    #: its root, as TGI's Messages API).
    api_prefix = ""
    #: A compatible server's own finish reasons -> the unified ones (OpenAI's are those).
    finish_reasons: Mapping[str, str] = {}
    #: Seconds the ``x-ratelimit-*-requests`` quota is counted over (per minute; None: the
    #: adapter reads those headers its own way, as Groq's per-day count).
    requests_window: float | None = 60.0
    context_window_codes = frozenset({"context_length_exceeded"})
    context_window_phrases = ("maximum context length",)

    # -- conventions ----------------------------------------------------------------------
    def _auth_headers(self, key: Secret | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.reveal()}"} if key is not None else {}

    def _error_message(self, body: Any) -> tuple[str, str | None]:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            return str(err.get("message") or "error"), err.get("code") or err.get("type")
        return str(body)[:500], None

    def _ratelimit_info(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        get = headers.get
        rr, rt = get("x-ratelimit-remaining-requests"), get("x-ratelimit-remaining-tokens")
        if rr is None and rt is None:
            return None

        def num(v: str | None) -> float | None:
            try:
                return None if v is None else float(v)
            except ValueError:
                return None

        def dur(v: str | None) -> float | None:
            return None if v is None else parse_duration(v)

        def next_unit(remaining: float | None, reset: float | None, kind: str,
                      window: float | None) -> float | None:
            """``reset`` is when the window is *full* again; a bucket that refills
            continuously (OpenAI's) has its next unit after one unit's share of the window."""
            if remaining != 0 or reset is None or window is None:
                return reset
            limit = num(get(f"x-ratelimit-limit-{kind}"))
            return min(reset, window / limit) if limit and limit > 0 else reset

        nr, nt = num(rr), num(rt)
        return RateLimitInfo(
            nr, next_unit(nr, dur(get("x-ratelimit-reset-requests")), "requests",
                          self.requests_window),
            nt, next_unit(nt, dur(get("x-ratelimit-reset-tokens")), "tokens", 60.0))

    def _estimate(self, body: Mapping[str, Any], encoded: bytes) -> int:
        """Tokens this request may use: its encoded size / 4, plus the completion allowance."""
        out = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(out, bool) or not isinstance(out, int) or out <= 0:
            out = DEFAULT_MAX_TOKENS_ESTIMATE  # not ours to refuse: the service answers 400
        return len(encoded) // 4 + 1 + out

    # -- chat -----------------------------------------------------------------------------
    def _chat_body(self, messages: list[dict[str, Any]], model: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"model": model, "messages": check_messages(messages), **params}

    def _plan_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        return self._chat_request(self.api_prefix + "/chat/completions",
                                  self._chat_body(messages, model, params))

    def _chat_request(self, path: str, body: dict[str, Any]) -> Plan:
        """A chat request to ``path``, its answer parsed as a ``chat.completion``."""

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            choice = _first_choice(data)
            msg = as_dict(field(choice, "message", "choices[0]"), "choices[0].message")
            content = as_str(msg.get("content"), "message.content", optional=True)
            message = ChatMessage(as_str(msg.get("role", "assistant"), "message.role"), content,
                                  _tool_calls(msg.get("tool_calls"), "message.tool_calls"))
            usage = _usage(data.get("usage"))
            return OpResult(
                ChatResponse(text=content or "", message=message,
                             finish_reason=unified_finish_reason(
                                 choice.get("finish_reason"), self.finish_reasons,
                                 "choices[0].finish_reason"),
                             usage=usage, model=as_str(data.get("model"), "model", optional=True),
                             request_id=resp.headers.get("x-request-id"), raw=data),
                usage.prompt_tokens, usage.completion_tokens, resp.headers)

        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", path, parse, body=encoded), self._estimate(body, encoded))

    def _plan_stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        if self.stream_include_usage:
            params.setdefault("stream_options", {"include_usage": True})
        body = self._chat_body(messages, model, {**params, "stream": True})
        encoded = json.dumps(body).encode()
        return self._stream_plan(self.api_prefix + "/chat/completions", encoded,
                                 self._estimate(body, encoded),
                                 StreamParser.from_function(self._stream_chunk))

    def _stream_chunk(self, ev: SSEEvent) -> Any:
        """One SSE event of a chat stream: a chunk, or the end at ``[DONE]``."""
        if ev.data == "[DONE]":
            return STREAM_END
        obj = as_dict(ev.json(), "stream chunk")
        if obj.get("error"):
            err = obj["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise StreamInterrupted(f"{self.name}: error in stream: {str(msg)[:500]}",
                                    backend=self.name)
        choices = as_list(obj.get("choices") or [], "chunk.choices")
        usage = _usage(obj["usage"]) if obj.get("usage") else None
        if not choices:
            return ChatChunk(usage=usage, raw=obj)
        choice = as_dict(choices[0], "chunk.choices[0]")
        delta = as_dict(choice.get("delta") or {}, "chunk.choices[0].delta")
        tool_calls = as_list(delta.get("tool_calls") or [], "delta.tool_calls")
        for i, t in enumerate(tool_calls):
            as_dict(t, f"delta.tool_calls[{i}]")
        return ChatChunk(text=as_str(delta.get("content"), "delta.content", optional=True) or "",
                         finish_reason=unified_finish_reason(choice.get("finish_reason"),
                                                             self.finish_reasons,
                                                             "chunk.finish_reason"),
                         usage=usage, tool_calls=tool_calls, raw=obj)

    # -- completions ----------------------------------------------------------------------
    def _plan_complete(self, prompt: str, *, model: str, **params: Any) -> Plan:
        body = {"model": model, "prompt": prompt, **params}

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            choice = _first_choice(data)
            usage = _usage(data.get("usage"))
            return OpResult(CompletionResponse(
                as_str(field(choice, "text", "choices[0]"), "choices[0].text"),
                as_str(choice.get("finish_reason"), "choices[0].finish_reason", optional=True),
                usage, as_str(data.get("model"), "model", optional=True),
                resp.headers.get("x-request-id"), data),
                usage.prompt_tokens, usage.completion_tokens, resp.headers)

        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", self.api_prefix + "/completions", parse, body=encoded),
                    self._estimate(body, encoded))

    # -- embeddings -----------------------------------------------------------------------
    def _plan_embed(self, texts: list[str], *, model: str, **params: Any) -> Plan:
        params.setdefault("encoding_format", "base64")
        body = {"model": model, "input": texts, **params}
        est = sum(estimate_tokens(t) for t in texts)
        return Plan(self._http("POST", self.api_prefix + "/embeddings", embeddings_parser(len(texts), self.name),
                               json_body=body), est)

    # -- models, images, audio ----------------------------------------------------------------
    def _plan_list_models(self) -> Plan:
        def parse(resp: Response) -> OpResult:
            return OpResult(id_list(resp.json()), headers=resp.headers)

        return Plan(self._http("GET", self.api_prefix + "/models", parse))

    def generate_image(self, prompt: str, *, model: str = "dall-e-3",
                       priority: int = Priority.NORMAL, **params: Any) -> list[bytes | str]:
        """Images as PNG bytes (``b64_json``) or URLs (``response_format="url"``)."""
        return self._run("generate_image", prompt, model=model, priority=priority, **params)

    def _plan_generate_image(self, prompt: str, *, model: str, **params: Any) -> Plan:
        body = {"model": model, "prompt": prompt, **params}
        body.setdefault("response_format", "b64_json")

        def parse(resp: Response) -> OpResult:
            out: list[bytes | str] = []
            items = as_list(field(as_dict(resp.json(), "response"), "data", "response"), "data")
            for i, item in enumerate(items):
                item = as_dict(item, f"data[{i}]")
                if item.get("b64_json") is not None:
                    out.append(base64.b64decode(as_str(item["b64_json"], f"data[{i}].b64_json"),
                                                validate=True))
                else:
                    out.append(as_str(field(item, "url", f"data[{i}]"), f"data[{i}].url"))
            return OpResult(out, headers=resp.headers)

        return Plan(self._http("POST", "/images/generations", _catching(parse), json_body=body))

    def transcribe(self, file: bytes | str | os.PathLike[str] | IO[bytes], *, model: str | None = None,
                   priority: int = Priority.NORMAL, **params: Any) -> str:
        """The text of an audio file (bytes, a path or a binary file object)."""
        return self._run("transcribe", file, model=model or self.transcribe_model,
                         priority=priority, **params)

    def _plan_transcribe(self, file: Any, *, model: str, filename: str | None = None,
                         **params: Any) -> Plan:
        if isinstance(file, (str, os.PathLike)):
            filename = filename or os.path.basename(os.fspath(file))
            with open(file, "rb") as fh:
                data = fh.read()
        elif isinstance(file, (bytes, bytearray)):
            data = bytes(file)
        else:
            data = file.read()
            filename = filename or os.path.basename(getattr(file, "name", "") or "") or None
        fields: list[tuple[str, Any]] = [
            ("model", model), ("file", (filename or "audio.wav", data, "application/octet-stream"))]
        for k, v in params.items():
            if isinstance(v, (list, tuple)):  # repeated form fields, as the API expects
                fields.extend((f"{k}[]", x if isinstance(x, str) else json.dumps(x)) for x in v)
            else:
                fields.append((k, v if isinstance(v, str) else json.dumps(v)))

        def parse(resp: Response) -> OpResult:
            if resp.headers.get("content-type", "").startswith("application/json"):
                data = as_dict(resp.json(), "response")
                return OpResult(as_str(field(data, "text", "response"), "text"), headers=resp.headers)
            try:
                return OpResult(resp.data.decode("utf-8"), headers=resp.headers)
            except UnicodeDecodeError as exc:
                raise ResponseFormatError(f"{self.name}: transcription is not UTF-8") from exc

        return Plan(self._http("POST", "/audio/transcriptions", parse, fields=fields))

    def speech(self, text: str, *, model: str = "tts-1", voice: str = "alloy",
               priority: int = Priority.NORMAL, **params: Any) -> bytes:
        """Spoken ``text`` as audio bytes (mp3 unless ``response_format`` says otherwise)."""
        return self._run("speech", text, model=model, voice=voice, priority=priority, **params)

    async def agenerate_image(self, prompt: str, **kw: Any) -> list[bytes | str]:
        return await self._arun("generate_image", prompt, **{"model": "dall-e-3", **kw})

    async def atranscribe(self, file: Any, **kw: Any) -> str:
        return await self._arun("transcribe", file, **{"model": self.transcribe_model, **kw})

    async def aspeech(self, text: str, **kw: Any) -> bytes:
        return await self._arun("speech", text, **{"model": "tts-1", "voice": "alloy", **kw})

    def _plan_speech(self, text: str, *, model: str, voice: str, **params: Any) -> Plan:
        body = {"model": model, "input": text, "voice": voice, **params}
        return Plan(self._http("POST", "/audio/speech",
                               lambda resp: OpResult(resp.data, headers=resp.headers), json_body=body))


def embeddings_parser(n: int, backend: str) -> Callable[[Response], OpResult]:
    """The parser of an OpenAI-style ``/embeddings`` answer holding ``n`` vectors (float
    arrays or base64), as one float32 array in input order; shared by every backend that
    speaks this route (TEI's ``/v1/embeddings``)."""

    def parse(resp: Response) -> OpResult:
        fast = _float_arrays(resp.data)
        if fast is not None:
            data, vectors = fast
            items = as_list(field(as_dict(data, "response"), "data", "response"), "data")
            if len(vectors) != len(items):
                raise ResponseFormatError(f"{backend}: embeddings outside data[]")
            for i, (it, vec) in enumerate(zip(items, vectors)):
                as_dict(it, f"data[{i}]")["embedding"] = vec
        else:
            data = as_dict(resp.json(), "response")
            items = as_list(field(data, "data", "response"), "data")
        if len(items) != n:
            raise ResponseFormatError(f"{backend}: asked for {n} embeddings, got {len(items)}")
        out: np.ndarray | None = None
        seen = np.zeros(n, dtype=bool)
        for i, it in enumerate(items):
            it = as_dict(it, f"data[{i}]")
            index = as_count(it.get("index", i), f"data[{i}].index")
            if index >= n or seen[index]:
                raise ResponseFormatError(f"{backend}: data[{i}].index {index} is out of "
                                          f"range or repeated (expected each of 0..{n - 1} once)")
            seen[index] = True
            row = _vector(field(it, "embedding", f"data[{i}]"), f"data[{i}].embedding")
            if out is None:
                out = np.empty((n, len(row)), dtype=np.float32)
            elif len(row) != out.shape[1]:
                raise ResponseFormatError(f"{backend}: data[{i}].embedding has {len(row)} "
                                          f"dimensions, data[0] has {out.shape[1]}")
            out[index] = row
        assert out is not None  # n >= 1 items, each checked above
        usage = _usage(data.get("usage"))
        return OpResult(out, usage.prompt_tokens, 0, resp.headers)

    return _catching(parse)  # type: ignore[no-any-return]


_EMBEDDING_ARRAY = re.compile(rb'"embedding"\s*:\s*\[([^\]]*)\]')


def _float_arrays(body: bytes) -> tuple[Any, list[np.ndarray]] | None:
    """Embeddings sent as JSON float arrays, parsed by numpy instead of ``json`` (several
    times faster); the rest of the document goes through ``json`` with the arrays nulled.
    Returns None when the fast path does not apply, and the caller parses normally."""
    if b'"embedding"' not in body or b'"embedding":"' in body or b'"embedding": "' in body:
        return None
    vectors: list[np.ndarray] = []

    def take(match: re.Match[bytes]) -> bytes:
        text = match.group(1)
        vectors.append(parse_floats(text))
        return b'"embedding":null'

    try:
        rest = _EMBEDDING_ARRAY.sub(take, body)
        data = json.loads(rest)
    except (ValueError, UnicodeDecodeError):
        return None
    return data, vectors


def _vector(value: Any, where: str) -> np.ndarray:
    """One embedding: a base64 string of little-endian float32, or a list of numbers."""
    if isinstance(value, np.ndarray):
        row = value
    elif isinstance(value, str):
        raw = base64.b64decode(value, validate=True)
        if len(raw) % 4:
            raise ResponseFormatError(f"{where}: {len(raw)} bytes is not a whole number of float32")
        row = np.frombuffer(raw, dtype="<f4")
    elif isinstance(value, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        row = np.asarray(value, dtype=np.float32)
    else:
        raise ResponseFormatError(f"{where} should be a base64 string or a list of numbers")
    if row.ndim != 1 or len(row) == 0:
        raise ResponseFormatError(f"{where} should be a non-empty vector")
    return row


def _catching(parse: Any) -> Any:
    """Base64 errors are format errors too."""

    def wrapped(resp: Response) -> OpResult:
        try:
            return parse(resp)
        except (binascii.Error, ValueError) as exc:
            if isinstance(exc, ResponseFormatError):
                raise
            raise ResponseFormatError(f"bad data in response: {exc}", status=resp.status) from exc

    return wrapped
