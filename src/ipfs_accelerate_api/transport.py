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
"""

from __future__ import annotations

import heapq
import itertools
import json
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    HTTPError,
    NewConnectionError,
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


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


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
        origin = urlsplit(url)[:2]
        # A bounded exchange reads its body here, not in urlopen, so that its connection is
        # only given back to the pool once the watch is off it.
        preload = watch is None
        for _ in range(MAX_REDIRECTS + 1):
            _current.watch = watch
            try:
                pool, target = self._pool_for(url)
                if fields is not None:
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
            if raw.status in (301, 302, 303, 307, 308) and raw.headers.get("location"):
                location = urljoin(url, raw.headers["location"])
                try:
                    raw.drain_conn()
                finally:
                    self._release(raw, watch, keep_watch=True)
                if watch is not None and watch.fired:
                    raise _failure(method, OSError("cut"), watch)
                if urlsplit(location)[:2] != origin:
                    hdrs = {k: v for k, v in hdrs.items() if k.lower() not in AUTH_HEADERS}
                if raw.status == 303:
                    method, body, fields = "GET", None, None
                url = location
                continue
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
