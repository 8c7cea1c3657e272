"""What every backend shares: options, credentials, the engine, the transport, sync / submit /
async forms of each method, embedding batching, HTTP error mapping.

An adapter subclasses :class:`Backend` and writes only ``_plan_<method>`` functions (build the
request, parse the answer), ``_auth_headers`` and ``_error_message``.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .._enums import Priority
from ..config import BreakerPolicy, RetryPolicy, Secret, Timeouts, resolve_credentials
from ..core import pack_batches
from ..engine import Attempt, Engine, OpResult, RateLimitInfo
from ..engine.batching import Batcher, gather
from ..errors import (
    APIStatusError,
    ConfigurationError,
    ResponseFormatError,
    UnsupportedOperation,
    status_error_class,
)
from ..transport import Response, Transport

__all__ = ["Backend", "Plan"]

DEFAULT_BATCH_SIZE = 256
DEFAULT_BATCH_TIMEOUT = 0.005


@dataclass
class Plan:
    """A ready-to-submit operation and its token estimate (for the tokens-per-minute limit)."""

    operation: Callable[[Attempt], Any]
    est_tokens: float = 0.0


def estimate_tokens(text: str) -> int:
    """A cheap, conservative token estimate: one token per four characters."""
    return len(text) // 4 + 1


class Backend:
    """Base class. Options (all keyword, all optional but the key where the service needs one):

    ``base_url``, ``api_key`` / ``api_keys``, ``key_strategy``, ``max_concurrency``,
    ``queue_size``, ``overflow``, ``rpm``, ``tpm``, ``retry`` (:class:`RetryPolicy`),
    ``breaker`` (:class:`BreakerPolicy`), ``timeout`` (:class:`Timeouts`), ``batch_size``,
    ``batch_timeout``, ``on_request_end``, ``verify``, ``coordination`` (a ``redis://`` URL or
    a :class:`~ipfs_accelerate_api.coordination.Coordination`: limits, breaker and key state
    shared by every process).
    """

    name = "base"
    env_prefix = "BASE"
    default_base_url = ""
    requires_key = True
    request_id_header = "x-request-id"
    embed_max_items = 2048
    embed_max_tokens = 300_000

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
        coordination: Any = None,
    ) -> None:
        creds = resolve_credentials(self.name, self.env_prefix, api_key=api_key,
                                    api_keys=api_keys, required=self.requires_key)
        url = base_url or creds.base_url or self.default_base_url
        if not url:
            raise ConfigurationError(f"{self.name}: base_url is required")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{self.name}: base_url must start with http:// or https://")
        if batch_size < 1 or batch_timeout < 0:
            raise ConfigurationError("batch_size must be >= 1 and batch_timeout >= 0")
        self.base_url = url.rstrip("/")
        self._keys: tuple[Secret, ...] = creds.keys
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

    # -- shared HTTP machinery ----------------------------------------------------------------
    def _headers(self, attempt: Attempt, content_type: str | None = "application/json") -> dict[str, str]:
        h = {"X-Request-ID": attempt.request_id, "Accept": "application/json",
             "User-Agent": "ipfs-accelerate-api"}
        if content_type:
            h["Content-Type"] = content_type
        h.update(self._auth_headers(attempt.key))
        return h

    def _status_error(self, resp: Response) -> APIStatusError:
        try:
            body: Any = json.loads(resp.data) if resp.data else None
        except (ValueError, UnicodeDecodeError):
            body = resp.data[:500].decode("utf-8", "replace")
        message, code = self._error_message(body) if body is not None else (f"HTTP {resp.status}", None)
        cls = status_error_class(resp.status)
        return cls(message, status=resp.status, request_id=resp.headers.get(self.request_id_header),
                   backend=self.name, body=body, code=code, headers=resp.headers)

    def _http(self, method: str, path: str, parse: Callable[[Response], OpResult], *,
              json_body: Any = None, body: bytes | None = None, fields: Any = None,
              stream: bool = False) -> Callable[[Attempt], Any]:
        """An operation that sends one HTTP request and parses the answer.
        ``json_body`` is encoded here; pass ``body`` instead when it is already encoded."""
        url = self.base_url + path
        if body is None and json_body is not None:
            body = json.dumps(json_body).encode()
        ctype = "application/json" if body is not None else None

        def operation(attempt: Attempt) -> Any:
            headers = self._headers(attempt, None if fields is not None else ctype)
            resp = self._transport.request(method, url, headers=headers, body=body,
                                           fields=fields, stream=stream)
            if resp.status >= 400:
                raise self._status_error(resp)
            try:
                return parse(resp)
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
                if isinstance(exc, ResponseFormatError):
                    raise
                raise ResponseFormatError(
                    f"{self.name}: unexpected response shape ({type(exc).__name__}: {exc})",
                    status=resp.status, request_id=resp.headers.get(self.request_id_header),
                    backend=self.name) from exc

        return operation

    # -- submission: sync, future and async forms -------------------------------------------
    def _plan(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan:
        planner = getattr(self, f"_plan_{method}", None)
        if planner is None:
            raise UnsupportedOperation(f"{self.name} has no operation {method!r}")
        return planner(*args, **kwargs)  # type: ignore[no-any-return]

    def submit(self, method: str, *args: Any, priority: int = Priority.NORMAL, **kwargs: Any) -> Future:
        """Start ``method`` without waiting; the future holds its result or error."""
        if method == "embed":
            return self._submit_embed(*args, priority=priority, **kwargs)
        plan = self._plan(method, args, kwargs)
        return self._engine.submit(plan.operation, op_name=method, priority=priority,
                                   est_tokens=plan.est_tokens)

    def _run(self, method: str, *args: Any, priority: int = Priority.NORMAL, **kwargs: Any) -> Any:
        """The synchronous form: runs in the caller's thread when the engine is idle."""
        if method == "embed":
            return self._submit_embed(*args, priority=priority, sync=True, **kwargs).result()
        plan = self._plan(method, args, kwargs)
        return self._engine.call(plan.operation, op_name=method, priority=priority,
                                 est_tokens=plan.est_tokens)

    async def _arun(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self.submit(method, *args, **kwargs))

    # The public surface: every backend has these names; unsupported ones raise.
    def chat(self, messages: list[dict[str, Any]], *, model: str, priority: int = Priority.NORMAL,
             **params: Any) -> Any:
        """One chat completion (a :class:`~ipfs_accelerate_api.types.ChatResponse`)."""
        return self._run("chat", messages, model=model, priority=priority, **params)

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str,
                    priority: int = Priority.NORMAL, **params: Any) -> Iterator[Any]:
        """A chat completion as an iterator of :class:`~ipfs_accelerate_api.types.ChatChunk`."""
        return self._run("stream_chat", messages, model=model, priority=priority, **params)

    def complete(self, prompt: str, *, model: str, priority: int = Priority.NORMAL, **params: Any) -> Any:
        return self._run("complete", prompt, model=model, priority=priority, **params)

    def embed(self, texts: str | Sequence[str], *, model: str, priority: int = Priority.NORMAL,
              **params: Any) -> np.ndarray:
        """Embeddings as a float32 array of shape (n, d), in input order."""
        return self._run("embed", texts, model=model, priority=priority, **params)

    def list_models(self, *, priority: int = Priority.NORMAL) -> list[str]:
        return self._run("list_models", priority=priority)

    async def achat(self, messages: list[dict[str, Any]], *, model: str, **kw: Any) -> Any:
        return await self._arun("chat", messages, model=model, **kw)

    async def astream_chat(self, messages: list[dict[str, Any]], *, model: str, **kw: Any) -> Any:
        return await self._arun("stream_chat", messages, model=model, **kw)

    async def acomplete(self, prompt: str, *, model: str, **kw: Any) -> Any:
        return await self._arun("complete", prompt, model=model, **kw)

    async def aembed(self, texts: str | Sequence[str], *, model: str, **kw: Any) -> np.ndarray:
        return await self._arun("embed", texts, model=model, **kw)

    async def alist_models(self, **kw: Any) -> list[str]:
        return await self._arun("list_models", **kw)

    # -- embeddings: batching small calls, splitting large ones ------------------------------
    def _plan_embed(self, texts: list[str], *, model: str, **params: Any) -> Plan:
        raise UnsupportedOperation(f"{self.name} has no operation 'embed'")

    def _submit_embed(self, texts: str | Sequence[str], *, model: str,
                      priority: int = Priority.NORMAL, sync: bool = False, **params: Any) -> Future:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("embed needs at least one text")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("embed takes a string or a sequence of strings")
        if type(self)._plan_embed is Backend._plan_embed:
            raise UnsupportedOperation(f"{self.name} has no operation 'embed'")

        def send(batch: list[str], prio: int) -> Future:
            plan = self._plan_embed(batch, model=model, **params)
            return self._engine.submit(plan.operation, op_name="embed", priority=prio,
                                       est_tokens=plan.est_tokens)

        def send_now(batch: list[str], prio: int) -> Future:
            """In the caller's thread when it waits anyway (no hand-off)."""
            fut: Future = Future()
            plan = self._plan_embed(batch, model=model, **params)
            try:
                fut.set_result(self._engine.call(plan.operation, op_name="embed", priority=prio,
                                                 est_tokens=plan.est_tokens))
            except BaseException as exc:
                fut.set_exception(exc)
            return fut

        if len(texts) < self._batch_size and self._batch_timeout > 0:
            key = (model, json.dumps(params, sort_keys=True, default=str))
            batcher = self._batchers.get(key)
            if batcher is None:
                batcher = self._batchers.setdefault(key, Batcher(
                    send, batch_size=self._batch_size, batch_timeout=self._batch_timeout,
                    split=_split_rows))
            # Nothing pending or in flight: send now. Calls that arrive meanwhile are batched.
            if batcher.begin_direct():
                try:
                    fut = (send_now if sync else send)(texts, priority)
                except BaseException:
                    batcher.end_direct()
                    raise
                fut.add_done_callback(lambda _f: batcher.end_direct())
                return fut
            return batcher.add(texts, priority)
        lengths = [estimate_tokens(t) for t in texts]
        ranges = pack_batches(lengths, self._batch_size, self.embed_max_tokens).tolist()
        if sync and len(ranges) == 1:
            return send_now(texts, priority)
        futures = [send(texts[s:e], priority) for s, e in ranges]
        return gather(futures, lambda parts: np.vstack(parts) if len(parts) > 1 else parts[0])

    # -- lifecycle --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A snapshot: requests, latency percentiles, errors by class, queue, breaker, keys."""
        return self._engine.stats()

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


def _split_rows(matrix: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    out, start = [], 0
    for n in sizes:
        out.append(matrix[start:start + n])
        start += n
    if start != len(matrix):
        raise ResponseFormatError(f"expected {start} embeddings, got {len(matrix)}")
    return out
