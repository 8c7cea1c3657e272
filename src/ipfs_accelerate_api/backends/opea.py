"""OPEA (GenAIComps / GenAIExamples), PROTOCOLS.md §9.

- ``chat`` / ``stream_chat``: the ChatQnA megaservice's ``/v1/chatqna`` (``base_url``, default
  ``http://127.0.0.1:8888``, else ``OPEA_API_URL``). ``messages`` may be a list of chat
  messages or a plain string; ``model`` is optional. ``stream`` defaults to true on that
  route, so it is always sent. A plain answer is a ``chat.completion`` (parsed by the OpenAI
  adapter); the stream is *not* JSON: each event is ``data: b'...'``, the Python ``repr`` of
  the UTF-8 bytes of one delta, and ``data: [DONE]`` ends it. The bytes are kept in a buffer
  across events, so a character split between two events decodes right.
- ``chat(..., via="llm")`` / ``stream_chat(..., via="llm")``: the LLM microservice's
  OpenAI-compatible ``/v1/chat/completions``, parsed by the OpenAI adapter.
- ``embed`` (``/v1/embeddings``, OpenAI's shape), ``retrieve(text, embedding=None, k=4)``
  (``/v1/retrieval``; the text is embedded first when no embedding is given) -> the
  documents' texts, ``rerank(query, texts, top_n=1)`` (``/v1/reranking``) -> ``(index,
  score)`` pairs best first, ``health(service=None)`` (``/v1/health_check``; a probe).
  Each microservice has its own URL: ``services={"llm": url, "embedding": url, "retrieval":
  url, "reranking": url}``; those left out are the base URL's host on ports 9000, 6000, 7000
  and 8000. The key, if any, goes to every one of them.
- Errors are FastAPI's: a 422 ``{"detail": [{"loc", "msg", "type"}]}`` becomes
  :class:`~ipfs_accelerate_api.errors.UnprocessableEntityError` naming the fields (not
  retried); ``{"detail": "..."}`` otherwise; 5xx are retried.
- No key by default (``requires_key = False``); one given (``OPEA_API_KEY``) is sent as
  ``Authorization: Bearer`` (a gateway in front of the services).
"""

from __future__ import annotations

import ast
import codecs
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .._enums import Priority
from ..engine import OpResult
from ..errors import ResponseFormatError
from ..transport import Response, SSEEvent
from ..types import ChatChunk
from ._shape import as_dict, as_list, as_str, field
from .base import STREAM_END, Plan, StreamParser, _check_base_url, _check_texts, check_messages
from .openai import OpenAIBackend, embeddings_parser

__all__ = ["OPEABackend", "bytes_literal"]

DEFAULT_BASE_URL = "http://127.0.0.1:8888"
URL_ENV = "OPEA_API_URL"
CHATQNA_PATH = "/v1/chatqna"
#: Each microservice's default port (on the base URL's host).
SERVICE_PORTS = {"llm": 9000, "embedding": 6000, "retrieval": 7000, "reranking": 8000}
VIA = ("chatqna", "llm")


def bytes_literal(data: str) -> bytes:
    """The bytes of one megaservice stream event's data, ``b'...'`` (a Python bytes repr)."""
    if len(data) < 3 or data[0] != "b" or data[1] not in "'\"" or data[-1] != data[1]:
        raise ResponseFormatError(f"opea: stream event is not a bytes literal: {data[:80]!r}")
    try:
        value = ast.literal_eval(data)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ResponseFormatError(f"opea: bad bytes literal in stream: {data[:80]!r}") from exc
    if not isinstance(value, bytes):
        raise ResponseFormatError(f"opea: stream event is not a bytes literal: {data[:80]!r}")
    return value


