"""OpenAI (and any OpenAI-compatible server: vLLM, xAI, llama.cpp... via ``base_url``).

Thin: request building, response and stream parsing, error and header mapping.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import IO, Any, Iterator, Mapping

import numpy as np

from .._enums import Priority
from ..config import Secret
from ..core import parse_floats
from ..engine import OpResult, RateLimitInfo
from ..engine.retry import parse_duration
from ..errors import ResponseFormatError, StreamInterrupted
from ..transport import Response, iter_sse
from ..types import ChatChunk, ChatMessage, ChatResponse, CompletionResponse, ToolCall, Usage
from .base import Backend, Plan, estimate_tokens

__all__ = ["OpenAIBackend"]

DEFAULT_MAX_TOKENS_ESTIMATE = 256


def _usage(data: Mapping[str, Any] | None) -> Usage:
    data = data or {}
    p, c = int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0)
    return Usage(p, c, int(data.get("total_tokens") or p + c))


def _tool_calls(raw: Any) -> list[ToolCall]:
    return [ToolCall(id=t["id"], name=t["function"]["name"], arguments=t["function"]["arguments"],
                     type=t.get("type", "function")) for t in raw or []]


class OpenAIBackend(Backend):
    name = "openai"
    env_prefix = "OPENAI"
    default_base_url = "https://api.openai.com/v1"

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

        return RateLimitInfo(num(rr), dur(get("x-ratelimit-reset-requests")),
                             num(rt), dur(get("x-ratelimit-reset-tokens")))

    def _estimate(self, body: Mapping[str, Any], encoded: bytes) -> int:
        """Tokens this request may use: its encoded size / 4, plus the completion allowance."""
        out = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS_ESTIMATE
        return len(encoded) // 4 + 1 + int(out)

    # -- chat -----------------------------------------------------------------------------
    def _chat_body(self, messages: list[dict[str, Any]], model: str, params: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
        return {"model": model, "messages": messages, **params}

    def _plan_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        body = self._chat_body(messages, model, params)

        def parse(resp: Response) -> OpResult:
            data = resp.json()
            choice = data["choices"][0]
            msg = choice["message"]
            message = ChatMessage(msg.get("role", "assistant"), msg.get("content"),
                                  _tool_calls(msg.get("tool_calls")))
            usage = _usage(data.get("usage"))
            return OpResult(
                ChatResponse(text=msg.get("content") or "", message=message,
                             finish_reason=choice.get("finish_reason"), usage=usage,
                             model=data.get("model"), request_id=resp.headers.get("x-request-id"),
                             raw=data),
                usage.prompt_tokens, usage.completion_tokens, resp.headers)

        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", "/chat/completions", parse, body=encoded),
                    self._estimate(body, encoded))

    def _plan_stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        params.setdefault("stream_options", {"include_usage": True})
        body = self._chat_body(messages, model, {**params, "stream": True})
        name = self.name

        def parse(resp: Response) -> OpResult:
            events = iter_sse(resp.iter_bytes())
            received: list[str] = []

            def chunk_of(ev: Any) -> ChatChunk | None:
                if ev.data == "[DONE]":
                    return None
                obj = ev.json()
                if isinstance(obj, dict) and obj.get("error"):
                    err = obj["error"]
                    msg = err.get("message") if isinstance(err, dict) else str(err)
                    raise StreamInterrupted(f"{name}: error in stream: {msg}",
                                            partial_text="".join(received), backend=name)
                choices = obj.get("choices") or []
                usage = _usage(obj["usage"]) if obj.get("usage") else None
                if not choices:
                    return ChatChunk(usage=usage, raw=obj)
                delta = choices[0].get("delta") or {}
                text = delta.get("content") or ""
                received.append(text)
                return ChatChunk(text=text, finish_reason=choices[0].get("finish_reason"),
                                 usage=usage, tool_calls=delta.get("tool_calls") or [], raw=obj)

            # The first event is read here, inside the engine: failures so far are retried.
            try:
                first = next(events, None)
                head = chunk_of(first) if first is not None else None
            except BaseException:
                events.close()
                raise

            def rest() -> Iterator[ChatChunk]:
                done = first is None or head is None
                if head is not None:
                    yield head
                try:
                    for ev in events:
                        c = chunk_of(ev)
                        if c is None:
                            done = True
                            break
                        yield c
                except StreamInterrupted:
                    raise
                except Exception as exc:
                    raise StreamInterrupted(
                        f"{name}: stream broke after it started ({type(exc).__name__})",
                        partial_text="".join(received), backend=name) from exc
                finally:
                    events.close()  # closes the connection if we stop early
                if not done:
                    raise StreamInterrupted(f"{name}: stream ended without [DONE]",
                                            partial_text="".join(received), backend=name)

            return OpResult(rest(), headers=resp.headers)

        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", "/chat/completions", parse, body=encoded, stream=True),
                    self._estimate(body, encoded))

    # -- completions ----------------------------------------------------------------------
    def _plan_complete(self, prompt: str, *, model: str, **params: Any) -> Plan:
        body = {"model": model, "prompt": prompt, **params}

        def parse(resp: Response) -> OpResult:
            data = resp.json()
            choice = data["choices"][0]
            usage = _usage(data.get("usage"))
            return OpResult(CompletionResponse(choice["text"], choice.get("finish_reason"), usage,
                                               data.get("model"), resp.headers.get("x-request-id"),
                                               data),
                            usage.prompt_tokens, usage.completion_tokens, resp.headers)

        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", "/completions", parse, body=encoded),
                    self._estimate(body, encoded))

    # -- embeddings -----------------------------------------------------------------------
    def _plan_embed(self, texts: list[str], *, model: str, **params: Any) -> Plan:
        params.setdefault("encoding_format", "base64")
        body = {"model": model, "input": texts, **params}
        n = len(texts)

        def parse(resp: Response) -> OpResult:
            fast = _float_arrays(resp.data)
            if fast is not None:
                data, vectors = fast
                items = data["data"]
                for it, vec in zip(items, vectors):
                    it["embedding"] = vec
            else:
                data = resp.json()
                items = data["data"]
            if len(items) != n:
                raise ResponseFormatError(f"{self.name}: asked for {n} embeddings, got {len(items)}")
            first = items[0]["embedding"]
            if isinstance(first, str):
                rows = [np.frombuffer(base64.b64decode(it["embedding"], validate=True), dtype="<f4")
                        for it in items]
            else:
                rows = [it["embedding"] if isinstance(it["embedding"], np.ndarray)
                        else np.asarray(it["embedding"], dtype=np.float32) for it in items]
            out = np.empty((n, len(rows[0])), dtype=np.float32)
            for it, row in zip(items, rows):
                out[int(it.get("index", 0))] = row
            usage = _usage(data.get("usage"))
            return OpResult(out, usage.prompt_tokens, 0, resp.headers)

        est = sum(estimate_tokens(t) for t in texts)
        return Plan(self._http("POST", "/embeddings", _catching(parse), json_body=body), est)

    # -- models, images, audio ----------------------------------------------------------------
    def _plan_list_models(self) -> Plan:
        def parse(resp: Response) -> OpResult:
            return OpResult([m["id"] for m in resp.json()["data"]], headers=resp.headers)

        return Plan(self._http("GET", "/models", parse))

    def generate_image(self, prompt: str, *, model: str = "dall-e-3",
                       priority: int = Priority.NORMAL, **params: Any) -> list[bytes | str]:
        """Images as PNG bytes (``b64_json``) or URLs (``response_format="url"``)."""
        return self._run("generate_image", prompt, model=model, priority=priority, **params)

    def _plan_generate_image(self, prompt: str, *, model: str, **params: Any) -> Plan:
        body = {"model": model, "prompt": prompt, **params}
        body.setdefault("response_format", "b64_json")

        def parse(resp: Response) -> OpResult:
            out: list[bytes | str] = []
            for item in resp.json()["data"]:
                out.append(base64.b64decode(item["b64_json"]) if "b64_json" in item else item["url"])
            return OpResult(out, headers=resp.headers)

        return Plan(self._http("POST", "/images/generations", _catching(parse), json_body=body))

    def transcribe(self, file: bytes | str | os.PathLike[str] | IO[bytes], *, model: str = "whisper-1",
                   priority: int = Priority.NORMAL, **params: Any) -> str:
        """The text of an audio file (bytes, a path or a binary file object)."""
        return self._run("transcribe", file, model=model, priority=priority, **params)

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
        fields: dict[str, Any] = {"model": model,
                                  "file": (filename or "audio.wav", data, "application/octet-stream")}
        for k, v in params.items():
            fields[k] = v if isinstance(v, str) else json.dumps(v)

        def parse(resp: Response) -> OpResult:
            if resp.headers.get("content-type", "").startswith("application/json"):
                return OpResult(resp.json()["text"], headers=resp.headers)
            return OpResult(resp.data.decode("utf-8"), headers=resp.headers)

        return Plan(self._http("POST", "/audio/transcriptions", parse, fields=fields))

    def speech(self, text: str, *, model: str = "tts-1", voice: str = "alloy",
               priority: int = Priority.NORMAL, **params: Any) -> bytes:
        """Spoken ``text`` as audio bytes (mp3 unless ``response_format`` says otherwise)."""
        return self._run("speech", text, model=model, voice=voice, priority=priority, **params)

    async def agenerate_image(self, prompt: str, **kw: Any) -> list[bytes | str]:
        return await self._arun("generate_image", prompt, **{"model": "dall-e-3", **kw})

    async def atranscribe(self, file: Any, **kw: Any) -> str:
        return await self._arun("transcribe", file, **{"model": "whisper-1", **kw})

    async def aspeech(self, text: str, **kw: Any) -> bytes:
        return await self._arun("speech", text, **{"model": "tts-1", "voice": "alloy", **kw})

    def _plan_speech(self, text: str, *, model: str, voice: str, **params: Any) -> Plan:
        body = {"model": model, "input": text, "voice": voice, **params}
        return Plan(self._http("POST", "/audio/speech",
                               lambda resp: OpResult(resp.data, headers=resp.headers), json_body=body))


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
