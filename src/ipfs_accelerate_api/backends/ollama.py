"""Ollama's native API (``/api/chat``, ``/api/generate``, ``/api/embed``...).

Thin: OpenAI-style messages and parameters become Ollama's ``messages`` (images as base64,
tool-call ``arguments`` as JSON *objects*) and ``options`` (``max_tokens`` -> ``num_predict``);
answers and NDJSON streams (``stream`` is on by default server-side, so every request says
``"stream"`` explicitly) come back unified, counts from ``prompt_eval_count``/``eval_count``.

The server is ``base_url=``, else ``$OLLAMA_HOST`` read as Ollama's own client reads it
(``host``, ``host:port``, ``:port``, with or without scheme; port 11434 unless told), else
``$OLLAMA_API_URL`` (a full URL), else ``http://127.0.0.1:11434``. No key is needed; one given
(a proxy in front of Ollama, Ollama's cloud) travels as ``Authorization: Bearer``.

A missing model is a :class:`~ipfs_accelerate_api.errors.NotFoundError` whose message says
how to pull it. A server older than ``/api/embed`` (it answers that route 404, not JSON) is
remembered, and embeddings then use the legacy ``/api/embeddings``, one text at a time, with
the vectors normalized as ``/api/embed`` returns them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .._enums import Priority
from ..config import Secret
from ..engine import Attempt, OpResult
from ..errors import NotFoundError, ResponseFormatError, StreamInterrupted
from ..transport import Response
from ..types import ChatChunk, ChatMessage, ChatResponse, CompletionResponse, ToolCall, Usage
from ._shape import as_count, as_dict, as_list, as_str, field, id_list
from .base import (
    Backend,
    Plan,
    StreamParser,
    call_arguments,
    check_messages,
    check_model,
    content_parts,
    estimate_tokens,
    unified_finish_reason,
)

__all__ = ["DEFAULT_HOST", "OllamaBackend", "parse_host"]

DEFAULT_PORT = 11434
DEFAULT_HOST = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_MAX_TOKENS_ESTIMATE = 256
F32_MAX = float(np.finfo(np.float32).max)

#: ``load``/``unload`` answer an empty prompt (the model was loaded or unloaded): a normal stop.
FINISH = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}
#: Unified parameter -> Ollama ``options`` field.
OPTIONS = {"max_tokens": "num_predict", "max_completion_tokens": "num_predict",
           "num_predict": "num_predict", "stop": "stop", "temperature": "temperature",
           "top_p": "top_p", "top_k": "top_k", "seed": "seed", "min_p": "min_p",
           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
           "repeat_penalty": "repeat_penalty", "num_ctx": "num_ctx"}

_MISSING_MODEL = re.compile(r"""model ["']([^"']+)["'] not found""")
_DATA_URL = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[^,;]*)*?;base64,(.*)", re.DOTALL)


def parse_host(host: str | None) -> str:
    """``$OLLAMA_HOST`` as a base URL, the way Ollama's Python client reads it:
    ``example.com`` -> ``http://example.com:11434``, ``:8080`` -> ``http://127.0.0.1:8080``,
    ``https://h`` -> ``https://h:443``, a path kept, IPv6 in brackets."""
    host, port = (host or "").strip(), DEFAULT_PORT
    scheme, _, hostport = host.partition("://")
    if not hostport:
        scheme, hostport = "http", host
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    split = urlsplit(f"{scheme}://{hostport}")
    name = split.hostname or "127.0.0.1"
    port = split.port or port
    try:
        if isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address):
            name = f"[{name}]"
    except ValueError:
        pass
    path = split.path.strip("/")
    return f"{scheme}://{name}:{port}" + (f"/{path}" if path else "")


def _env_base_url(env: Mapping[str, str]) -> str | None:
    if env.get("OLLAMA_HOST", "").strip():
        return parse_host(env["OLLAMA_HOST"])
    url = env.get("OLLAMA_API_URL", "").strip().rstrip("/")
    return url.removesuffix("/api") if url else None


