"""HTTP transport: one urllib3 pool per backend, timeouts, redirects without credentials,
and incremental SSE / NDJSON readers.

Errors are mapped where they leave this layer: timeouts become :class:`APITimeoutError`, any
other failure to get an answer :class:`APIConnectionError` (chained ``from`` the cause).
HTTP error statuses are *not* raised here: the adapter maps the body to the right class.

Time bounds. ``read`` and ``connect`` are socket timeouts, so a server that drips one byte at
a time never trips them. Whole-exchange bounds (``Timeouts.total``, a request's deadline,
``stream_idle``, ``stream_total``) are kept by a :class:`_Watchdog`: one thread per transport,
started on first use, that shuts the socket of an exchange whose time is up. The blocked read
then fails at once and is reported as :class:`APITimeoutError`; the connection is discarded.
Calls with no such bound never touch the watchdog.

The fast path. The common exchange (not streamed, no form fields, a bytes body or none) is
written in one send and its answer read by a small HTTP/1.x parser here, on the connections
of the same urllib3 pools; streams, form fields, HEAD and requests urllib3 would write
otherwise go through urllib3 (see :meth:`Transport._fast` and the section above it).
"""

from __future__ import annotations

import heapq
import io
import itertools
import json
import re
import socket
import ssl
import threading
import time
import weakref
from dataclasses import dataclass
from http.client import (
    BadStatusLine,
    HTTPException,
    IncompleteRead,
    LineTooLong,
    RemoteDisconnected,
)
from typing import Any, Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import (
    TimeoutError as Urllib3TimeoutError,
)

from .config import Timeouts
from .errors import APIConnectionError, APITimeoutError, ResponseFormatError

__all__ = ["Response", "SSEEvent", "Transport", "iter_ndjson", "iter_sse", "AUTH_HEADERS"]

#: Headers that carry credentials; none of them survives a redirect to another host.
AUTH_HEADERS = frozenset(
    {"authorization", "x-api-key", "x-goog-api-key", "api-key", "proxy-authorization", "cookie"}
)
MAX_REDIRECTS = 5
STREAM_CHUNK = 8192
#: Longest accepted ``retry:`` field of an event stream (digits); longer ones are ignored.
MAX_RETRY_DIGITS = 9
#: After a bound fires, the watchdog cuts the exchange again this often, a few times (a
#: connection still being opened has no socket to cut yet).
_RECUT_INTERVAL = 0.02
_RECUTS = 25
_MAX_WAIT = 3600.0
#: A socket timeout this close to an exchange's bound is that bound firing.
_BOUND_SLACK = 0.05

#: The watch of the exchange running in this thread; the connection that sends it attaches
#: itself (see ``_OneWriteMixin.request``).
_current = threading.local()


class _Watch:
    """The time bounds of one exchange and the socket to cut when they pass.

    ``fixed_end`` is a bound that does not move (the attempt's total, the deadline, the
    stream's total); ``idle_end`` is pushed forward by every stream event. Only ever later:
    the watchdog re-checks an entry when it comes due, so moving a bound later is a plain
    attribute write.
    """

    __slots__ = ("fixed_end", "fixed_reason", "idle_end", "idle", "sock", "active", "fired")

    def __init__(self, fixed_end: float, fixed_reason: str) -> None:
        self.fixed_end = fixed_end
        self.fixed_reason = fixed_reason
        self.idle_end = float("inf")
        self.idle: float | None = None
        self.sock: Any = None
        self.active = True
        self.fired: str | None = None  # why it was cut, once it was

    def due(self) -> tuple[float, str]:
        if self.idle_end < self.fixed_end:
            return self.idle_end, f"no stream event for {self.idle:g}s (Timeouts.stream_idle)"
        return self.fixed_end, self.fixed_reason

    def event(self) -> None:
        """A stream event arrived: the idle bound starts again."""
        if self.idle is not None:
            self.idle_end = time.monotonic() + self.idle


