"""The OpenAI API, emulated (see shared PROTOCOLS.md section 1).

Routes below ``/openai``: ``/v1/chat/completions`` (plain and SSE, ``include_usage``),
``/v1/completions``, ``/v1/embeddings`` (float and base64), ``/v1/models[/{id}]``,
``/v1/images/generations``, ``/v1/audio/transcriptions`` (multipart), ``/v1/audio/speech``.
Replies are deterministic: text is derived from the prompt and the seed; an embedding is a
stable function of its text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any, Iterator

import numpy as np

from ._server import APIFailure, Reply, Request, Service, Stream, go_duration

__all__ = ["OpenAIService", "embedding_for", "reply_text"]

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()

MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "text-embedding-3-large",
          "whisper-1", "tts-1", "dall-e-3"]
EMBED_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
              "text-embedding-ada-002": 1536}
DEFAULT_EMBED_DIM = 256
MAX_EMBED_INPUTS = 2048
CREATED = 1_700_000_000


def count_tokens(text: str) -> int:
    """The emulator's token count: about four characters a token."""
    return max(1, len(text) // 4) if text else 0


def reply_text(prompt: str, seed: int, max_words: int = 12) -> str:
    """Deterministic reply words for ``prompt``."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    n = max(1, min(max_words, 3 + digest[0] % 10))
    return " ".join(_WORDS[digest[(i + 1) % 32] % len(_WORDS)] for i in range(n))


def embedding_for(text: str, dim: int, seed: int = 0) -> np.ndarray:
    """A unit vector that is a stable function of ``text`` (and the seed)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "little")
    v = np.random.default_rng(h).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class OpenAIService(Service):
    name = "openai"
    routes = [
        ("POST", r"/v1/chat/completions", "chat"),
        ("POST", r"/v1/completions", "completions"),
        ("POST", r"/v1/embeddings", "embeddings"),
        ("GET", r"/v1/models", "models"),
        ("GET", r"/v1/models/(?P<model>[^/]+)", "model"),
        ("POST", r"/v1/images/generations", "images"),
        ("POST", r"/v1/audio/transcriptions", "transcriptions"),
        ("POST", r"/v1/audio/speech", "speech"),
    ]

    # -- the service's conventions ----------------------------------------------------------
    def read_key(self, req: Request) -> str | None:
        auth = req.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        h = {"x-request-id": f"req_{uuid.uuid4().hex[:24]}"}
        h.update(headers or {})
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return Reply(status, body, h)

    def ratelimit_headers(self, rpm: Any, tpm: Any) -> dict[str, str]:
        h: dict[str, str] = {}
        for name, state in (("requests", rpm), ("tokens", tpm)):
            if state:
                limit, remaining, reset = state
                h[f"x-ratelimit-limit-{name}"] = str(int(limit))
                h[f"x-ratelimit-remaining-{name}"] = str(int(remaining))
                h[f"x-ratelimit-reset-{name}"] = go_duration(reset)
        return h

    def stream_error_chunk(self) -> bytes:
        err = {"error": {"message": "The server had an error while streaming.",
                         "type": "server_error", "param": None, "code": None}}
        return b"data: " + json.dumps(err).encode() + b"\n\n"

    def estimate_tokens(self, req: Request) -> int:
        return max(1, len(req.body) // 4)

    # -- helpers --------------------------------------------------------------------------
    def _body(self, req: Request, *required: str) -> dict[str, Any]:
        body = req.json()
        if not isinstance(body, dict):
            raise APIFailure(400, "We could not parse the JSON body of your request.")
        for name in required:
            if name not in body:
                raise APIFailure(400, f"you must provide a {name} parameter", param=name)
        return body

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex[:24]}", "openai-version": "2020-10-01",
                "openai-processing-ms": "1"}

    # -- routes ---------------------------------------------------------------------------
    def chat(self, req: Request) -> Reply | Stream:
        body = self._body(req, "model", "messages")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise APIFailure(400, "messages must be a non-empty array", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m:
                raise APIFailure(400, f"Missing required parameter: 'messages[{i}].role'.",
                                 param=f"messages[{i}].role")
            if "content" not in m and not m.get("tool_calls"):
                raise APIFailure(400, f"Missing required parameter: 'messages[{i}].content'.",
                                 param=f"messages[{i}].content")
        prompt = "\n".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        text = reply_text(prompt, self.seed, int(limit))
        words = text.split(" ")
        finish = "length" if len(words) >= int(limit) else "stop"
        usage = {"prompt_tokens": count_tokens(prompt), "completion_tokens": len(words),
                 "total_tokens": count_tokens(prompt) + len(words)}
        cid = f"chatcmpl-{uuid.uuid4().hex[:20]}"
        model = body["model"]
        tool_call = None
        if body.get("tools") and body.get("tool_choice") not in (None, "none", "auto"):
            fn = body["tools"][0]["function"]["name"]
            tool_call = {"id": "call_1", "type": "function",
                         "function": {"name": fn, "arguments": json.dumps({"q": words[0]})}}
            finish = "tool_calls"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return Stream(self._chat_stream(cid, model, words, finish, usage, include_usage),
                          headers=self._headers())
        message: dict[str, Any] = {"role": "assistant", "content": None if tool_call else text,
                                   "refusal": None}
        if tool_call:
            message["tool_calls"] = [tool_call]
        return Reply(200, {
            "id": cid, "object": "chat.completion", "created": CREATED, "model": model,
            "system_fingerprint": "fp_emulator",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish}],
            "usage": usage,
        }, self._headers())

    def _chat_stream(self, cid: str, model: str, words: list[str], finish: str,
                     usage: dict[str, int], include_usage: bool) -> Iterator[bytes]:
        def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
            data: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                "system_fingerprint": "fp_emulator",
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}]}
            if include_usage:
                data["usage"] = None
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        yield chunk({"role": "assistant", "content": ""}, None)
        for i, w in enumerate(words):
            yield chunk({"content": w if i == 0 else " " + w}, None)
        yield chunk({}, finish)
        if include_usage:
            final = {"id": cid, "object": "chat.completion.chunk", "created": CREATED,
                     "model": model, "choices": [], "usage": usage}
            yield b"data: " + json.dumps(final).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    def completions(self, req: Request) -> Reply | Stream:
        body = self._body(req, "model", "prompt")
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        limit = int(body.get("max_tokens") or 16)
        choices = []
        total_prompt = total_completion = 0
        for i, p in enumerate(prompts):
            text = reply_text(str(p), self.seed, limit)
            total_prompt += count_tokens(str(p))
            total_completion += len(text.split())
            choices.append({"text": text, "index": i, "logprobs": None,
                            "finish_reason": "length" if len(text.split()) >= limit else "stop"})
        usage = {"prompt_tokens": total_prompt, "completion_tokens": total_completion,
                 "total_tokens": total_prompt + total_completion}
        cid = f"cmpl-{uuid.uuid4().hex[:20]}"
        if body.get("stream"):
            def events() -> Iterator[bytes]:
                for c in choices:
                    data = {"id": cid, "object": "text_completion", "created": CREATED,
                            "model": body["model"], "choices": [c]}
                    yield b"data: " + json.dumps(data).encode() + b"\n\n"
                yield b"data: [DONE]\n\n"
            return Stream(events(), headers=self._headers())
        return Reply(200, {"id": cid, "object": "text_completion", "created": CREATED,
                           "model": body["model"], "choices": choices, "usage": usage},
                     self._headers())

    def embeddings(self, req: Request) -> Reply:
        body = self._body(req, "model", "input")
        inputs = body["input"]
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise APIFailure(400, "'input' must be a non-empty string or array", param="input")
        if len(inputs) > MAX_EMBED_INPUTS:
            raise APIFailure(400, f"'input' must have at most {MAX_EMBED_INPUTS} items", param="input")
        dim = int(body.get("dimensions") or EMBED_DIMS.get(body["model"], DEFAULT_EMBED_DIM))
        fmt = body.get("encoding_format", "float")
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            if isinstance(item, str) and not item:
                raise APIFailure(400, "'input' cannot contain an empty string", param="input")
            tokens += count_tokens(text)
            vec = embedding_for(text, dim, self.seed)
            emb: Any = (base64.b64encode(vec.astype("<f4").tobytes()).decode()
                        if fmt == "base64" else vec.tolist())
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return Reply(200, {"object": "list", "data": data, "model": body["model"],
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                     self._headers())

    def models(self, req: Request) -> Reply:
        return Reply(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "emulator"}
            for m in MODELS]}, self._headers())

    def model(self, req: Request) -> Reply:
        m = req.params["model"]
        if m not in MODELS:
            raise APIFailure(404, f"The model '{m}' does not exist", code="model_not_found",
                             param="model")
        return Reply(200, {"id": m, "object": "model", "created": CREATED, "owned_by": "emulator"},
                     self._headers())

    def images(self, req: Request) -> Reply:
        body = self._body(req, "prompt")
        n = int(body.get("n") or 1)
        png = _tiny_png(hashlib.sha256(body["prompt"].encode()).digest()[:3])
        if body.get("response_format") == "url":
            data = [{"url": f"https://emulator.invalid/images/{i}.png"} for i in range(n)]
        else:
            data = [{"b64_json": base64.b64encode(png).decode(), "revised_prompt": body["prompt"]}
                    for _ in range(n)]
        return Reply(200, {"created": int(time.time()), "data": data}, self._headers())

    def transcriptions(self, req: Request) -> Reply:
        fields = _multipart(req)
        if "file" not in fields or "model" not in fields:
            raise APIFailure(400, "file and model are required", param="file")
        filename, audio = fields["file"]
        text = f"transcript of {len(audio)} bytes from {filename or 'audio'}"
        fmt = fields.get("response_format", (None, b"json"))[1].decode()
        if fmt in ("text", "srt", "vtt"):
            return Reply(200, text, self._headers(), content_type="text/plain")
        return Reply(200, {"text": text, "usage": {"type": "duration", "seconds": 1}},
                     self._headers())

    def speech(self, req: Request) -> Reply:
        body = self._body(req, "model", "input", "voice")
        audio = hashlib.sha256(body["input"].encode()).digest() * 32
        return Reply(200, audio, self._headers(), content_type="audio/mpeg")


def _multipart(req: Request) -> dict[str, tuple[str | None, bytes]]:
    ctype = req.headers.get("content-type", "")
    if "boundary=" not in ctype:
        raise APIFailure(400, "expected multipart/form-data")
    boundary = ctype.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in req.body.split(b"--" + boundary):
        if not part.strip() or part.strip() == b"--":
            continue
        head, _, data = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        disp = next((line for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-disposition")), b"").decode()
        name = filename = None
        for item in disp.split(";"):
            k, _, v = item.strip().partition("=")
            if k == "name":
                name = v.strip('"')
            elif k == "filename":
                filename = v.strip('"')
        if name:
            fields[name] = (filename, data[:-2] if data.endswith(b"\r\n") else data)
    return fields


def _tiny_png(rgb: bytes) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"\x00" + rgb
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
