"""What every backend shares: options, credentials, the engine, the transport, sync / submit /
async forms of each method, caller-input checks, embedding batching, HTTP error mapping, the
stream life cycle, and keeping keys out of errors.

An adapter subclasses :class:`Backend` and writes only ``_plan_<method>`` functions (build the
request, parse the answer), ``_auth_headers``, ``_error_message`` and, for streams, one
function from a wire event to a :class:`~ipfs_accelerate_api.types.ChatChunk` (see
:meth:`Backend._stream_plan`).
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import re
import threading
from collections.abc import Mapping as MappingABC, Set
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np

from .._enums import Priority
from ..config import (
    BreakerPolicy,
    RetryPolicy,
    Secret,
    Timeouts,
    check_header_value,
    coerce_option,
    resolve_credentials,
)
from ..core import pack_batches
from ..engine import Attempt, Engine, OpResult, RateLimitInfo, check_priority, new_request_id
from ..engine.batching import LIST, BatchKind, Batcher, gather
from ..errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    ContentFilteredError,
    ContextWindowExceededError,
    ResponseFormatError,
    _UnprocessableContextWindow,
    StreamInterrupted,
    StreamTimeoutError,
    UnsupportedOperation,
    status_error_class,
)
from ..transport import Response, Transport, iter_ndjson, iter_sse
from ..types import ChatChunk

__all__ = ["Backend", "OnceCache", "Plan", "STREAM_END", "StreamParser", "call_arguments",
           "check_list", "check_messages",
           "check_model", "content_parts", "unified_finish_reason"]

DEFAULT_BATCH_SIZE = 256
DEFAULT_BATCH_TIMEOUT = 0.005


@dataclass
class Plan:
    """A ready-to-submit operation and its token estimate (for the tokens-per-minute limit)."""

    operation: Callable[[Attempt], Any]
    est_tokens: float = 0.0
    #: The model asked for (usage and cost are counted per model); set from the call's
    #: ``model=`` when the planner leaves it None.
    model: str | None = None


def estimate_tokens(text: str) -> int:
    """A cheap, conservative token estimate: one token per four characters."""
    return len(text) // 4 + 1


#: What a stream-event parser returns for the stream's terminator (``[DONE]`` and the like).
STREAM_END: Any = object()

class StreamParser:
    """Turns one stream's wire events into chunks (:class:`ChatChunk`); one instance per attempt,
    so it may keep state across events (usage split over several events, tool-call JSON
    arriving in pieces). Subclass it, or pass a plain function to :meth:`from_function`.

    ``feed(event)`` returns a chunk, None (an event that carries nothing, such as a ping: it
    does not count against ``stream_idle``) or :data:`STREAM_END`. ``complete`` says whether
    a stream that simply stops (no terminator event) ended normally: services without a
    terminator set it once they have seen their final event.
    """

    complete = False

    def feed(self, event: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def from_function(cls, fn: Callable[[Any], Any]) -> Callable[[], "StreamParser"]:
        """A parser factory for a stateless ``event -> chunk | None | STREAM_END`` function."""

        class _Stateless(cls):  # type: ignore[valid-type, misc]
            def feed(self, event: Any) -> Any:
                return fn(event)

        return _Stateless


def unified_finish_reason(raw: Any, table: Mapping[str, str], where: str = "finish_reason") -> str | None:
    """A service's stop reason as one of ``stop``, ``length``, ``tool_calls``,
    ``content_filter`` (None while the reply is unfinished). Values the table does not know
    pass through unchanged (the raw value also stays in ``.raw``)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ResponseFormatError(f"{where} should be a string, got {type(raw).__name__}")
    return table.get(raw, raw)


class OnceCache:
    """Values computed once per key (a model's metadata, its limits): concurrent first
    callers wait for the one computation; a computation that raises is not cached, so the
    next caller tries again."""

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        self._computing: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                return self._values[key]
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = compute()
            self.set(key, value)
            return value

    def set(self, key: Any, value: Any) -> None:
        with self._lock:
            self._values[key] = value
            self._computing.pop(key, None)