class _Watchdog:
    """Cuts exchanges that outlive their bounds. One daemon thread, started on first use."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, int, _Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, end: float, reason: str, idle: float | None = None) -> _Watch:
        w = _Watch(end, reason)
        if idle is not None:
            w.idle = idle
            w.event()
        with self._cv:
            self._push(w.due()[0], 0, w)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="ipfs-accel-watchdog",
                                                daemon=True)
                self._thread.start()
        return w

    def _push(self, when: float, recuts: int, w: _Watch) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), recuts, w))
        if self._heap[0][3] is w:
            self._cv.notify()

    def attach(self, w: _Watch, sock: Any) -> None:
        """``sock`` carries the exchange now. The socket, not the connection: http.client
        drops a connection's socket when the answer says ``Connection: close``, and the
        answer goes on reading from it."""
        with self._cv:
            if w.active:
                w.sock = sock
                if w.fired:
                    _cut(sock)

    def detach(self, w: _Watch | None, *, ended: bool = True) -> None:
        """The exchange is over (``ended``: never fire again), or its connection goes back to
        the pool while it goes on (a redirect): never cut that connection."""
        if w is not None:
            with self._cv:
                w.sock = None
                if ended:
                    w.active = False

    def _run(self) -> None:
        with self._cv:
            while not self._closed:
                if not self._heap:
                    self._cv.wait()
                    continue
                when, _, recuts, w = self._heap[0]
                now = time.monotonic()
                if when > now:
                    self._cv.wait(min(when - now, _MAX_WAIT))
                    continue
                heapq.heappop(self._heap)
                if not w.active:
                    continue
                if not w.fired:
                    due, reason = w.due()
                    if due > now:
                        self._push(due, 0, w)
                        continue
                    w.fired = reason
                if w.sock is not None:
                    _cut(w.sock)
                if recuts < _RECUTS:
                    self._push(now + _RECUT_INTERVAL, recuts + 1, w)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)


def _cut(sock: Any) -> None:
    """Shut the socket down so that a read blocked on it returns at once (the owning thread
    then closes it). Safe from any thread; never closes the file descriptor."""
    sock = getattr(sock, "socket", sock)  # urllib3's TLS-in-TLS wrapper
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError, ValueError):
        pass


class _OneWriteMixin:
    """Send the request head and a small bytes body in one write.

    urllib3 writes the headers and the body separately: two segments, and on a busy or
    virtualised host two wake-ups of the server before it can answer. Joining them cuts the
    per-request latency noticeably. Anything but a plain bytes body takes the usual path.
    """

    _one_write_body: bytes | None = None

    _watchdog: "_Watchdog | None" = None
    sock: Any

    def _watched(self) -> None:
        watch = getattr(_current, "watch", None)
        if watch is not None and self._watchdog is not None and self.sock is not None:
            self._watchdog.attach(watch, self.sock)

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._watched()

    def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                **kwargs: Any) -> None:
        if self.sock is not None:  # a kept-alive connection: connect() is not called again
            self._watched()
        if (isinstance(body, bytes) and body and len(body) <= ONE_WRITE_MAX
                and not kwargs.get("chunked")):
            headers = dict(headers or {})
            headers["Content-Length"] = str(len(body))
            self._one_write_body = body
            try:
                super().request(method, url, body=None, headers=headers, **kwargs)  # type: ignore[misc]
            finally:
                self._one_write_body = None
            return
        super().request(method, url, body=body, headers=headers, **kwargs)  # type: ignore[misc]

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        body = self._one_write_body
        buffer = getattr(self, "_buffer", None)
        if body is None or message_body is not None or not isinstance(buffer, list):
            super()._send_output(message_body, encode_chunked=encode_chunked)  # type: ignore[misc]
            return
        self._one_write_body = None
        buffer.extend((b"", b""))
        head = b"\r\n".join(buffer)
        del buffer[:]
        self.send(head + body)  # type: ignore[attr-defined]


#: Bodies up to this size go out in the same write as the headers.
ONE_WRITE_MAX = 1 << 20


class _Connection(_OneWriteMixin, HTTPConnection):
    pass


class _TLSConnection(_OneWriteMixin, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection
    #: The ``Host`` header of the fast path (False: not worked out yet; None: it cannot be).
    fast_host: Any = False


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection
    fast_host: Any = False


@dataclass
class Response:
    """An HTTP answer. For streams, ``raw`` is the open urllib3 response (``data`` is empty)
    and ``watch`` keeps its time bounds: call :meth:`event` for every stream event."""

    status: int
    headers: Mapping[str, str]
    data: bytes
    url: str
    raw: Any = None
    watch: _Watch | None = None
    watchdog: _Watchdog | None = None
    stream_total_end: float = float("inf")

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ResponseFormatError(
                f"response is not valid JSON ({exc.__class__.__name__}): {self.data[:200]!r}",
                status=self.status,
            ) from exc

    def iter_bytes(self) -> Iterator[bytes]:
        if self.raw is None:
            if self.data:
                yield self.data
            return
        try:
            for chunk in _arriving(self.raw):
                if chunk:
                    yield chunk
            if self.watch is not None and self.watch.fired:  # cut right at the end
                raise _failure("stream", OSError("cut"), self.watch)
            self._complete = True
        except (HTTPError, OSError) as exc:
            raise _failure("stream", exc, self.watch) from exc
        finally:
            self.close()

    _complete = False

    def event(self) -> None:
        """A stream event arrived: restart the idle bound."""
        if self.watch is not None:
            self.watch.event()

    def first_event(self) -> None:
        """The stream's first event arrived: the attempt's bounds (``total``, the deadline)
        end here and the stream's own take over (``stream_idle``, ``stream_total``)."""
        w = self.watch
        if w is not None:
            w.fixed_end, w.fixed_reason = self.stream_total_end, "Timeouts.stream_total passed"
            w.event()

    def close(self) -> None:
        """Give the connection back; one left mid-stream (or cut) is closed, never reused."""
        raw, self.raw = self.raw, None
        if raw is not None:
            if self.watchdog is not None:
                self.watchdog.detach(self.watch)
            if not self._complete:
                raw.close()
            raw.release_conn()


