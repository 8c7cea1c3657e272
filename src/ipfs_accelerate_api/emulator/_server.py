"""The emulator's shared machinery: HTTP server, routing by service prefix, per-key rate
limits, capacity, latency, fault injection, request rules and the record of what was seen.

A service module provides a :class:`Service` subclass: its routes (each a :class:`Route`,
with the :class:`~._rules.Body` rules its requests must follow), its models, how it reads
the key from a request, and how it writes an error body, a refused request
(:meth:`Service.reject`), an unknown model (:meth:`Service.unknown_model`), its own 500
(:meth:`Service.internal_error`) and rate-limit headers. Everything else is here.

A handler that raises never drops the connection: the client gets the service's 500 and the
exception is kept in ``stats()["handler_errors"]``, so tests can assert that none happened.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ._rules import Body, Upload, Violation, parse_json

__all__ = ["EmulatorServer", "FaultPlan", "Reply", "Request", "Route", "Service", "ServiceConfig",
           "Stream", "content_text", "count_tokens", "embedding_for", "pieces", "reply_text",
           "sse_event", "tool_arguments"]

#: Seconds an injected 429 asks the client to wait.
FAULT_RETRY_AFTER = 0.05
#: Limits an injected 429 reports when the service has none configured.
NOMINAL_RPM, NOMINAL_TPM = 500, 200_000

FAULT_KINDS = (
    "500", "503", "424", "429", "reset", "timeout", "truncate", "malformed", "bad_utf8",
    "wrong_shape", "stream_error",
)


@dataclass
class FaultPlan:
    """Which requests fail, and how.

    ``rate`` is the probability that a request gets a fault, drawn from ``kinds`` with a
    generator seeded by ``seed`` (so a run is repeatable). ``script`` lists faults for the
    first requests after the plan is set, in order (``None`` = no fault), before ``rate``
    applies.
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
        burst: seconds of those quotas a key's bucket holds (60: a whole minute's worth
            at once, as OpenAI's; 1: the quota spread evenly, a second's worth at most).
        keys: the valid API keys (``None``: any non-empty key; ``()``: no auth needed).
        faults: a :class:`FaultPlan`.
        stream_delay: seconds between streamed chunks.
        models: model ids the service knows besides its own list (a fine-tune, say).
    """

    latency: float | tuple[float, float] = 0.0
    capacity: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    burst: float = 60.0
    keys: Sequence[str] | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    stream_delay: float = 0.0
    models: Sequence[str] = ()


@dataclass
class Request:
    method: str
    path: str  # below the service prefix, e.g. "/v1/chat/completions"
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    key: str | None
    params: dict[str, str]
    root: str = ""  # the service's own URL, e.g. "http://127.0.0.1:PORT/openai"
    data: Any = None  # the body, parsed and checked against the route's rules


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


Handler = Callable[[Request], "Reply | Stream"]


@dataclass(frozen=True)
class Route:
    """One route: ``handler`` names the service method; ``rules`` its request body (``None``:
    no body); ``auth=False`` for what a client fetches without its key (image URLs)."""

    method: str
    pattern: str  # a regex below the service prefix; named groups become ``Request.params``
    handler: str
    rules: Body | None = None
    auth: bool = True


class Service:
    """A service's wire format. Subclasses fill in the class attributes and methods."""

    name = "service"
    routes: Sequence[Route] = ()
    models: Sequence[str] = ()  # the model ids a :class:`~._rules.Model` field may name

    def __init__(self, config: ServiceConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self._compiled = [(r, re.compile(r.pattern + "$"), getattr(self, r.handler))
                          for r in self.routes]
        self._models = frozenset(self.models)
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], list[float]] = {}
        self._rng = random.Random(config.faults.seed)
        self._fault_count = 0  # requests since the current FaultPlan was set
        self._fault_plan: FaultPlan | None = None
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

    def reject(self, violation: Violation) -> Reply:
        """The service's answer to a request that breaks its route's rules."""
        return self.error(400, violation.message, "invalid_request_error", param=violation.param)

    def unknown_model(self, model: str) -> Reply:
        """The service's answer to a request that names a model it does not have."""
        return self.error(404, f"model {model!r} not found", "not_found_error", "model_not_found")

    def internal_error(self) -> Reply:
        """The service's answer when its handler raised (a bug in the emulator)."""
        return self.error(500, "The server had an error while processing your request.",
                          "server_error")

    def ratelimit_headers(self, rpm: tuple[float, float, float] | None,
                          tpm: tuple[float, float, float] | None) -> dict[str, str]:
        return {}

    def stream_error_chunk(self) -> bytes:
        return b""

    #: Over ``capacity``: False waits, like a saturated server; True answers
    #: :meth:`over_capacity` at once, as servers with a concurrency limit do (TEI's 429).
    capacity_refuses = False

    def over_capacity(self) -> Reply:
        """The answer to a request beyond ``capacity`` when :attr:`capacity_refuses`."""
        return self.error(429, "Model is overloaded", "overloaded")

    def estimate_tokens(self, req: Request) -> int:
        return max(1, len(req.body) // 4)

    # -- machinery ------------------------------------------------------------------------
    def route(self, method: str,
              path: str) -> tuple[Route | None, Handler | None, dict[str, str], bool]:
        """The route, its bound handler and path parameters, and whether the path is known."""
        path_known = False
        for r, rx, handler in self._compiled:
            match = rx.match(path)
            if match:
                path_known = True
                if r.method == method:
                    return r, handler, match.groupdict(), True
        return None, None, {}, path_known

    def knows_model(self, model: str) -> bool:
        return model in self._models or model in self.config.models

    def admit(self, rules: Body, req: Request) -> Reply | None:
        """Parse the body into ``req.data`` and check it: ``None``, or the refusal to send."""
        if rules.form:
            data: Any = rules.from_form_fields(parse_multipart(req))
            bad = rules.validate(data)
        else:
            data, bad = parse_json(req.body)
            bad = bad or rules.validate(data)
        if bad is not None:
            self.record.rejected(bad)
            return self.reject(bad)
        req.data = data
        model = data.get(rules.model_key) if rules.model_key else None
        if model is not None and not self.knows_model(model):
            return self.unknown_model(model)
        return None

    def throttled(self, which: str, wait: float, rl_headers: Mapping[str, str]) -> Reply:
        """The 429 for a per-minute limit on ``which``, real or injected: the same headers."""
        self.record.throttled()
        headers = dict(rl_headers)
        headers["retry-after"] = str(max(1, int(wait + 0.999)))
        headers["retry-after-ms"] = str(int(wait * 1000) + 1)
        return self.error(
            429, f"Rate limit reached for {which} per minute. Please try again in {wait:.3f}s.",
            which, "rate_limit_exceeded", headers=headers)

    def exhausted_headers(self, wait: float) -> dict[str, str]:
        """Rate-limit headers of a key whose requests ran out for ``wait`` seconds."""
        rpm, tpm = self.config.rpm or NOMINAL_RPM, self.config.tpm or NOMINAL_TPM
        return self.ratelimit_headers((rpm, 0.0, wait), (tpm, tpm, 0.0))

    def next_fault(self) -> str | None:
        plan = self.config.faults
        with self._lock:
            if plan is not self._fault_plan:  # a new plan's script starts at the next request
                self._fault_plan, self._fault_count = plan, 0
            n = self._fault_count
            self._fault_count += 1
            if n < len(plan.script):
                return plan.script[n]
            if plan.rate and self._rng.random() < plan.rate:
                return self._rng.choice(list(plan.kinds))
        return None

    def _take(self, key: str, kind: str, limit: float, cost: float,
              window: float = 60.0) -> tuple[bool, tuple[float, float, float], float]:
        """Per-key bucket: ``limit`` per ``window`` seconds, refilling over it; a per-minute
        bucket holds ``burst`` seconds' worth at most."""
        now = time.monotonic()
        rate = limit / window
        burst = self.config.burst
        capacity = max(cost, rate * burst) if window == 60.0 and burst < 60 else limit
        with self._lock:
            tokens, last = self._buckets.get((key, kind), [capacity, now])
            tokens = min(capacity, tokens + (now - last) * rate)
            ok = tokens >= cost
            if ok:
                tokens -= cost
            self._buckets[(key, kind)] = [tokens, now]
        wait = 0.0 if ok else (cost - tokens) / rate
        reset = (capacity - tokens) / rate
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
        self.refused: Counter[str] = Counter()
        self.handler_errors: list[str] = []

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

    def throttled(self) -> None:
        with self._lock:
            self.sent_429 += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def rejected(self, violation: Violation) -> None:
        with self._lock:
            self.refused[violation.param or "(body)"] += 1

    def handler_error(self, exc: BaseException) -> None:
        """Keep an exception a handler raised (one line: type, message, where)."""
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        at = f" at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno}" if where else ""
        with self._lock:
            self.handler_errors.append(f"{type(exc).__name__}: {exc}{at}")

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
                "refused": dict(self.refused),
                "handler_errors": list(self.handler_errors),
            }