REDACTED = "[redacted]"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def check_model(model: Any) -> str:
    """The ``model`` argument: a non-empty string of printable characters."""
    if model is None:
        raise ValueError("model is required: pass model='...'")
    if not isinstance(model, str):
        raise ValueError(f"model must be a string, got {type(model).__name__}")
    if not model.strip() or not model.isprintable():
        raise ValueError(f"model must be a non-empty name of printable characters, got {model!r}")
    return model


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """OpenAI-style chat messages: a non-empty list of dicts, each with a string ``role`` and
    a ``content`` that is a string, a list of content parts (dicts with a string ``type``),
    or None/absent in a message that carries ``tool_calls``."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TypeError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise TypeError(f"messages[{i}]['role'] must be a non-empty string, got {role!r}")
        content = m.get("content")
        if content is None:
            if not m.get("tool_calls"):
                raise TypeError(f"messages[{i}]['content'] is missing (None is allowed only "
                                "in a message with tool_calls)")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise TypeError(f"messages[{i}]['content'][{j}] must be a content part, "
                                    "a dict with a string 'type'")
        elif not isinstance(content, str):
            raise TypeError(f"messages[{i}]['content'] must be a string, a list of content "
                            f"parts or None, got {type(content).__name__}")
    return messages


def call_arguments(arguments: Any, where: str) -> dict[str, Any]:
    """An OpenAI-style tool call's ``arguments`` (a JSON string, or already an object) as the
    object services that take objects want (Gemini's ``args``, Ollama's ``arguments``)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if arguments else {}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: arguments must be a JSON object") from exc
    if not isinstance(value, dict):
        raise TypeError(f"{where}: arguments must be a JSON object")
    return value


def content_parts(content: list[Any], where: str, service: str) -> Iterator[tuple[str, str]]:
    """The parts of an OpenAI-style content list (already shape-checked by
    :func:`check_messages`) as ``("text", text)`` and ``("image_url", url)``; any other part
    type is a ``ValueError`` naming ``service``, an image without a URL string a ``TypeError``."""
    for j, part in enumerate(content):
        kind = part["type"]
        if kind == "text" and isinstance(part.get("text"), str):
            yield "text", part["text"]
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise TypeError(f"{where}[{j}]: image_url needs a 'url' string")
            yield "image_url", url
        else:
            raise ValueError(f"{where}[{j}]: {service} takes 'text' and 'image_url' parts, "
                             f"got {kind!r}")


def check_list(items: Any, *, op: str, plural: str, singular: str) -> list[Any]:
    """A caller's sequence argument as a non-empty list; a string, bytes, a mapping or a set
    (which iterate, but are not a list of items) is a ``TypeError``, an empty one a
    ``ValueError``: ``"{op} takes {plural}, not dict"``, ``"{op} needs at least one
    {singular}"``."""
    if isinstance(items, (str, bytes, bytearray, memoryview, MappingABC, Set)) \
            or not hasattr(items, "__iter__"):
        raise TypeError(f"{op} takes {plural}, not {type(items).__name__}")
    out = list(items)
    if not out:
        raise ValueError(f"{op} needs at least one {singular}")
    return out


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    out = check_list(texts, op="embed", plural="a string or a sequence of strings",
                     singular="text")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"embed takes strings; texts[{i}] is {type(t).__name__}")
    return out


#: Keys shorter than this are redacted only where they stand alone (not inside a word).
_SHORT_KEY = 8


def _key_pattern(keys: Sequence[Secret]) -> re.Pattern[str] | None:
    """One pattern matching every key, longest first."""
    parts = []
    for value in sorted({k.reveal() for k in keys}, key=len, reverse=True):
        escaped = re.escape(value)
        parts.append(escaped if len(value) >= _SHORT_KEY
                     else rf"(?<![\w-]){escaped}(?![\w-])")
    return re.compile("|".join(parts)) if parts else None


def _check_limit(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number (None for no limit), "
                                 f"got {value!r}")
    return float(value)


def _check_count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_base_url(name: str, url: Any) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(f"{name}: base_url must be a string")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{name}: base_url must start with http:// or https://")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ConfigurationError(f"{name}: base_url contains spaces, control or non-ASCII "
                                 "characters (percent-encode them)")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ConfigurationError(f"{name}: base_url must not carry credentials (user:password@); "
                                 "pass the key as api_key=... instead")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigurationError(f"{name}: base_url must not have a query string or a fragment "
                                 "(it is the prefix of every request path)")
    if not parts.hostname:
        raise ConfigurationError(f"{name}: base_url has no host")
    try:
        parts.port
    except ValueError:
        raise ConfigurationError(f"{name}: base_url has an invalid port") from None
    return url.rstrip("/")