def _arriving(raw: Any) -> Iterator[bytes]:
    """A streamed body as it arrives: chunk by chunk when it is chunked, else whatever the
    socket has (``read(n)`` would wait for n bytes: a close-delimited event stream would
    stall until 8 KiB had accumulated)."""
    if raw.chunked and raw.supports_chunked_reads():
        yield from raw.stream(STREAM_CHUNK, decode_content=True)
        return
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 < 2.3
        yield from raw.stream(STREAM_CHUNK, decode_content=True)
        return
    while True:
        data = read1(STREAM_CHUNK)
        if not data:
            return
        yield data


def _failure(what: str, exc: BaseException, watch: _Watch | None) -> APIConnectionError:
    """The error for a failed exchange: a timeout if a bound was cut or a socket timed out
    (a refused connection is *not* a timeout, though urllib3 2 files it under one)."""
    if watch is not None and watch.fired:
        return APITimeoutError(f"{what} timed out: {watch.fired}")
    if isinstance(exc, NewConnectionError):
        return APIConnectionError(f"{what} failed: cannot connect ({_short(exc)})")
    if isinstance(exc, (Urllib3TimeoutError, TimeoutError)):
        if watch is not None:  # the socket timeout was cut to the bound: say which one
            due, reason = watch.due()
            if time.monotonic() >= due - _BOUND_SLACK:
                return APITimeoutError(f"{what} timed out: {reason}")
        return APITimeoutError(f"{what} timed out: {exc.__class__.__name__}")
    return APIConnectionError(f"{what} failed: {exc.__class__.__name__}: {_short(exc)}")


# -- the fast path: the common exchange written and read here --------------------------------
#
# urllib3 hands every answer to http.client, which parses the headers with the email package:
# on a fast server that is most of a small exchange's time. The common exchange (not
# streamed, no form fields, a bytes body or none, an HTTP/1.x answer framed by Content-Length,
# chunks or the connection's close) is therefore written and read here, on the connections of
# the same urllib3 pools: urllib3 still opens them (TCP options, TLS, ``verify=``), checks that
# one taken from the pool was not closed by the server while it sat there, and closes them
# all on ``Transport.close``. A request this path cannot write exactly as urllib3 would (an
# unusual method, target or header) goes the usual way; nothing of it has been sent then.
# Errors are raised as urllib3 would raise them, so that ``_failure`` maps them alike.

#: Methods the fast path sends (HEAD, whose answer has no body whatever it says, goes the
#: usual way).
_FAST_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Methods urllib3 sends ``Content-Length: 0`` for when they have no body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Request targets urllib3 sends unchanged (it percent-encodes anything else).
_PLAIN_TARGET = re.compile(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-F]{2})*").fullmatch
#: Header names http.client accepts.
_HEADER_NAME = re.compile(r"[^:\s][^:\r\n]*").fullmatch
_USER_AGENT = f"python-urllib3/{urllib3.__version__}"  # type: ignore[attr-defined]
#: The longest answer head (status line and headers, bytes; http.client takes up to 100 lines
#: of 64 KiB) and the most header lines read (as http.client).
MAX_HEAD = 1 << 20
MAX_HEADERS = 100
#: Interim (1xx) answers skipped before the final one, at most.
MAX_INTERIM = 8
_RECV = 1 << 16
_BIG_RECV = 1 << 18