# -- requests ------------------------------------------------------------------------------------

def _image(url: str, where: str) -> str:
    """An image part's URL as the bare base64 Ollama takes (it fetches no URLs)."""
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise ValueError(f"{where}: ollama takes images as base64 data URLs "
                         "('data:image/png;base64,...'), not links")
    try:
        base64.b64decode(match.group(1), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{where}: the data URL's base64 does not decode") from exc
    return match.group(1)


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """A message's content as Ollama's text and ``images``."""
    if content is None or isinstance(content, str):
        return content or "", []
    text, images = [], []
    for kind, value in content_parts(content, where, "ollama"):
        if kind == "text":
            text.append(value)
        else:
            images.append(_image(value, where))
    return "".join(text), images


def to_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages as Ollama's: text and images apart, tool calls with object
    arguments, a tool result named by ``tool_name`` (from the call it answers)."""
    out = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(check_messages(messages)):
        where = f"messages[{i}]"
        text, images = _content(m.get("content"), f"{where}.content")
        msg: dict[str, Any] = {"role": "system" if m["role"] == "developer" else m["role"],
                               "content": text}
        if images:
            msg["images"] = images
        calls = []
        for k, call in enumerate(m.get("tool_calls") or []):
            fn = call.get("function") or {}
            if not isinstance(fn.get("name"), str):
                raise TypeError(f"{where}.tool_calls[{k}].function.name must be a string")
            call_names[str(call.get("id"))] = fn["name"]
            calls.append({"function": {"name": fn["name"], "arguments": call_arguments(
                fn.get("arguments"), f"{where}.tool_calls[{k}]")}})
        if calls:
            msg["tool_calls"] = calls
        if m["role"] == "tool":
            name = m.get("tool_name") or m.get("name") or call_names.get(str(m.get("tool_call_id")))
            if isinstance(name, str):
                msg["tool_name"] = name
        out.append(msg)
    return out


def _body(params: dict[str, Any], stream: bool) -> dict[str, Any]:
    """Unified parameters as ``options``; Ollama's own fields (``format``, ``keep_alive``,
    ``think``, ``tools``, ``system``...) passed through as they are."""
    options = dict(params.pop("options", None) or {})
    for name in list(params):
        if name in OPTIONS and params[name] is not None:
            value = params.pop(name)
            options[OPTIONS[name]] = [value] if name == "stop" and isinstance(value, str) else value
    body = {k: v for k, v in params.items() if v is not None}
    if options:
        body["options"] = options
    body["stream"] = stream
    return body


# -- answers -------------------------------------------------------------------------------------

def _usage(data: dict[str, Any]) -> Usage:
    p = as_count(data.get("prompt_eval_count"), "prompt_eval_count")
    c = as_count(data.get("eval_count"), "eval_count")
    return Usage(p, c, p + c)


def _tool_calls(message: dict[str, Any]) -> list[ToolCall]:
    calls = []
    for i, call in enumerate(as_list(message.get("tool_calls") or [], "message.tool_calls")):
        where = f"message.tool_calls[{i}]"
        fn = as_dict(field(as_dict(call, where), "function", where), f"{where}.function")
        name = as_str(field(fn, "name", f"{where}.function"), f"{where}.function.name")
        args = as_dict(fn.get("arguments") or {}, f"{where}.function.arguments")
        call_id = as_str(call.get("id"), f"{where}.id", optional=True)
        calls.append(ToolCall(id=call_id or f"call_{i}_{name}", name=name,
                              arguments=json.dumps(args)))
    return calls


def _finish(data: dict[str, Any], calls: list[ToolCall]) -> str | None:
    if data.get("done") is not True:
        return None
    return "tool_calls" if calls else unified_finish_reason(
        data.get("done_reason") or "stop", FINISH, "done_reason")


def _error_line(data: dict[str, Any], backend: str) -> None:
    """An ``{"error": ...}`` line: the service failed after the 200."""
    if data.get("error") is not None:
        raise StreamInterrupted(f"{backend}: error in stream: {str(data['error'])[:500]}",
                                backend=backend)


def _message(data: dict[str, Any]) -> tuple[str, list[ToolCall]]:
    message = as_dict(field(data, "message", "response"), "message")
    return as_str(message.get("content") or "", "message.content"), _tool_calls(message)


def _row(values: Any, where: str) -> np.ndarray:
    values = as_list(values, where, nonempty=True)
    for x in values:
        if type(x) not in (int, float) or not abs(x) <= F32_MAX:  # NaN fails too
            raise ResponseFormatError(f"{where} should hold float32 numbers, got {x!r}")
    return np.asarray(values, dtype=np.float32)


class _Stream(StreamParser):
    """An NDJSON stream of ``/api/chat`` (``chat=True``) or ``/api/generate`` lines; the
    ``done: true`` line is the last and carries the counts."""

    def __init__(self, backend: str, chat: bool) -> None:
        self.backend, self.chat = backend, chat

    def feed(self, line: Any) -> ChatChunk:
        data = as_dict(line, "stream line")
        _error_line(data, self.backend)
        if self.chat:
            text, calls = _message(data)
        else:
            text, calls = as_str(data.get("response") or "", "response"), []
        done = data.get("done") is True
        self.complete = self.complete or done
        return ChatChunk(text=text, finish_reason=_finish(data, calls),
                         usage=_usage(data) if done else None, raw=data, tool_calls=[
                             {"index": i, "id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments}}
                             for i, c in enumerate(calls)])


class _Progress(StreamParser):
    """``/api/pull`` status lines; ``{"status": "success"}`` is the last."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def feed(self, line: Any) -> ChatChunk:
        data = as_dict(line, "progress line")
        _error_line(data, self.backend)
        status = as_str(field(data, "status", "progress line"), "status")
        for key in ("total", "completed"):
            as_count(data.get(key), key)
        self.complete = self.complete or status == "success"
        return ChatChunk(raw=data)


