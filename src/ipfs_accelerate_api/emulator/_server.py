"""The emulator's shared machinery: HTTP server, routing by service prefix, per-key rate
limits, capacity, latency, fault injection and the record of what was seen.

A service module provides a :class:`Service` subclass: its routes, how it reads the key from
a request, and how it writes an error body and rate-limit headers. Everything else is here.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

__all__ = ["FaultPlan", "Reply", "Request", "Service", "ServiceConfig", "Stream", "EmulatorServer"]

FAULT_KINDS = (
    "500", "503", "429", "reset", "timeout", "truncate", "malformed", "bad_utf8",
    "wrong_shape", "stream_error",
)


@dataclass
class FaultPlan:
    """Which requests fail, and how.

    ``rate`` is the probability that a request gets a fault, drawn from ``kinds`` with a
    generator seeded by ``seed`` (so a run is repeatable). ``script`` lists faults for the
    first requests in order (``None`` = no fault), before ``rate`` applies.
    ``timeout_delay`` is how long a ``"timeout"`` fault stalls before answering.
    """

    rate: float = 0.0
    kinds: Sequence[str] = ("500", "503", "429", "reset")
    script: Sequence[str | None] = ()
    seed: int = 0
    timeout_delay: float = 2.0

    def __post_init__(self) -> None:
        for k in list(self.kinds) + [s for s in self.script if s]:
            if k not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {k!r}; known: {', '.join(FAULT_KINDS)}")


@dataclass
class ServiceConfig:
    """Per-service behaviour of the emulator.

    Args:
        latency: seconds added before each answer (a float or a ``(low, high)`` range).
        capacity: most requests handled at once; more wait (``None``: no limit).
        rpm, tpm: per-key requests / tokens per minute, enforced with real 429s and headers.
        keys: the valid API keys (``None``: any non-empty key; ``()``: no auth needed).
        faults: a :class:`FaultPlan`.
        stream_delay: seconds between streamed chunks.
    """

    latency: float | tuple[float, float] = 0.0
    capacity: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    keys: Sequence[str] | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    stream_delay: float = 0.0


@dataclass
class Request:
    method: str
    path: str  # below the service prefix, e.g. "/v1/chat/completions"
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    key: str | None
    params: dict[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return _BAD_JSON


_BAD_JSON = object()


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str sent as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Stream:
    """A streamed answer: ``events`` yields ready-to-send byte chunks."""

    events: Iterable[bytes]
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)


class APIFailure(Exception):
    """Raised by a route to answer with the service's error body."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param


Route = Callable[[Request], "Reply | Stream"]