_PLAIN, _UA, _AE, _REFUSE = range(4)
#: Request header name -> how the fast path treats it (names repeat: decided once each).
_header_kinds: dict[Any, int] = {}


def _header_kind(name: Any) -> int:
    kind = _header_kinds.get(name)
    if kind is None:
        if type(name) is not str or not name.isascii() or not _HEADER_NAME(name):
            kind = _REFUSE  # urllib3 raises, or encodes it its own way
        else:
            low = name.lower()
            kind = (_REFUSE if low in ("host", "content-length", "transfer-encoding")
                    else _UA if low == "user-agent" else _AE if low == "accept-encoding"
                    else _PLAIN)
        if len(_header_kinds) < 1024:
            _header_kinds[name] = kind
    return kind


def _host_header(pool: Any) -> str | None:
    """The ``Host`` header http.client would send to ``pool``'s origin (None: not ASCII)."""
    host = pool.host
    if host[:1] == "[" and host[-1:] == "]":
        host = host[1:-1]
    host = host.rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    port = pool.port
    if port is not None and port != pool.ConnectionCls.default_port:
        host = f"{host}:{port}"
    return host if host.isascii() else None


def _request_head(method: str, target: str, host: str, headers: Mapping[str, Any],
                  length: int | None) -> bytes | None:
    """The request line and headers as urllib3 writes them (``Host``, ``Accept-Encoding:
    identity`` and ``User-Agent`` unless given, ``Content-Length``), or None when urllib3
    would write them otherwise or refuse them (it then does)."""
    if not _PLAIN_TARGET(target):
        return None
    parts = [method, " ", target, " HTTP/1.1\r\nHost: ", host, "\r\n"]
    ua = ae = False
    for name, value in headers.items():
        kind = _header_kind(name)
        if kind == _REFUSE or type(value) is not str or "\n" in value or "\r" in value:
            return None
        if kind != _PLAIN:
            ua = ua or kind == _UA
            ae = ae or kind == _AE
        parts += (name, ": ", value, "\r\n")
    if not ae:
        parts.append("Accept-Encoding: identity\r\n")
    if length is not None:
        parts += ("Content-Length: ", str(length), "\r\n")
    if not ua:
        parts += ("User-Agent: ", _USER_AGENT, "\r\n")
    parts.append("\r\n")
    try:
        return "".join(parts).encode("latin-1")
    except UnicodeEncodeError:
        return None