class OllamaBackend(Backend):
    name = "ollama"
    env_prefix = "OLLAMA"
    default_base_url = DEFAULT_HOST
    requires_key = False
    stream_format = "ndjson"

    def __init__(self, **options: Any) -> None:
        # $OLLAMA_HOST / $OLLAMA_API_URL come after base_url= and the credentials file
        self.default_base_url = _env_base_url(os.environ) or DEFAULT_HOST
        super().__init__(**options)
        self._legacy_embed = False  # the server has no /api/embed (learnt from its 404)

    # -- conventions ----------------------------------------------------------------------
    def _auth_headers(self, key: Secret | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.reveal()}"} if key is not None else {}

    def _error_message(self, body: Any) -> tuple[str, str | None]:
        """``{"error": "..."}``; a missing model's message says how to get it."""
        if not isinstance(body, dict) or body.get("error") is None:
            return str(body)[:500], None
        message = str(body["error"])[:500]
        missing = _MISSING_MODEL.search(message)
        if missing:
            model = missing.group(1)
            return (f"{message} (run `ollama pull {model}` on the server, or "
                    f"backend.pull_model({model!r}))"), "model_not_found"
        return message, None

    @staticmethod
    def _estimate(body: Mapping[str, Any], encoded: bytes) -> int:
        out = (body.get("options") or {}).get("num_predict")
        if isinstance(out, bool) or not isinstance(out, int) or out <= 0:
            out = DEFAULT_MAX_TOKENS_ESTIMATE
        return len(encoded) // 4 + 1 + out

    def _post(self, path: str, body: dict[str, Any], parse: Callable[[Response], OpResult]) -> Plan:
        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", path, parse, body=encoded), self._estimate(body, encoded))

    def _stream(self, path: str, body: dict[str, Any], chat: bool) -> Plan:
        encoded = json.dumps(body).encode()
        name = self.name
        return self._stream_plan(path, encoded, self._estimate(body, encoded),
                                 lambda: _Stream(name, chat))

    # -- chat and generate ------------------------------------------------------------------
    def _plan_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        body = {"model": model, "messages": to_messages(messages), **_body(params, False)}

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            text, calls = _message(data)
            usage = _usage(data)
            message = ChatMessage("assistant", (text or None) if calls else text, calls)
            return OpResult(ChatResponse(text, message, _finish(data, calls), usage,
                                         as_str(data.get("model"), "model", optional=True),
                                         None, data),
                            usage.prompt_tokens, usage.completion_tokens, resp.headers)

        return self._post("/api/chat", body, parse)

    def _plan_stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        body = {"model": model, "messages": to_messages(messages), **_body(params, True)}
        return self._stream("/api/chat", body, chat=True)

    @staticmethod
    def _prompt(prompt: Any) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        return prompt

    def _plan_complete(self, prompt: str, *, model: str, **params: Any) -> Plan:
        body = {"model": model, "prompt": self._prompt(prompt), **_body(params, False)}

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            text = as_str(field(data, "response", "response"), "response")
            usage = _usage(data)
            return OpResult(CompletionResponse(text, _finish(data, []), usage,
                                               as_str(data.get("model"), "model", optional=True),
                                               None, data),
                            usage.prompt_tokens, usage.completion_tokens, resp.headers)

        return self._post("/api/generate", body, parse)

    def stream_complete(self, prompt: str, *, model: str | None = None,
                        priority: int = Priority.NORMAL, **params: Any) -> Iterator[ChatChunk]:
        """A completion (``/api/generate``) as an iterator of :class:`ChatChunk`."""
        return self._run("stream_complete", prompt, model=model, priority=priority, **params)  # type: ignore[no-any-return]

    async def astream_complete(self, prompt: str, *, model: str | None = None,
                               **kw: Any) -> AsyncIterator[ChatChunk]:
        """``async for chunk in backend.astream_complete(...)``, as ``astream_chat``."""
        async for chunk in self._astream("stream_complete", prompt, model=model, **kw):
            yield chunk

    def _plan_stream_complete(self, prompt: str, *, model: str, **params: Any) -> Plan:
        body = {"model": model, "prompt": self._prompt(prompt), **_body(params, True)}
        return self._stream("/api/generate", body, chat=False)

    # -- embeddings ---------------------------------------------------------------------------
    def _plan_embed(self, texts: list[str], *, model: str, **params: Any) -> Plan:
        extra = {k: v for k, v in params.items() if v is not None}
        n = len(texts)

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            items = as_list(field(data, "embeddings", "response"), "embeddings")
            if len(items) != n:
                raise ResponseFormatError(f"{self.name}: asked for {n} embeddings, got {len(items)}")
            rows = [_row(v, f"embeddings[{i}]") for i, v in enumerate(items)]
            if any(len(r) != len(rows[0]) for r in rows):
                raise ResponseFormatError(f"{self.name}: embeddings of different dimensions")
            return OpResult(np.vstack(rows), as_count(data.get("prompt_eval_count"),
                                                      "prompt_eval_count"), 0, resp.headers)

        def parse_legacy(resp: Response) -> OpResult:
            row = _row(field(as_dict(resp.json(), "response"), "embedding", "response"), "embedding")
            norm = float(np.linalg.norm(row))
            return OpResult(row / norm if norm else row, headers=resp.headers)

        current = self._http("POST", "/api/embed", parse,
                             json_body={"model": model, "input": texts, **extra})
        legacy_extra = {k: v for k, v in extra.items() if k in ("options", "keep_alive")}
        legacy = [self._http("POST", "/api/embeddings", parse_legacy,
                             json_body={"model": model, "prompt": t, **legacy_extra})
                  for t in texts]

        def operation(attempt: Attempt) -> OpResult:
            if not self._legacy_embed:
                try:
                    return current(attempt)  # type: ignore[no-any-return]
                except NotFoundError as exc:
                    if isinstance(exc.body, dict) and exc.body.get("error") is not None:
                        raise  # a JSON 404 is the model's: the route exists
                    self._legacy_embed = True
            rows = [op(attempt).value for op in legacy]
            if any(len(r) != len(rows[0]) for r in rows):
                raise ResponseFormatError(f"{self.name}: embeddings of different dimensions")
            return OpResult(np.vstack(rows))

        return Plan(operation, sum(estimate_tokens(t) for t in texts))

    # -- models and the server --------------------------------------------------------------
    def _get(self, path: str, read: Callable[[Any], Any]) -> Plan:
        return Plan(self._http("GET", path, lambda resp: OpResult(read(resp.json()),
                                                                 headers=resp.headers)))

    def _plan_list_models(self) -> Plan:
        return self._get("/api/tags", lambda body: id_list(body, "models", "name"))

    def show_model(self, name: str, *, verbose: bool = False,
                   priority: int = Priority.NORMAL) -> dict[str, Any]:
        """``/api/show``: the model's ``details``, ``model_info``, ``capabilities``,
        ``template``, ``parameters``..., as the server sends them."""
        return self._run("show_model", name, verbose=verbose, priority=priority)  # type: ignore[no-any-return]

    def _plan_show_model(self, name: str, *, verbose: bool = False) -> Plan:
        body = {"model": self._name(name), "verbose": verbose}
        return Plan(self._http("POST", "/api/show", lambda resp: OpResult(
            as_dict(resp.json(), "response"), headers=resp.headers), json_body=body))

    def pull_model(self, name: str, *, progress: Callable[[dict[str, Any]], Any] | None = None,
                   insecure: bool = False, priority: int = Priority.NORMAL) -> dict[str, Any]:
        """Download ``name`` onto the server (``/api/pull``), handing each status line
        (``{"status", "digest", "total", "completed"}``) to ``progress``; returns the last
        (``{"status": "success"}``). An error line raises :class:`StreamInterrupted`."""
        last: dict[str, Any] = {}
        chunks = self._run("pull_model", name, insecure=insecure, priority=priority)
        try:
            for chunk in chunks:
                last = chunk.raw
                if progress is not None:
                    progress(last)
        finally:
            chunks.close()  # a callback that raised leaves no connection behind
        return last

    def _plan_pull_model(self, name: str, *, insecure: bool = False) -> Plan:
        body = json.dumps({"model": self._name(name), "insecure": insecure,
                           "stream": True}).encode()
        backend = self.name
        return self._stream_plan("/api/pull", body, 0, lambda: _Progress(backend))

    def running_models(self, *, priority: int = Priority.NORMAL) -> list[dict[str, Any]]:
        """``/api/ps``: the loaded models, each ``{"name", "size_vram", "expires_at", ...}``."""
        return self._run("running_models", priority=priority)  # type: ignore[no-any-return]

    def _plan_running_models(self) -> Plan:
        def read(body: Any) -> list[dict[str, Any]]:
            items = as_list(field(as_dict(body, "response"), "models", "response"), "models")
            for i, m in enumerate(items):
                as_str(field(as_dict(m, f"models[{i}]"), "name", f"models[{i}]"), f"models[{i}].name")
            return items

        return self._get("/api/ps", read)

    def version(self, *, priority: int = Priority.NORMAL) -> str:
        """The server's version (``/api/version``)."""
        return self._run("version", priority=priority)  # type: ignore[no-any-return]

    def _plan_version(self) -> Plan:
        return self._get("/api/version", lambda body: as_str(
            field(as_dict(body, "response"), "version", "response"), "version"))

    @staticmethod
    def _name(name: Any) -> str:
        return check_model(name)