def parse_multipart(req: Request) -> dict[str, Any]:
    """A multipart/form-data body: text fields as ``str``, files as :class:`Upload`; repeated
    ``name[]`` fields gather into a list under ``name``, ``name[key]`` into a dict."""
    ctype = req.headers.get("content-type", "")
    if "boundary=" not in ctype:
        return {}
    boundary = ctype.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()
    fields: dict[str, Any] = {}
    for part in req.body.split(b"--" + boundary):
        if not part.strip() or part.strip() == b"--":
            continue
        head, _, data = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        data = data[:-2] if data.endswith(b"\r\n") else data
        name = filename = part_type = None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-type":
                part_type = value.strip()
            elif key.strip().lower() == "content-disposition":
                for item in value.split(";"):
                    k, _, v = item.strip().partition("=")
                    if k == "name":
                        name = v.strip('"')
                    elif k == "filename":
                        filename = v.strip('"')
        if not name:
            continue
        field: Any = (Upload(filename, data, part_type) if filename is not None
                      else data.decode("utf-8", "replace"))
        base, _, sub = name.partition("[")
        if not sub:
            fields[name] = field
        elif sub == "]":
            if not isinstance(fields.get(base), list):
                fields[base] = []
            fields[base].append(field)
        else:
            if not isinstance(fields.get(base), dict):
                fields[base] = {}
            fields[base][sub.rstrip("]")] = field
    return fields


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
        self._answered = False
        parts = urlsplit(self.path)
        body = self._read_body()
        segs = parts.path.split("/", 2)
        prefix = segs[1] if len(segs) > 1 else ""
        service = self.server.services.get(prefix)
        if service is None:
            self._send(404, {"error": f"no emulated service at {parts.path}"}, "application/json", {})
            return
        sub = "/" + (segs[2] if len(segs) > 2 else "")
        headers = {k.lower(): v for k, v in self.headers.items()}
        host = headers.get("host") or "{}:{}".format(*self.server.server_address[:2])
        req = Request(self.command, sub, parse_qs(parts.query), headers, body, None, {},
                      root=f"http://{host}/{prefix}")
        req.key = service.read_key(req)
        sem = service.capacity()
        if sem is not None and service.capacity_refuses:
            if not sem.acquire(blocking=False):  # over capacity: refuse at once (TEI, TGI)
                service.record.begin(req)
                service.record.throttled()
                try:
                    self._reply(service.over_capacity())
                finally:
                    service.record.end()
                return
        elif sem is not None:
            sem.acquire()  # over capacity: wait, like a saturated server
        service.record.begin(req)
        try:
            self._serve(service, req)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in a handler: answer anyway, and keep it for the tests
            service.record.handler_error(exc)
            if self._answered:
                self.close_connection = True
            else:
                self._reply(service.internal_error())
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
        route, handler, params, path_known = service.route(req.method, req.path)
        needs_key = (route is None or route.auth) and (cfg.keys is None or len(cfg.keys) > 0)
        if needs_key and (not req.key or (cfg.keys is not None and req.key not in cfg.keys)):
            return self._reply(service.error(401, "Incorrect API key provided.",
                                             "invalid_request_error", "invalid_api_key"))
        if route is None or handler is None:
            status = 405 if path_known else 404
            return self._reply(service.error(status, f"Unknown request URL: {req.method} {req.path}",
                                             "invalid_request_error", "unknown_url"))
        req.params = params
        if not route.auth:  # fetched without a key (a file URL): no limits, no faults
            return self._answer(service, route, handler, req, None)
        ok, rl_headers, wait, which = service.limits(req.key or "", service.estimate_tokens(req))
        if not ok:
            return self._reply(service.throttled(which, wait, rl_headers))
        fault = service.next_fault()
        if fault:
            service.record.fault(fault)
        if fault in ("500", "503", "424"):  # 424: TGI's generation failure
            return self._reply(service.error(int(fault), "The server had an error while processing "
                                             "your request.", "server_error"))
        if fault == "429":
            wait = FAULT_RETRY_AFTER
            return self._reply(service.throttled("requests", wait, service.exhausted_headers(wait)))
        if fault == "reset":
            return self._reset()
        if fault == "timeout":
            time.sleep(cfg.faults.timeout_delay)
        self._answer(service, route, handler, req, fault, rl_headers)

    def _answer(self, service: Service, route: Route, handler: Handler, req: Request,
                fault: str | None, rl_headers: Mapping[str, str] = {}) -> None:
        """Check the request against the route's rules, run the handler, send what it made."""
        if route.rules is not None:
            refusal = service.admit(route.rules, req)
            if refusal is not None:
                return self._reply(refusal)
        try:
            answer = handler(req)
        except APIFailure as exc:
            return self._reply(service.error(exc.status, exc.message, exc.kind, exc.code, exc.param))
        answer.headers.update(rl_headers)
        if isinstance(answer, Stream):
            return self._stream(service, answer, fault)
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
        self._answered = True
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        self._answered = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close_connection = True
        self.connection.close()

    def _truncated(self, reply: Reply) -> None:
        body = self._encode(reply)
        self._answered = True
        self.send_response(reply.status)
        self.send_header("content-type", reply.content_type)
        self.send_header("content-length", str(len(body) + 100))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self._reset()

    def _stream(self, service: Service, stream: Stream, fault: str | None) -> None:
        self._answered = True
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
                    self._chunk(service.stream_error_chunk())
                    break
                if fault == "malformed" and i == 2:
                    chunk = b"data: {not json\n\n"
                self._chunk(chunk)
                if delay:
                    self.wfile.flush()
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        except Exception as exc:  # the stream's generator raised: end the stream in-band
            service.record.handler_error(exc)
            self._chunk(service.stream_error_chunk())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


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