class Service:
    """A service's wire format. Subclasses fill in the class attributes and methods."""

    name = "service"
    routes: list[tuple[str, str, str]] = []  # (method, path regex, method name)

    def __init__(self, config: ServiceConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self._compiled = [(m, re.compile(p + "$"), getattr(self, h)) for m, p, h in self.routes]
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], list[float]] = {}
        self._rng = random.Random(config.faults.seed)
        self._count = 0
        self._capacity: tuple[int, threading.BoundedSemaphore] | None = None
        self.record = Record()

    def capacity(self) -> threading.BoundedSemaphore | None:
        """The semaphore for ``config.capacity`` (rebuilt when the setting changes)."""
        cap = self.config.capacity
        if not cap:
            return None
        with self._lock:
            if self._capacity is None or self._capacity[0] != cap:
                self._capacity = (cap, threading.BoundedSemaphore(cap))
            return self._capacity[1]

    # -- what a subclass provides ---------------------------------------------------------
    def read_key(self, req: Request) -> str | None:
        raise NotImplementedError

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        raise NotImplementedError

    def ratelimit_headers(self, rpm: tuple[float, float, float] | None,
                          tpm: tuple[float, float, float] | None) -> dict[str, str]:
        return {}

    def stream_error_chunk(self) -> bytes:
        return b""

    def estimate_tokens(self, req: Request) -> int:
        return max(1, len(req.body) // 4)

    # -- machinery ------------------------------------------------------------------------
    def route(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        path_known = False
        for m, rx, handler in self._compiled:
            match = rx.match(path)
            if match:
                path_known = True
                if m == method:
                    return handler, match.groupdict(), True
        return None, {}, path_known

    def next_fault(self) -> str | None:
        plan = self.config.faults
        with self._lock:
            n = self._count
            self._count += 1
            if n < len(plan.script):
                return plan.script[n]
            if plan.rate and self._rng.random() < plan.rate:
                return self._rng.choice(list(plan.kinds))
        return None

    def _take(self, key: str, kind: str, limit: float, cost: float) -> tuple[bool, tuple[float, float, float], float]:
        """Per-key bucket (capacity = the per-minute limit, refilling over a minute)."""
        now = time.monotonic()
        rate = limit / 60.0
        with self._lock:
            tokens, last = self._buckets.get((key, kind), [limit, now])
            tokens = min(limit, tokens + (now - last) * rate)
            ok = tokens >= cost
            if ok:
                tokens -= cost
            self._buckets[(key, kind)] = [tokens, now]
        wait = 0.0 if ok else (cost - tokens) / rate
        reset = (limit - tokens) / rate
        return ok, (limit, max(0.0, tokens), reset), wait

    def limits(self, key: str, tokens: int) -> tuple[bool, dict[str, str], float, str]:
        cfg = self.config
        rpm_state = tpm_state = None
        wait = 0.0
        which = ""
        ok = True
        if cfg.rpm:
            ok_r, rpm_state, w = self._take(key, "requests", cfg.rpm, 1)
            if not ok_r:
                ok, wait, which = False, w, "requests"
        if ok and cfg.tpm:
            ok_t, tpm_state, w = self._take(key, "tokens", cfg.tpm, min(tokens, cfg.tpm))
            if not ok_t:
                ok, wait, which = False, w, "tokens"
                if cfg.rpm:  # give the request back: it was not served
                    with self._lock:
                        self._buckets[(key, "requests")][0] += 1
        return ok, self.ratelimit_headers(rpm_state, tpm_state), wait, which


class Record:
    """What the emulator saw, for tests to assert on (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.by_key: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()
        self.sent_429 = 0
        self.faults: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_concurrency = 0
        self.request_ids: list[str] = []
        self.auth_headers_seen: list[dict[str, str]] = []

    def begin(self, req: Request) -> None:
        with self._lock:
            self.requests += 1
            self.by_key[req.key or ""] += 1
            self.by_path[req.path] += 1
            self.in_flight += 1
            self.peak_concurrency = max(self.peak_concurrency, self.in_flight)
            rid = req.headers.get("x-request-id")
            if rid:
                self.request_ids.append(rid)
            self.auth_headers_seen.append(
                {k: v for k, v in req.headers.items()
                 if k in ("authorization", "x-api-key", "x-goog-api-key", "api-key")})

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_key": dict(self.by_key),
                "by_path": dict(self.by_path),
                "sent_429": self.sent_429,
                "faults": dict(self.faults),
                "peak_concurrency": self.peak_concurrency,
                "in_flight": self.in_flight,
            }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "EmulatorServer"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        length = self.headers.get("content-length")
        if length:
            return self.rfile.read(int(length))
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        body = self._read_body()
        segs = parts.path.split("/", 2)
        service = self.server.services.get(segs[1] if len(segs) > 1 else "")
        if service is None:
            self._send(404, {"error": f"no emulated service at {parts.path}"}, "application/json", {})
            return
        sub = "/" + (segs[2] if len(segs) > 2 else "")
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, sub, parse_qs(parts.query), headers, body, None, {})
        req.key = service.read_key(req)
        sem = service.capacity()
        if sem is not None:
            sem.acquire()  # over capacity: wait, like a saturated server
        service.record.begin(req)
        try:
            self._serve(service, req)
        finally:
            service.record.end()
            if sem is not None:
                sem.release()

    def _serve(self, service: Service, req: Request) -> None:
        cfg = service.config
        lat = cfg.latency
        delay = random.uniform(*lat) if isinstance(lat, tuple) else lat
        if delay:
            time.sleep(delay)
        if cfg.keys is None or len(cfg.keys) > 0:
            if not req.key or (cfg.keys is not None and req.key not in cfg.keys):
                return self._reply(service.error(401, "Incorrect API key provided.",
                                                 "invalid_request_error", "invalid_api_key"))
        handler, params, path_known = service.route(req.method, req.path)
        if handler is None:
            status = 405 if path_known else 404
            return self._reply(service.error(status, f"Unknown request URL: {req.method} {req.path}",
                                             "invalid_request_error", "unknown_url"))
        req.params = params
        ok, rl_headers, wait, which = service.limits(req.key or "", service.estimate_tokens(req))
        if not ok:
            with service.record._lock:
                service.record.sent_429 += 1
            headers = dict(rl_headers)
            headers["retry-after"] = str(max(1, int(wait + 0.999)))
            headers["retry-after-ms"] = str(int(wait * 1000) + 1)
            return self._reply(service.error(
                429, f"Rate limit reached for {which} per minute. Please try again in {wait:.3f}s.",
                which, "rate_limit_exceeded", headers=headers))
        fault = service.next_fault()
        if fault:
            with service.record._lock:
                service.record.faults[fault] += 1
        if fault in ("500", "503"):
            return self._reply(service.error(int(fault), "The server had an error while processing "
                                             "your request.", "server_error"))
        if fault == "429":
            with service.record._lock:
                service.record.sent_429 += 1
            return self._reply(service.error(429, "Rate limit reached (injected).", "requests",
                                             "rate_limit_exceeded",
                                             headers={"retry-after": "1", "retry-after-ms": "50"}))
        if fault == "reset":
            return self._reset()
        if fault == "timeout":
            time.sleep(cfg.faults.timeout_delay)
        try:
            answer = handler(req)
        except APIFailure as exc:
            return self._reply(service.error(exc.status, exc.message, exc.kind, exc.code, exc.param))
        if isinstance(answer, Stream):
            answer.headers.update(rl_headers)
            return self._stream(service, answer, fault)
        answer.headers.update(rl_headers)
        if fault == "malformed":
            answer = Reply(200, b'{"id": "x", "choices": [', answer.headers)
        elif fault == "bad_utf8":
            answer = Reply(200, b'{"text": "\xff\xfe bad"}', answer.headers)
        elif fault == "wrong_shape":
            answer = Reply(200, {"unexpected": True}, answer.headers)
        elif fault == "truncate":
            return self._truncated(answer)
        self._reply(answer)

    # -- writing --------------------------------------------------------------------------
    def _encode(self, reply: Reply) -> bytes:
        if isinstance(reply.body, bytes):
            return reply.body
        if isinstance(reply.body, str):
            return reply.body.encode()
        return json.dumps(reply.body).encode()

    def _reply(self, reply: Reply) -> None:
        self._send(reply.status, self._encode(reply), reply.content_type, reply.headers)

    def _send(self, status: int, body: Any, ctype: str, headers: Mapping[str, str]) -> None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close_connection = True
        self.connection.close()

    def _truncated(self, reply: Reply) -> None:
        body = self._encode(reply)
        self.send_response(reply.status)
        self.send_header("content-type", reply.content_type)
        self.send_header("content-length", str(len(body) + 100))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self._reset()

    def _stream(self, service: Service, stream: Stream, fault: str | None) -> None:
        self.send_response(200)
        self.send_header("content-type", stream.content_type)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        for k, v in stream.headers.items():
            self.send_header(k, v)
        self.end_headers()
        delay = service.config.stream_delay
        try:
            for i, chunk in enumerate(stream.events):
                if fault == "truncate" and i == 2:
                    self.wfile.flush()
                    return self._reset()
                if fault == "stream_error" and i == 2:
                    chunk = service.stream_error_chunk()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    break
                if fault == "malformed" and i == 2:
                    chunk = b"data: {not json\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if delay:
                    self.wfile.flush()
                    time.sleep(delay)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], services: dict[str, Service]) -> None:
        self.services = services
        super().__init__(address, _Handler)


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration string, as OpenAI's reset headers use (``6m0s``, ``1.5s``, ``12ms``)."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    if minutes >= 1:
        return f"{int(minutes)}m{rest:.0f}s" if rest == int(rest) else f"{int(minutes)}m{rest:.3g}s"
    return f"{rest:.3g}s"