class _Headers(Mapping[str, str]):
    """An answer's headers: looked up case-insensitively, listed with the server's spelling.
    A header sent more than once holds its values joined by ``", "`` (as urllib3's do)."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, list[str]]) -> None:
        self._items = items  # lower-case name -> [name as sent, value]

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._items[name.lower()][1]

    def get(self, name: str, default: Any = None) -> Any:
        item = self._items.get(name.lower()) if isinstance(name, str) else None
        return default if item is None else item[1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (item[0] for item in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"


def _parse_head(lines: list[str]) -> tuple[int, bool, dict[str, list[str]]]:
    """(status, HTTP/1.0?, headers) of an answer head split into lines (latin-1 text). The
    status line is checked as http.client checks it; header lines continued on the next line
    (obsolete folding) are joined, lines without a colon ignored."""
    status_line = lines[0]
    parts = status_line.split(None, 2)
    if (len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3
            or not parts[1].isascii() or not parts[1].isdigit() or parts[1][0] == "0"):
        raise BadStatusLine(status_line)
    if len(lines) > MAX_HEADERS + 1:
        raise HTTPException(f"got more than {MAX_HEADERS} headers")
    items: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in lines[1:]:
        first = line[:1]
        if first == " " or first == "\t":
            if last is not None:
                last[1] = f"{last[1]} {line.strip()}".strip()
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name:
            last = None
            continue
        value = value.strip()  # the line's CR too
        low = name.lower()
        item = items.get(low)
        if item is None:
            items[low] = last = [name, value]
        else:
            item[1] = f"{item[1]}, {value}"
            last = item
    return int(parts[1]), parts[0] == "HTTP/1.0", items


class _Reader:
    """Reads one answer off a socket: its head, then its body as the head frames it."""

    __slots__ = ("_recv", "buf", "in_body")

    def __init__(self, sock: Any) -> None:
        self._recv = sock.recv
        self.buf = b""
        self.in_body = False  # the head was read

    def head(self) -> list[str]:
        """The next head's lines: up to its empty line (CRLF or a bare LF)."""
        buf: bytes | bytearray = self.buf
        scanned = 0
        while True:
            end, skip = buf.find(b"\n\r\n", scanned), 3
            lf = buf.find(b"\n\n", scanned)
            if lf >= 0 and (end < 0 or lf < end):
                end, skip = lf, 2
            if end >= 0:
                break
            if len(buf) > MAX_HEAD:
                raise LineTooLong("answer head")
            scanned = max(0, len(buf) - 2)
            data = self._recv(_RECV)
            if not data:
                if buf:
                    raise IncompleteRead(bytes(buf))
                raise RemoteDisconnected("Remote end closed connection without response")
            if type(buf) is bytes:
                buf = bytearray(buf)  # a head in pieces: grown in place, not copied each time
            buf += data
        if end > MAX_HEAD:
            raise LineTooLong("answer head")
        self.buf = bytes(buf[end + skip:])
        return buf[:end].decode("latin-1").split("\n")

    def line(self) -> bytes:
        """One line of a chunked body (with its end), b"" at the end of the stream."""
        buf = self.buf
        n = buf.find(b"\n")
        if n >= 0:  # the usual case: it is here already
            self.buf = buf[n + 1:]
            return buf[:n + 1]
        grown = bytearray(buf)
        while True:
            if len(grown) > MAX_HEAD:
                raise LineTooLong("chunk size or trailer")
            data = self._recv(_RECV)
            if not data:
                self.buf = b""
                return bytes(grown)
            n = data.find(b"\n")
            if n >= 0:
                grown += data[:n + 1]
                self.buf = data[n + 1:]
                return bytes(grown)
            grown += data

    def exact(self, n: int) -> bytes:
        buf = self.buf
        if len(buf) >= n:
            self.buf = buf[n:]
            return buf[:n]
        parts, got = [buf], len(buf)
        self.buf = b""
        while got < n:
            data = self._recv(min(n - got, _BIG_RECV))
            if not data:
                raise IncompleteRead(b"".join(parts), n - got)
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def rest(self) -> bytes:
        parts = [self.buf]
        self.buf = b""
        while True:
            data = self._recv(_BIG_RECV)
            if not data:
                return b"".join(parts)
            parts.append(data)

    def chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = self.line().split(b";", 1)[0].strip()
            if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
                raise IncompleteRead(b"".join(parts))  # a cut or malformed chunk size
            n = int(size, 16)
            if n == 0:
                break
            parts.append(self.exact(n))
            if self.line() not in (b"\r\n", b"\n"):
                raise IncompleteRead(b"".join(parts))
        while self.line() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(parts)

    def answer(self, method: str) -> tuple[int, _Headers, bytes, bool]:
        """(status, headers, body, whether the connection may carry another request)."""
        for _ in range(MAX_INTERIM + 1):
            status, http10, items = _parse_head(self.head())
            if status >= 200 or status == 101:
                break
        else:
            raise HTTPException(f"more than {MAX_INTERIM} interim (1xx) answers")
        if status == 101:
            raise HTTPException("101 Switching Protocols to a request that asked for none")
        conn = items.get("connection")
        tokens = conn[1].lower() if conn else ""
        keep = ("keep-alive" in tokens or "keep-alive" in items) if http10 else "close" not in tokens
        self.in_body = True
        te, cl = items.get("transfer-encoding"), items.get("content-length")
        coding = te[1].strip().lower() if te is not None else None
        if status in (204, 304) or method == "HEAD":
            data = b""
        elif coding == "chunked":
            data = self.chunked()
        elif coding is not None and "chunked" in coding:
            raise HTTPException(f"unsupported Transfer-Encoding {te[1]!r:.40}")  # type: ignore[index]
        elif cl is not None and (length := _content_length(cl[1])) is not None:
            # (also under another transfer coding, e.g. the obsolete "identity", as http.client)
            data = self.exact(length)
        else:  # ends with the connection
            data = self.rest()
            keep = False
        if self.buf:  # more than the answer: whatever it is, never read it as the next one
            keep = False
        enc = items.get("content-encoding")
        if enc is not None and enc[1].strip().lower() not in ("", "identity"):
            data = _decoded(data, enc[1])
        return status, _Headers(items), data, keep