# -- deterministic content, for every service ---------------------------------------------------

_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def count_tokens(text: str) -> int:
    """The emulator's token count: about four characters a token."""
    return max(1, len(text) // 4) if text else 0


def reply_text(prompt: str, seed: int, max_words: int = 12, variant: int = 0) -> str:
    """Deterministic reply words for ``prompt`` (``variant``: the choice index, for ``n``)."""
    if max_words <= 0:
        return ""
    key = f"{seed}:{prompt}" if not variant else f"{seed}:{variant}:{prompt}"
    digest = hashlib.sha256(key.encode()).digest()
    n = max(1, min(max_words, 3 + digest[0] % 10))
    return " ".join(_WORDS[digest[(i + 1) % 32] % len(_WORDS)] for i in range(n))


def embedding_for(text: str, dim: int, seed: int = 0) -> np.ndarray:
    """A unit vector that is a stable function of ``text`` (and the seed)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "little")
    v = np.random.default_rng(h).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the ``text`` of each part or block."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def tool_arguments(schema: Any, word: str) -> dict[str, Any]:
    """Arguments for a tool, one value per property of its JSON schema, of the right type
    (type names in any case: OpenAPI's ``OBJECT``/``STRING`` as Gemini writes them too)."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    sample = {"string": word, "integer": len(word), "number": len(word) / 2, "boolean": True,
              "array": [word], "object": {}}
    out = {}
    for name, spec in (props or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        out[name] = (spec["enum"][0] if spec.get("enum")
                     else sample.get(str(spec.get("type")).lower(), word))
    return out


def pieces(text: str, size: int = 8) -> list[str]:
    """``text`` cut into pieces of ``size`` characters (at least one, maybe empty)."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def sse_event(obj: Any) -> bytes:
    """One data-only SSE event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj).encode() + b"\n\n"