class Backend:
    """Base class. Options (all keyword, all optional but the key where the service needs one):

    ``base_url``, ``api_key`` / ``api_keys``, ``key_strategy``, ``max_concurrency``,
    ``queue_size``, ``overflow``, ``rpm``, ``tpm``, ``retry`` (:class:`RetryPolicy`),
    ``breaker`` (:class:`BreakerPolicy`), ``timeout`` (:class:`Timeouts`), ``batch_size``,
    ``batch_timeout``, ``on_request_end``, ``verify``, ``coordination`` (a ``redis://`` URL or
    a :class:`~ipfs_accelerate_api.coordination.Coordination`: limits, breaker and key state
    shared by every process), ``prices`` (``{model: {"input", "output"}}`` in USD per million
    tokens, or a JSON file, over the bundled price table: ``stats()["cost"]``).
    """

    name = "base"
    #: Environment prefixes for keys, tried in order (``OPENAI`` -> ``OPENAI_API_KEY``...).
    env_prefix: str | tuple[str, ...] = "BASE"
    #: Headers every request of this service carries unless the caller's ``headers=`` sets
    #: them (Anthropic's ``anthropic-version``); the key's headers come from ``_auth_headers``.
    default_headers: Mapping[str, str] = {}
    #: How the service says a prompt is longer than the model takes: error codes, and
    #: phrases of its message (lower case), for :class:`ContextWindowExceededError`.
    context_window_codes: frozenset[str] = frozenset()
    context_window_phrases: tuple[str, ...] = ()
    #: Statuses a request retries at most so many times (TGI: ``{424: 1}``).
    retry_limits: Mapping[int, int] = {}
    default_base_url = ""
    requires_key = True
    request_id_header = "x-request-id"
    embed_max_items = 2048
    embed_max_tokens = 300_000
    #: Whether ``embed`` needs a ``model`` (a server that serves one model, such as TEI, does not).
    model_required = True
    #: Methods whose concurrent calls may be combined: each has a ``_submit_<method>(*args,
    #: priority=, sync=False, **kwargs) -> Future`` that goes through :meth:`_batched`.
    batched_methods: frozenset[str] = frozenset({"embed"})

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_keys: Sequence[str] | None = None,
        key_strategy: str = "round_robin",
        max_concurrency: int = 8,
        queue_size: int = 10_000,
        overflow: str = "block",
        rpm: float | None = None,
        tpm: float | None = None,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        timeout: Timeouts | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
        on_request_end: Callable[[Any], Any] | None = None,
        verify: bool = True,
        headers: Mapping[str, str] | None = None,
        coordination: Any = None,
        prices: Mapping[str, Any] | str | None = None,
    ) -> None:
        creds = resolve_credentials(self.name, self.env_prefix, api_key=api_key,
                                    api_keys=api_keys, required=self.requires_key)
        url = base_url or creds.base_url or self.default_base_url
        if not url:
            raise ConfigurationError(f"{self.name}: base_url is required")
        self.base_url = _check_base_url(self.name, url)
        for i, key in enumerate(creds.keys):
            check_header_value(key.reveal(), f"{self.name}: API key {i + 1} (from {creds.source})")
        retry = coerce_option(retry, RetryPolicy, "retry")
        breaker = coerce_option(breaker, BreakerPolicy, "breaker")
        timeout = coerce_option(timeout, Timeouts, "timeout")
        rpm, tpm = _check_limit("rpm", rpm), _check_limit("tpm", tpm)
        _check_count("max_concurrency", max_concurrency)
        _check_count("queue_size", queue_size)
        _check_count("batch_size", batch_size)
        if isinstance(batch_timeout, bool) or not isinstance(batch_timeout, (int, float)) \
                or not math.isfinite(batch_timeout) or batch_timeout < 0:
            raise ConfigurationError(f"batch_timeout must be a finite number >= 0, got {batch_timeout!r}")
        self._extra_headers = self._merge_headers(self.default_headers,
                                                  self._check_headers(headers))
        self._keys: tuple[Secret, ...] = creds.keys
        self._key_pattern = _key_pattern(creds.keys)
        self._transport = Transport(timeouts=timeout, maxsize=max_concurrency, verify=verify)
        self._shared: Any = None
        if coordination is not None:
            from ..coordination import attach

            self._shared = attach(coordination, self.name, self.base_url, creds.keys, rpm=rpm,
                                  tpm=tpm, key_strategy=key_strategy, breaker=breaker)
        self._engine = Engine(
            self.name, keys=creds.keys, key_strategy=key_strategy,
            max_concurrency=max_concurrency, queue_size=queue_size, overflow=overflow,
            rpm=rpm, tpm=tpm, retry=retry, breaker=breaker,
            ratelimit_parser=self._ratelimit_info, on_request_end=on_request_end,
            key_pool=self._shared and self._shared.key_pool,
            circuit=self._shared and self._shared.circuit,
        )
        if prices is not None and not isinstance(prices, (MappingABC, str)):
            raise ConfigurationError("prices must be a {model: {'input': ..., 'output': ...}} "
                                     "mapping (USD per million tokens) or a JSON file's path")
        self._prices_option = prices
        self._prices: Any = None  # the table, read on the first stats()
        self._batch_size = min(batch_size, self.embed_max_items)
        self._batch_timeout = batch_timeout
        self._batchers: dict[Any, Batcher] = {}

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.base_url} keys={len(self._keys)}"
                f"{' closed' if self._engine.closed else ''}>")

    # -- what adapters provide -------------------------------------------------------------
    def _auth_headers(self, key: Secret | None) -> dict[str, str]:
        return {}

    def _error_message(self, body: Any) -> tuple[str, str | None]:
        """(message, code) from an error body."""
        return str(body)[:500], None

    def _ratelimit_info(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        return None

    def _error_class(self, status: int, body: Any, code: str | None) -> type[APIStatusError]:
        """The exception class for an error answer; by status, unless a service says more in
        its body (Google answers a bad key with 400 ``API_KEY_INVALID``; a prompt longer than
        the model takes is :class:`ContextWindowExceededError`, by
        :attr:`context_window_codes` and :attr:`context_window_phrases`)."""
        if status in (400, 413, 422) and (self.context_window_codes or self.context_window_phrases):
            message = self._error_message(body)[0].lower()
            if code in self.context_window_codes \
                    or any(p in message for p in self.context_window_phrases):
                return _UnprocessableContextWindow if status == 422 else ContextWindowExceededError
        return status_error_class(status)

    def _retry_hint(self, body: Any) -> float | None:
        """Seconds to wait that an error *body* asks for (headers are read by the engine)."""
        return None

    # -- shared HTTP machinery ----------------------------------------------------------------
    @staticmethod
    def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
        """The ``headers=`` option: extra headers sent with every request, checked once."""
        if headers is None:
            return {}
        if not isinstance(headers, MappingABC):
            raise TypeError(f"headers must be a mapping of names to values, got {type(headers).__name__}")
        out = {}
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise ConfigurationError(f"headers: {name!r} is not a valid header name")
            out[name] = check_header_value(value, f"headers[{name!r}]")
        return out

    @staticmethod
    def _merge_headers(defaults: Mapping[str, str], given: dict[str, str]) -> dict[str, str]:
        """The service's default headers, overridden (case-insensitively) by the caller's."""
        taken = {k.lower() for k in given}
        return {**{k: v for k, v in defaults.items() if k.lower() not in taken}, **given}

    def _headers(self, attempt: Attempt, content_type: str | None = "application/json") -> dict[str, str]:
        h = {"X-Request-ID": attempt.request_id, "Accept": "application/json",
             "User-Agent": "ipfs-accelerate-api"}
        if content_type:
            h["Content-Type"] = content_type
        if self._extra_headers:
            h.update(self._extra_headers)
        h.update(self._auth_headers(attempt.key))
        return h

    def _probe(self, path: str, *, unreachable: bool | None = False) -> bool:
        """A health check: GET ``path`` (or an absolute URL) once, outside the queue, the
        limits and the retries. True on 2xx, False on an error status; no connection is
        ``unreachable`` (False), or the :class:`APIConnectionError` when that is None."""
        probe = self._http("GET", path, lambda resp: OpResult(True))
        key = self._keys[0] if self._keys else None
        try:
            return bool(probe(Attempt(new_request_id(), key, 1, None)).value)
        except APIStatusError:
            return False
        except APIConnectionError:
            if unreachable is None:
                raise
            return unreachable

    def _redact(self, text: str) -> str:
        """``text`` with every configured key replaced (services and proxies echo them)."""
        pattern = self._key_pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def _scrub(self, exc: APIError) -> APIError:
        """Remove every configured key from an error's message, body and headers."""
        if not self._keys:
            return exc
        exc.message = self._redact(exc.message)
        exc.args = tuple(self._redact(a) if isinstance(a, str) else a for a in exc.args)
        if exc.headers:
            exc.headers = {k: self._redact(str(v)) for k, v in exc.headers.items()}
        if exc.body is not None:
            exc.body = self._redact_value(exc.body)
        return exc

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {self._redact_value(k): self._redact_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redact_value(v) for v in value]
        return value

    def _status_error(self, resp: Response) -> APIStatusError:
        data = resp.data
        if self._key_pattern is not None:
            data = self._redact(data.decode("utf-8", "replace")).encode()
        try:
            body: Any = json.loads(data) if data else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = data[:500].decode("utf-8", "replace")
        try:
            message, code = self._error_message(body) if body is not None else (f"HTTP {resp.status}", None)
        except Exception:  # an error body of an unexpected shape
            message, code = str(body)[:500], None
        if not isinstance(code, str):
            code = None
        cls = self._error_class(resp.status, body, code)
        headers = {k: self._redact(v) for k, v in resp.headers.items()}
        err = cls(self._redact(str(message)), status=resp.status,
                  request_id=headers.get(self.request_id_header), backend=self.name,
                  body=body, code=code, headers=headers)
        try:
            err.retry_after = self._retry_hint(body)
        except Exception:  # an error body of an unexpected shape gives no hint
            err.retry_after = None
        err.retry_limit = self.retry_limits.get(resp.status)
        return err

    def _http(self, method: str, path: str, parse: Callable[[Response], OpResult], *,
              json_body: Any = None, body: bytes | None = None, fields: Any = None,
              stream: bool = False, content_type: str | None = None,
              headers: Mapping[str, str] | None = None) -> Callable[[Attempt], Any]:
        """An operation that sends one HTTP request and parses the answer.
        ``json_body`` is encoded here; pass ``body`` instead when it is already encoded
        (``content_type`` when it is not JSON, ``headers`` for ones the request itself needs,
        such as KServe's ``Inference-Header-Content-Length``).
        The attempt's deadline bounds the exchange (the transport cuts it when it passes).
        ``path`` is below ``base_url``, or an absolute ``http(s)://`` URL for a service that
        spans several servers (OPEA's microservices); the same headers and key go to either."""
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        if body is None and json_body is not None:
            body = json.dumps(json_body).encode()
        ctype = (content_type or "application/json") if body is not None else None
        own = dict(headers or {})

        def operation(attempt: Attempt) -> Any:
            sent = self._headers(attempt, None if fields is not None else ctype)
            sent.update(own)
            try:
                resp = self._transport.request(method, url, headers=sent, body=body,
                                               fields=fields, stream=stream,
                                               deadline=attempt.deadline)
            except APIError as exc:
                raise self._scrub(exc)
            if resp.status >= 400:
                raise self._status_error(resp)
            try:
                return parse(resp)
            except APIError as exc:
                resp.close()
                if exc.status is None:
                    exc.status = resp.status
                if exc.request_id is None:
                    exc.request_id = resp.headers.get(self.request_id_header)
                exc.backend = exc.backend or self.name
                raise self._scrub(exc)
            except (KeyError, IndexError, TypeError, AttributeError, ValueError,
                    ArithmeticError, RecursionError) as exc:
                resp.close()
                raise self._scrub(ResponseFormatError(
                    f"{self.name}: unexpected response shape ({type(exc).__name__}: {exc})",
                    status=resp.status, request_id=resp.headers.get(self.request_id_header),
                    backend=self.name)) from exc

        return operation

    # -- the stream life cycle, shared by every streaming operation -------------------------
    stream_format = "sse"  # or "ndjson": how the body is framed into events

    def _stream_plan(self, path: str, body: bytes, est_tokens: float,
                     new_parser: Callable[[], "StreamParser"], *, method: str = "POST") -> Plan:
        """A streaming operation. ``new_parser()`` makes a :class:`StreamParser` for each
        attempt; it turns one wire event (an :class:`SSEEvent` or an NDJSON value) into a
        :class:`ChatChunk`, None for an event that carries nothing (a ping), or
        :data:`STREAM_END` for the terminator, and raises :class:`StreamInterrupted` for an
        error the service sends inside the stream.

        The first chunk is read inside the engine, so failures until then are retried. The
        rest is handed to the caller as an iterator that restarts the idle bound on every
        chunk, closes the connection when the caller stops early, raises
        :class:`StreamInterrupted` (with the text so far) on a cut, an in-stream error or a
        stream that ends without its terminator (unless the parser says it is ``complete``),
        and gives the connection back *before* raising (an exception kept by the caller holds
        no socket)."""
        name = self.name
        reader: Callable[[Iterator[bytes]], Iterator[Any]] = (
            iter_ndjson if self.stream_format == "ndjson" else iter_sse)

        def parse(resp: Response) -> OpResult:
            events = reader(resp.iter_bytes())
            parser = new_parser()
            received: list[str] = []

            def next_chunk() -> Any:
                """The next chunk or STREAM_END; None when the events run out."""
                for ev in events:
                    out = parser.feed(ev)
                    if out is None:
                        continue
                    if out is not STREAM_END:
                        if not isinstance(out, ChatChunk) or not isinstance(out.text, str):
                            raise ResponseFormatError(f"{name}: bad stream event")
                        received.append(out.text)
                    return out
                return None

            try:
                head = next_chunk()
            except BaseException:
                resp.close()
                raise
            resp.first_event()

            def rest() -> Iterator[ChatChunk]:
                out = head
                try:
                    while out is not None and out is not STREAM_END:
                        yield out
                        resp.event()
                        out = next_chunk()
                except GeneratorExit:
                    raise
                except Exception as exc:
                    resp.close()
                    events.close()
                    err = self._interrupted(exc, "".join(received))
                    if err is exc:
                        raise
                    raise err from exc
                finally:
                    resp.close()  # closes the connection if the caller stopped early
                if out is None and not parser.complete:
                    raise StreamInterrupted(f"{name}: stream ended without its terminator",
                                            partial_text="".join(received), backend=name)

            return OpResult(rest(), headers=resp.headers, stream=True)

        return Plan(self._http(method, path, parse, body=body, stream=True), est_tokens)

    def _interrupted(self, exc: Exception, partial: str) -> Exception:
        """The error for a stream that broke after it started, carrying the text so far."""
        if isinstance(exc, (StreamInterrupted, ContentFilteredError)):
            if not exc.partial_text:  # a filter verdict mid-stream keeps its type
                exc.partial_text = partial
            return self._scrub(exc)
        cls = StreamTimeoutError if isinstance(exc, APITimeoutError) else StreamInterrupted
        detail = exc.message if isinstance(exc, APIError) else type(exc).__name__
        return self._scrub(cls(f"{self.name}: stream broke after it started ({detail})",
                               partial_text=partial, backend=self.name))

    # -- submission: sync, future and async forms -------------------------------------------
    def _plan(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan:
        """The caller's input is checked here, before anything is queued or sent."""
        planner = getattr(self, f"_plan_{method}", None)
        if planner is None:
            raise UnsupportedOperation(f"{self.name} has no operation {method!r}")
        if "model" in kwargs:
            check_model(kwargs["model"])
        plan: Plan = planner(*args, **kwargs)
        if plan.model is None and isinstance(kwargs.get("model"), str):
            plan.model = kwargs["model"]
        return plan

    def submit(self, method: str, *args: Any, priority: int = Priority.NORMAL, **kwargs: Any) -> Future:
        """Start ``method`` without waiting; the future holds its result or error."""
        check_priority(priority)
        if method in self.batched_methods:
            return getattr(self, f"_submit_{method}")(*args, priority=priority, **kwargs)
        plan = self._plan(method, args, kwargs)
        return self._engine.submit(plan.operation, op_name=method, priority=priority,
                                   est_tokens=plan.est_tokens, model=plan.model)

    def _run(self, method: str, *args: Any, priority: int = Priority.NORMAL, **kwargs: Any) -> Any:
        """The synchronous form: runs in the caller's thread when the engine is idle."""
        check_priority(priority)
        if method in self.batched_methods:
            return getattr(self, f"_submit_{method}")(*args, priority=priority, sync=True,
                                                      **kwargs).result()
        plan = self._plan(method, args, kwargs)
        return self._engine.call(plan.operation, op_name=method, priority=priority,
                                 est_tokens=plan.est_tokens, model=plan.model)

    async def _arun(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self.submit(method, *args, **kwargs))

    # The public surface: every backend has these names; unsupported ones raise.
    def chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
             priority: int = Priority.NORMAL, **params: Any) -> Any:
        """One chat completion (a :class:`~ipfs_accelerate_api.types.ChatResponse`)."""
        return self._run("chat", messages, model=model, priority=priority, **params)

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
                    priority: int = Priority.NORMAL, **params: Any) -> Iterator[Any]:
        """A chat completion as an iterator of :class:`~ipfs_accelerate_api.types.ChatChunk`."""
        return self._run("stream_chat", messages, model=model, priority=priority, **params)

    def complete(self, prompt: str, *, model: str | None = None, priority: int = Priority.NORMAL,
                 **params: Any) -> Any:
        return self._run("complete", prompt, model=model, priority=priority, **params)

    def embed(self, texts: str | Sequence[str], *, model: str | None = None,
              priority: int = Priority.NORMAL, **params: Any) -> np.ndarray:
        """Embeddings as a float32 array of shape (n, d), in input order."""
        return self._run("embed", texts, model=model, priority=priority, **params)

    def list_models(self, *, priority: int = Priority.NORMAL) -> list[str]:
        return self._run("list_models", priority=priority)

    async def achat(self, messages: list[dict[str, Any]], *, model: str | None = None, **kw: Any) -> Any:
        return await self._arun("chat", messages, model=model, **kw)

    async def astream_chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
                           **kw: Any) -> AsyncIterator[Any]:
        """``async for chunk in backend.astream_chat(...)``: the chunks are read off the
        socket in a thread of their own and handed to the event loop, which never blocks.
        Leaving the loop early closes the stream and frees its connection."""
        async for chunk in self._astream("stream_chat", messages, model=model, **kw):
            yield chunk

    async def _astream(self, method: str, *args: Any, **kw: Any) -> AsyncIterator[Any]:
        """The async form of a stream operation (``astream_chat`` and the like)."""
        chunks = await self._arun(method, *args, **kw)
        pump = _StreamPump(chunks, asyncio.get_running_loop())
        try:
            while True:
                chunk = await pump.next()
                if chunk is _PUMP_DONE:
                    return
                yield chunk
        finally:
            pump.close()

    async def acomplete(self, prompt: str, *, model: str | None = None, **kw: Any) -> Any:
        return await self._arun("complete", prompt, model=model, **kw)

    async def aembed(self, texts: str | Sequence[str], *, model: str | None = None, **kw: Any) -> np.ndarray:
        return await self._arun("embed", texts, model=model, **kw)

    async def alist_models(self, **kw: Any) -> list[str]:
        return await self._arun("list_models", **kw)

    # -- batching: concurrent small calls of one operation in one request ----------------------
    def _batched(self, op_name: str, group: Any, payload: Any, plan: Callable[[Any], Plan], *,
                 kind: BatchKind = LIST, direct: Callable[[Any], Plan] | None = None,
                 priority: int = Priority.NORMAL, sync: bool = False,
                 limit: int | None = None, weight: float = 0.0,
                 max_weight: float | None = None) -> Future:
        """One call of ``op_name`` carrying ``payload``, combined with the calls of the same
        ``group`` (model, parameters: whatever must be equal to share a request) that arrive
        while one is in flight, up to ``limit`` items (``batch_size``) and ``max_weight`` (the
        calls' ``weight``s summed: tokens) per request. ``plan(merged)``
        builds the request for a batch (``kind`` merges and splits, see
        :class:`~ipfs_accelerate_api.engine.batching.BatchKind`); a call that finds nothing
        pending or in flight is sent at once, as ``direct(payload)`` (default
        ``plan(payload)``), in the caller's thread when ``sync``."""
        direct = direct or plan

        def send(merged: Any, prio: int) -> Future:
            p = plan(merged)
            return self._engine.submit(p.operation, op_name=op_name, priority=prio,
                                       est_tokens=p.est_tokens, model=p.model)

        def send_direct(prio: int) -> Future:
            return self._send_plan(op_name, direct(payload), prio, sync)

        if self._batch_timeout <= 0:
            return send_direct(priority)
        key = (op_name, group)
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers.setdefault(key, Batcher(
                send, batch_size=limit or self._batch_size, batch_timeout=self._batch_timeout,
                kind=kind, max_weight=max_weight))
        # Nothing pending or in flight: send now. Calls that arrive meanwhile are batched.
        if batcher.begin_direct():
            try:
                fut = send_direct(priority)
            except BaseException:
                batcher.end_direct()
                raise
            fut.add_done_callback(lambda _f: batcher.end_direct())
            return fut
        return batcher.add(payload, priority, weight)

    def _send_plan(self, op_name: str, plan: Plan, priority: int, sync: bool) -> Future:
        """``plan`` submitted to the engine; when ``sync`` (the caller waits anyway), run in
        the caller's thread, no hand-off to a worker, its outcome in a done future."""
        if not sync:
            return self._engine.submit(plan.operation, op_name=op_name, priority=priority,
                                       est_tokens=plan.est_tokens, model=plan.model)
        fut: Future = Future()
        try:
            fut.set_result(self._engine.call(plan.operation, op_name=op_name, priority=priority,
                                             est_tokens=plan.est_tokens, model=plan.model))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut

    # -- embeddings: batching small calls, splitting large ones ------------------------------
    def _plan_embed(self, texts: list[str], *, model: str, **params: Any) -> Plan:
        raise UnsupportedOperation(f"{self.name} has no operation 'embed'")

    def _submit_embed(self, texts: Any, *, model: str | None,
                      priority: int = Priority.NORMAL, sync: bool = False, **params: Any) -> Future:
        if type(self)._plan_embed is Backend._plan_embed:
            raise UnsupportedOperation(f"{self.name} has no operation 'embed'")
        texts = _check_texts(texts)
        if model is not None or self.model_required:
            check_model(model)
        max_items, max_tokens = self._embed_limits()

        def plan(batch: list[str]) -> Plan:
            p = self._plan_embed(batch, model=model, **params)
            p.model = p.model or model
            return p

        lengths = self._embed_token_counts(texts)
        tokens = sum(lengths)
        if len(texts) < max_items and tokens <= max_tokens:
            return self._batched("embed", (model, json.dumps(params, sort_keys=True, default=str)),
                                 texts, plan, priority=priority, sync=sync, limit=max_items,
                                 weight=tokens, max_weight=max_tokens)
        ranges = pack_batches(lengths, max_items, max_tokens).tolist()
        if len(ranges) == 1:
            return self._send_plan("embed", plan(texts), priority, sync)
        futures = [self._send_plan("embed", plan(texts[s:e]), priority, False) for s, e in ranges]
        return gather(futures, lambda parts: np.vstack(parts) if len(parts) > 1 else parts[0])

    def embed_limits(self) -> tuple[int, int]:
        """(texts, tokens) one embedding request may carry, as this backend splits by (for
        callers that pack their own batches, such as :mod:`ipfs_accelerate_api.pipelines`)."""
        return self._embed_limits()

    def embed_token_counts(self, texts: Sequence[str]) -> list[int]:
        """Each text's token estimate as counted against :meth:`embed_limits` (errs high)."""
        return self._embed_token_counts(list(texts))

    def submit_embed_request(self, texts: Sequence[str], *, model: str | None = None,
                             priority: int = Priority.NORMAL, **params: Any) -> Future:
        """Exactly one embedding request for ``texts``: not combined with other calls, not
        split (pack them to :meth:`embed_limits` first). The future holds the float32
        matrix, a row per text."""
        check_priority(priority)
        if type(self)._plan_embed is Backend._plan_embed:
            raise UnsupportedOperation(f"{self.name} has no operation 'embed'")
        texts = _check_texts(list(texts))
        if model is not None or self.model_required:
            check_model(model)
        plan = self._plan_embed(texts, model=model, **params)
        plan.model = plan.model or model
        return self._send_plan("embed", plan, priority, False)

    def _embed_limits(self) -> tuple[int, int]:
        """(items, tokens) one embedding request may carry; a server that reports its own
        limits (TEI's ``/info``) overrides this."""
        return self._batch_size, self.embed_max_tokens

    def _embed_token_counts(self, texts: list[str]) -> list[int]:
        """Each text's token estimate, for splitting by ``embed_max_tokens``."""
        return [estimate_tokens(t) for t in texts]

    # -- lifecycle --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A snapshot: requests, latency percentiles, errors by class, queue, breaker, keys,
        usage per model and key, and its ``cost`` in USD (:mod:`ipfs_accelerate_api.pricing`:
        the bundled table, ``IPFS_ACCEL_PRICES``, then the ``prices=`` option)."""
        from ..pricing import cost_table, load_prices

        snap = self._engine.stats()
        if self._prices is None:
            option = self._prices_option
            self._prices = load_prices(option) if isinstance(option, str) \
                else load_prices(overrides=option)
        snap["cost"] = cost_table(snap["usage"], self._prices)
        return snap

    def close(self) -> None:
        """Stop intake; fail what is still queued with ``ClientClosed``; release connections."""
        for b in list(self._batchers.values()):
            b.close()
        self._engine.close()
        self._transport.close()
        if self._shared is not None:
            self._shared.close()

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        return self._engine


_PUMP_DONE: Any = object()
_PUMP_CLOSE: Any = object()


class _StreamPump:
    """Reads a synchronous chunk iterator in its own thread, one chunk per request from the
    event loop, and resolves the loop's futures with ``call_soon_threadsafe``. Pull-based, so
    a slow consumer holds at most one chunk; :meth:`close` closes the iterator in its thread
    (which closes the connection) and ends the thread."""

    def __init__(self, chunks: Iterator[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = chunks
        self._loop = loop
        self._asks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ipfs-accel-astream", daemon=True)
        self._thread.start()

    def next(self) -> "asyncio.Future[Any]":
        fut = self._loop.create_future()
        self._asks.put(fut)
        return fut

    def close(self) -> None:
        self._asks.put(_PUMP_CLOSE)

    def _settle(self, fut: "asyncio.Future[Any]", value: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(value)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _run(self) -> None:
        chunks = self._chunks
        try:
            while True:
                fut = self._asks.get()
                if fut is _PUMP_CLOSE:
                    return
                try:
                    chunk = next(chunks, _PUMP_DONE)
                except BaseException as exc:  # the stream's own typed error, for the caller
                    self._settle(fut, None, exc)
                    return
                self._settle(fut, chunk, None)
                if chunk is _PUMP_DONE:
                    return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