def _content_length(value: str) -> int | None:
    """As urllib3 reads it: one number, or the same one repeated; None (the body ends with
    the connection) when it is no number; a clash of numbers is an error."""
    if value.isdigit() and value.isascii():
        return int(value)
    values = {v.strip() for v in value.split(",")}
    if not all(v.isascii() and v.isdigit() for v in values):
        return None
    if len(values) > 1 and len({int(v) for v in values}) > 1:
        raise HTTPException(f"Content-Length {value!r:.40} holds different numbers")
    return int(values.pop())


def _decoded(data: bytes, encoding: str) -> bytes:
    """A body with a ``Content-Encoding``, decoded by urllib3 as its own answers are."""
    raw = urllib3.HTTPResponse(body=io.BytesIO(data), headers={"content-encoding": encoding},
                               preload_content=False, decode_content=True)
    return raw.read()


def _as_urllib3(exc: Exception, reader: _Reader | None, pool: Any, target: str) -> Exception:
    """``exc`` as urllib3 would have raised it (``_failure`` maps urllib3's errors)."""
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, (TimeoutError, socket.timeout)) or (
            isinstance(exc, ssl.SSLError) and "timed out" in str(exc)):
        return ReadTimeoutError(pool, target, f"Read timed out. ({exc})")
    if isinstance(exc, ssl.SSLError):
        return SSLError(exc)
    if isinstance(exc, (OSError, HTTPException)):
        if reader is not None and reader.in_body:
            return ProtocolError(f"Connection broken: {exc!r}", exc)
        return ProtocolError("Connection aborted.", exc)
    return exc