def _detail_message(detail: Any) -> str:
    """FastAPI's ``detail``: a string, or validation errors naming each field."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail[:10]:
            if not isinstance(item, dict):
                parts.append(str(item)[:200])
                continue
            loc = item.get("loc")
            where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
            parts.append(f"{where or 'body'}: {item.get('msg', '')}")
        return "; ".join(parts) or "validation error"
    return str(detail)[:500]


class OPEABackend(OpenAIBackend):
    name = "opea"
    env_prefix = "OPEA"
    default_base_url = DEFAULT_BASE_URL
    requires_key = False
    model_required = False
    stream_include_usage = False

    # What the OpenAI adapter has and OPEA does not.
    _plan_generate_image = None  # type: ignore[assignment]
    _plan_transcribe = None  # type: ignore[assignment]
    _plan_speech = None  # type: ignore[assignment]
    _plan_complete = None  # type: ignore[assignment]
    _plan_list_models = None  # type: ignore[assignment]

    def __init__(self, *, base_url: str | None = None,
                 services: Mapping[str, str] | None = None, **options: Any) -> None:
        super().__init__(base_url=base_url or os.environ.get(URL_ENV) or None, **options)
        given = dict(services or {})
        unknown = set(given) - set(SERVICE_PORTS)
        if unknown:
            raise ValueError(f"opea: unknown services {sorted(unknown)}; "
                             f"known: {', '.join(SERVICE_PORTS)}")
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        self.services = {
            name: _check_base_url(f"opea services[{name!r}]",
                                  given.get(name) or f"{parts.scheme}://{host}:{port}")
            for name, port in SERVICE_PORTS.items()}

    @property
    def api_prefix(self) -> str:  # type: ignore[override]  # the OpenAI adapter's chat goes to the LLM microservice
        return self.services["llm"] + "/v1"

    # -- conventions ----------------------------------------------------------------------
    def _error_message(self, body: Any) -> tuple[str, str | None]:
        if isinstance(body, dict) and "detail" in body:
            detail = body["detail"]
            code = None
            if isinstance(detail, list) and detail and isinstance(detail[0], dict):
                kind = detail[0].get("type")
                code = kind if isinstance(kind, str) else None
            return _detail_message(detail), code
        return super()._error_message(body)

    def _plan(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan:
        if "model" in kwargs and kwargs["model"] is None:  # the services have their model
            kwargs.pop("model")
        return super()._plan(method, args, kwargs)

    # -- chat -------------------------------------------------------------------------------
    def _chat_body(self, messages: Any, model: str | None, params: dict[str, Any]) -> dict[str, Any]:
        """The LLM microservice's body (``messages`` may be a string; ``model`` optional)."""
        return self._megaservice_body(messages, model, params, bool(params.pop("stream", False)))

    def _megaservice_body(self, messages: Any, model: str | None, params: dict[str, Any],
                          stream: bool) -> dict[str, Any]:
        if not isinstance(messages, str):
            check_messages(messages)
        elif not messages:
            raise ValueError("messages must be a non-empty string or list of messages")
        body = {"messages": messages, **params, "stream": stream}
        if model is not None:
            body["model"] = model
        return body

    def _plan_chat(self, messages: Any, *, model: str | None = None, via: str = "chatqna",
                   **params: Any) -> Plan:
        if via not in VIA:
            raise ValueError(f"opea: via must be one of {VIA}, got {via!r}")
        if via == "llm":
            return super()._plan_chat(messages, model=model, **params)  # type: ignore[arg-type]
        return self._chat_request(CHATQNA_PATH,
                                  self._megaservice_body(messages, model, params, False))

    def _plan_stream_chat(self, messages: Any, *, model: str | None = None,
                          via: str = "chatqna", **params: Any) -> Plan:
        if via not in VIA:
            raise ValueError(f"opea: via must be one of {VIA}, got {via!r}")
        if via == "llm":
            return super()._plan_stream_chat(messages, model=model, **params)  # type: ignore[arg-type]
        body = self._megaservice_body(messages, model, params, True)
        encoded = json.dumps(body).encode()
        return self._stream_plan(CHATQNA_PATH, encoded, self._estimate(body, encoded),
                                 lambda: _BytesLiteralStream(self))

    # -- the microservices --------------------------------------------------------------------
    def _plan_embed(self, texts: list[str], *, model: str | None = None, **params: Any) -> Plan:
        extra = {"model": model} if model is not None else {}
        body = {"input": texts, **extra, **params}
        return Plan(self._http("POST", self.services["embedding"] + "/v1/embeddings",
                               embeddings_parser(len(texts), self.name), json_body=body),
                    float(sum(len(t) // 4 + 1 for t in texts)))

    def retrieve(self, text: str, *, embedding: Sequence[float] | np.ndarray | None = None,
                 k: int = 4, priority: int = Priority.NORMAL, **params: Any) -> list[str]:
        """The texts of the ``k`` documents the retriever finds for ``text``; ``text`` is
        embedded first (``embed``) when no ``embedding`` is given."""
        if not isinstance(text, str):
            raise TypeError(f"retrieve: text must be a string, got {type(text).__name__}")
        if type(k) is not int or k < 1:
            raise ValueError(f"retrieve: k must be a positive integer, got {k!r}")
        if embedding is None:
            embedding = self.embed(text, priority=priority)[0]
        vector = np.asarray(embedding, dtype=np.float64)
        if vector.ndim != 1 or not len(vector) or not np.isfinite(vector).all():
            raise ValueError("retrieve: embedding must be a non-empty vector of finite numbers")
        return self._run("retrieve", text, embedding=vector.tolist(), k=k,  # type: ignore[no-any-return]
                         priority=priority, **params)

    def _plan_retrieve(self, text: str, *, embedding: list[float], k: int, **params: Any) -> Plan:
        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            docs = as_list(field(data, "retrieved_docs", "response"), "retrieved_docs")
            return OpResult([as_str(field(as_dict(d, f"retrieved_docs[{i}]"), "text",
                                          f"retrieved_docs[{i}]"), f"retrieved_docs[{i}].text")
                             for i, d in enumerate(docs)], headers=resp.headers)

        body = {"text": text, "embedding": embedding, "k": k, **params}
        return Plan(self._http("POST", self.services["retrieval"] + "/v1/retrieval", parse,
                               json_body=body), float(len(text) // 4 + 1))

    def rerank(self, query: str, texts: Sequence[str], *, top_n: int = 1,
               priority: int = Priority.NORMAL, **params: Any) -> list[tuple[int, float]]:
        """``(index into texts, score)`` pairs of the ``top_n`` best texts, best first."""
        return self._run("rerank", query, texts, top_n=top_n, priority=priority,  # type: ignore[no-any-return]
                         **params)

    def _plan_rerank(self, query: str, texts: Sequence[str], *, top_n: int, **params: Any) -> Plan:
        if not isinstance(query, str):
            raise TypeError(f"rerank: query must be a string, got {type(query).__name__}")
        docs = _check_texts(texts)
        if type(top_n) is not int or top_n < 1:
            raise ValueError(f"rerank: top_n must be a positive integer, got {top_n!r}")

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            ranked = as_list(field(data, "reranked_docs", "response"), "reranked_docs")
            free: dict[str, list[int]] = {}
            for i, t in enumerate(docs):
                free.setdefault(t, []).append(i)
            out = []
            for i, d in enumerate(ranked):
                where = f"reranked_docs[{i}]"
                d = as_dict(d, where)
                text = as_str(field(d, "text", where), f"{where}.text")
                score = field(d, "score", where)
                if isinstance(score, bool) or not isinstance(score, (int, float)):
                    raise ResponseFormatError(f"{where}.score should be a number, got {score!r:.80}")
                if not free.get(text):  # the service answers texts: map each back once
                    raise ResponseFormatError(f"opea: {where}.text is not one of the texts sent")
                out.append((free[text].pop(0), float(score)))
            out.sort(key=lambda pair: -pair[1])
            return OpResult(out[:top_n], headers=resp.headers)

        body = {"input": query, "retrieved_docs": [{"text": t} for t in docs], "top_n": top_n,
                **params}
        return Plan(self._http("POST", self.services["reranking"] + "/v1/reranking", parse,
                               json_body=body), float(sum(len(t) // 4 + 1 for t in [query, *docs])))

    def health(self, service: str | None = None) -> bool:
        """Whether the megaservice (or the named microservice) answers ``/v1/health_check``.
        A probe: not queued, not retried; any failure is False."""
        if service is not None and service not in self.services:
            raise ValueError(f"opea: unknown service {service!r}; known: {', '.join(self.services)}")
        root = self.base_url if service is None else self.services[service]
        return self._probe(root + "/v1/health_check")

    async def aretrieve(self, text: str, **kw: Any) -> list[str]:
        import asyncio

        return await asyncio.to_thread(self.retrieve, text, **kw)

    async def arerank(self, query: str, texts: Sequence[str], **kw: Any) -> list[tuple[int, float]]:
        return await self._arun("rerank", query, texts, **{"top_n": 1, **kw})  # type: ignore[no-any-return]


class _BytesLiteralStream(StreamParser):
    """The megaservice's events: ``data: b'...'`` (bytes repr) each, ``data: [DONE]`` last.
    The bytes go through one incremental UTF-8 decoder, so a character cut between two
    events comes out whole in the second. (An OpenAI chunk, ``data: {...}``, is read too.)"""

    def __init__(self, backend: OPEABackend) -> None:
        self._backend = backend
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def feed(self, event: SSEEvent) -> Any:
        data = event.data
        if data == "[DONE]":
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                raise ResponseFormatError("opea: stream ended inside a UTF-8 character") from exc
            return STREAM_END
        if data.startswith("{"):
            return self._backend._stream_chunk(event)
        try:
            text = self._decoder.decode(bytes_literal(data))
        except UnicodeDecodeError as exc:
            raise ResponseFormatError("opea: stream text is not UTF-8") from exc
        return ChatChunk(text=text, raw=data) if text else None