class Transport:
    """A pooled HTTP client. Thread-safe; one per backend.

    Args:
        timeouts: per-attempt connect/read/total timeouts.
        maxsize: connections kept per host (match the backend's concurrency).
        verify: verify TLS certificates (default on).
    """

    def __init__(self, *, timeouts: Timeouts | None = None, maxsize: int = 10,
                 verify: bool = True) -> None:
        self.timeouts = timeouts or Timeouts()
        self._pool = urllib3.PoolManager(
            num_pools=16,
            maxsize=maxsize,
            block=False,
            retries=False,
            cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        )
        # Every connection this transport opens is registered, so close() can close them all,
        # including any a failed exchange left checked out of its pool.
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        registry = self._connections
        self._watchdog = watchdog = _Watchdog()

        class Conn(_Connection):
            _watchdog = watchdog

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                registry.add(self)

        class TLSConn(_TLSConnection):
            _watchdog = watchdog

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                registry.add(self)

        self._pool.pool_classes_by_scheme = {
            "http": type("Pool", (_Pool,), {"ConnectionCls": Conn}),
            "https": type("TLSPool", (_TLSPool,), {"ConnectionCls": TLSConn}),
        }
        self._hosts: dict[str, Any] = {}  # "scheme://netloc" -> connection pool (fast lookup)
        self._default_timeout = self._timeout(None)

    def close(self) -> None:
        self._watchdog.close()
        self._hosts.clear()
        self._pool.clear()
        for conn in list(self._connections):
            conn.close()

    def _timeout(self, override: Timeouts | None, remaining: float | None = None) -> urllib3.Timeout:
        """Socket timeouts; within ``remaining`` seconds when the exchange is bounded (the
        watchdog cannot cut a connection that is still being opened)."""
        t = override or self.timeouts
        if remaining is None:
            return urllib3.Timeout(connect=t.connect, read=t.read)
        remaining = max(remaining, 0.001)
        return urllib3.Timeout(connect=min(t.connect, remaining), read=min(t.read, remaining))

    def _pool_for(self, url: str) -> tuple[Any, str]:
        """The connection pool for ``url``'s origin and the request target (path + query)."""
        scheme, sep, rest = url.partition("://")
        slash = rest.find("/")
        netloc, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        origin = scheme + sep + netloc
        pool = self._hosts.get(origin)
        if pool is None:
            pool = self._hosts.setdefault(origin, self._pool.connection_from_url(origin))
        return pool, target

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        fields: Any = None,
        stream: bool = False,
        timeouts: Timeouts | None = None,
        deadline: float | None = None,
    ) -> Response:
        """Send one request (following up to :data:`MAX_REDIRECTS` redirects; credentials are
        dropped when a redirect leaves the original host).

        ``deadline`` (a :func:`time.monotonic` instant) bounds the exchange together with
        ``Timeouts.total``; a stream is bounded by them until its first event (see
        :meth:`Response.first_event`), then by ``stream_idle`` and ``stream_total``."""
        t = timeouts or self.timeouts
        watch = None
        stream_end = float("inf")
        if t.total is not None or deadline is not None or stream:
            now = time.monotonic()
            end, reason = float("inf"), ""
            if t.total is not None:
                end, reason = now + t.total, f"Timeouts.total={t.total:g}s passed"
            if deadline is not None and deadline < end:
                end, reason = deadline, "the request's deadline passed"
            if stream and t.stream_total is not None:
                stream_end = now + t.stream_total
                if stream_end < end:
                    end, reason = stream_end, "Timeouts.stream_total passed"
            watch = self._watchdog.watch(end, reason, t.stream_idle if stream else None)
            timeout = self._timeout(timeouts, None if end == float("inf") else end - now)
        else:
            timeout = self._default_timeout if timeouts is None else self._timeout(timeouts)
        try:
            return self._exchange(method, url, dict(headers or {}), body, fields, stream, timeout,
                                  watch, stream_end)
        except BaseException:
            self._watchdog.detach(watch)
            raise

    def _exchange(self, method: str, url: str, hdrs: dict[str, str], body: bytes | None,
                  fields: Any, stream: bool, timeout: urllib3.Timeout, watch: _Watch | None,
                  stream_end: float) -> Response:
        first_url = url
        # A bounded exchange reads its body here, not in urlopen, so that its connection is
        # only given back to the pool once the watch is off it.
        preload = watch is None
        for _ in range(MAX_REDIRECTS + 1):
            _current.watch = watch
            try:
                pool, target = self._pool_for(url)
                answer = None
                if (fields is None and not stream and method in _FAST_METHODS
                        and (body is None or type(body) is bytes)):
                    answer = self._fast(pool, method, target, hdrs, body, timeout, watch)
                if answer is not None:
                    raw = None
                    status, headers, data = answer
                elif fields is not None:
                    raw = pool.request(
                        method, target, fields=fields, headers=hdrs, timeout=timeout,
                        retries=False, redirect=False, preload_content=preload,
                        assert_same_host=False,
                    )
                else:
                    raw = pool.urlopen(
                        method, target, body=body, headers=hdrs, timeout=timeout,
                        retries=False, redirect=False, preload_content=preload,
                        assert_same_host=False,
                    )
            except (HTTPError, OSError) as exc:
                raise _failure(method, exc, watch) from exc
            finally:
                _current.watch = None
            if raw is not None:
                status, headers = raw.status, raw.headers
            if status in _REDIRECTS and headers.get("location"):
                location = urljoin(url, headers["location"])
                if raw is not None:  # the fast path gave its connection back already
                    try:
                        raw.drain_conn()
                    finally:
                        self._release(raw, watch, keep_watch=True)
                if watch is not None and watch.fired:
                    raise _failure(method, OSError("cut"), watch)
                if urlsplit(location)[:2] != urlsplit(first_url)[:2]:
                    hdrs = {k: v for k, v in hdrs.items() if k.lower() not in AUTH_HEADERS}
                if status == 303:
                    method, body, fields = "GET", None, None
                url = location
                continue
            if raw is None:
                return Response(status, headers, data, url)
            if stream and raw.status < 400:
                return Response(raw.status, raw.headers, b"", url, raw=raw, watch=watch,
                                watchdog=self._watchdog, stream_total_end=stream_end)
            if preload:
                return Response(raw.status, raw.headers, raw.data or b"", url)
            try:
                data = raw.read()
                if watch is not None and watch.fired:
                    raise OSError("cut")
            except (HTTPError, OSError) as exc:
                raw.close()
                raise _failure(method, exc, watch) from exc
            finally:
                self._release(raw, watch)
            return Response(raw.status, raw.headers, data or b"", url)
        raise APIConnectionError(f"too many redirects (more than {MAX_REDIRECTS})")

    def _fast(self, pool: Any, method: str, target: str, hdrs: Mapping[str, Any],
              body: bytes | None, timeout: urllib3.Timeout,
              watch: _Watch | None) -> tuple[int, _Headers, bytes] | None:
        """One exchange on the fast path (see above): (status, headers, body), its connection
        back in the pool; None, with nothing sent, for a request to leave to urllib3.

        As urllib3 does, the request goes out within the connect timeout and each read of the
        answer waits at most the read timeout; the watch (when the exchange has a bound) holds
        the socket from the first byte sent until the answer is read. As with urllib3
        (``retries=False``) nothing is sent twice: a connection that fails is closed and the
        failure raised, and the engine decides whether to try again."""
        host = pool.fast_host
        if host is False:
            host = pool.fast_host = _host_header(pool)
        if host is None:
            return None
        if body is not None:
            length: int | None = len(body)
        else:
            length = 0 if method in _BODY_METHODS else None
        head = _request_head(method, target, host, hdrs, length)
        if head is None:
            return None
        big = body is not None and len(body) > ONE_WRITE_MAX
        message = head if big or not body else head + body
        connect, read = timeout.connect_timeout, timeout.read_timeout
        tls = pool.scheme == "https"
        conn = pool._get_conn()  # a pooled one the server closed while idle is opened afresh
        reader = None
        try:
            reused = conn.sock is not None
            conn.timeout = connect
            if tls:
                pool._validate_conn(conn)  # connects; warns when unverified, as urllib3 does
            elif not reused:
                conn.connect()
            sock = conn.sock
            if reused:
                sock.settimeout(connect)
            if watch is not None:
                self._watchdog.attach(watch, sock)
            reader = _Reader(sock)
            try:
                sock.sendall(message)
                if big:
                    sock.sendall(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may have answered before it stopped reading: read it
            if read != connect:
                sock.settimeout(read)
            status, headers, data, keep = reader.answer(method)
            if watch is not None:
                self._watchdog.detach(watch, ended=not (status in _REDIRECTS
                                                        and headers.get("location")))
                if watch.fired:  # cut as the answer ended: neither trusted nor reused
                    raise OSError("cut")
        except BaseException as exc:
            conn.close()
            pool._put_conn(None)
            if isinstance(exc, Exception):
                raise _as_urllib3(exc, reader, pool, target) from exc
            raise
        if not keep:
            conn.close()
        pool._put_conn(conn)
        return status, headers, data

    def _release(self, raw: Any, watch: _Watch | None, keep_watch: bool = False) -> None:
        """Give ``raw``'s connection back to its pool, with the watch off it first (a cut
        exchange's connection is closed instead)."""
        if watch is not None:
            self._watchdog.detach(watch, ended=not keep_watch)
            if watch.fired:
                raw.close()
        raw.release_conn()


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."


# -- stream framing --------------------------------------------------------------------------


@dataclass
class SSEEvent:
    """One server-sent event."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError as exc:
            raise ResponseFormatError(f"stream event is not JSON: {self.data[:200]!r}") from exc


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Split a byte stream into lines on LF, CRLF or CR; decode each as UTF-8."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        start = 0
        while True:
            n = buf.find(b"\n", start)
            r = buf.find(b"\r", start, n if n != -1 else len(buf))
            if r != -1:
                if r + 1 == len(buf):
                    break  # a CR at the end: wait to see whether LF follows
                line = buf[start:r]
                start = r + 2 if buf[r + 1] == 10 else r + 1
            elif n != -1:
                line = buf[start:n]
                start = n + 1
            else:
                break
            yield _decode(line)
        buf = buf[start:]
    if buf:
        yield _decode(buf.rstrip(b"\r"))


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResponseFormatError(f"stream is not valid UTF-8: {line[:100]!r}") from exc


def iter_sse(chunks: Iterator[bytes]) -> Iterator[SSEEvent]:
    """Parse server-sent events incrementally (``data:`` with or without the space, comments,
    multi-line data, CRLF). A trailing event without its blank line is still delivered."""
    event = SSEEvent()
    data: list[str] = []
    has = False
    for line in _lines(chunks):
        if not line:
            if has:
                event.data = "\n".join(data)
                yield event
            event, data, has = SSEEvent(), [], False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
            has = True
        elif name == "event":
            event.event = value
            has = True
        elif name == "id":
            event.id = value
        elif (name == "retry" and value.isascii() and value.isdigit()
              and len(value) <= MAX_RETRY_DIGITS):
            event.retry = int(value)  # anything else is ignored, as the SSE specification says
    if has:
        event.data = "\n".join(data)
        yield event


def iter_ndjson(chunks: Iterator[bytes]) -> Iterator[Any]:
    """Parse newline-delimited JSON incrementally; blank lines are skipped."""
    for line in _lines(chunks):
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise ResponseFormatError(f"NDJSON line is not JSON: {line[:200]!r}") from exc
