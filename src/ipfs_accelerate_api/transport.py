"""HTTP transport: one urllib3 pool per backend, timeouts, redirects without credentials,
and incremental SSE / NDJSON readers.

Errors are mapped where they leave this layer: timeouts become :class:`APITimeoutError`, any
other failure to get an answer :class:`APIConnectionError` (chained ``from`` the cause).
HTTP error statuses are *not* raised here: the adapter maps the body to the right class.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    ProtocolError,
    ReadTimeoutError,
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


class _OneWriteMixin:
    """Send the request head and a small bytes body in one write.

    urllib3 writes the headers and the body separately: two segments, and on a busy or
    virtualised host two wake-ups of the server before it can answer. Joining them cuts the
    per-request latency noticeably. Anything but a plain bytes body takes the usual path.
    """

    _one_write_body: bytes | None = None

    def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                **kwargs: Any) -> None:
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
    """An HTTP answer. For streams, ``raw`` is the open urllib3 response (``data`` is empty)."""

    status: int
    headers: Mapping[str, str]
    data: bytes
    url: str
    raw: Any = None

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
            for chunk in self.raw.stream(STREAM_CHUNK, decode_content=True):
                if chunk:
                    yield chunk
            self._complete = True
        except (ReadTimeoutError, Urllib3TimeoutError) as exc:
            raise APITimeoutError(f"stream read timed out: {exc}") from exc
        except (ProtocolError, HTTPError, OSError) as exc:
            raise APIConnectionError(f"stream broken: {exc.__class__.__name__}") from exc
        finally:
            self.close()

    _complete = False

    def close(self) -> None:
        """Give the connection back; one left mid-stream is closed, never reused."""
        raw, self.raw = self.raw, None
        if raw is not None:
            if not self._complete:
                raw.close()
            raw.release_conn()


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

        class Conn(_Connection):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                registry.add(self)

        class TLSConn(_TLSConnection):
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
        self._hosts.clear()
        self._pool.clear()
        for conn in list(self._connections):
            conn.close()

    def _timeout(self, override: Timeouts | None) -> urllib3.Timeout:
        t = override or self.timeouts
        return urllib3.Timeout(connect=t.connect, read=t.read, total=t.total)

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
    ) -> Response:
        """Send one request (following up to :data:`MAX_REDIRECTS` redirects; credentials are
        dropped when a redirect leaves the original host)."""
        hdrs = dict(headers or {})
        origin = urlsplit(url)[:2]
        timeout = self._default_timeout if timeouts is None else self._timeout(timeouts)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                pool, target = self._pool_for(url)
                if fields is not None:
                    raw = pool.request(
                        method, target, fields=fields, headers=hdrs, timeout=timeout,
                        retries=False, redirect=False, preload_content=not stream,
                        assert_same_host=False,
                    )
                else:
                    raw = pool.urlopen(
                        method, target, body=body, headers=hdrs, timeout=timeout,
                        retries=False, redirect=False, preload_content=not stream,
                        assert_same_host=False,
                    )
            except (ConnectTimeoutError, ReadTimeoutError, Urllib3TimeoutError) as exc:
                raise APITimeoutError(f"{method} timed out: {exc.__class__.__name__}") from exc
            except (HTTPError, OSError) as exc:
                raise APIConnectionError(
                    f"{method} failed: {exc.__class__.__name__}: {_short(exc)}"
                ) from exc
            if raw.status in (301, 302, 303, 307, 308) and raw.headers.get("location"):
                location = urljoin(url, raw.headers["location"])
                raw.drain_conn()
                raw.release_conn()
                if urlsplit(location)[:2] != origin:
                    hdrs = {k: v for k, v in hdrs.items() if k.lower() not in AUTH_HEADERS}
                if raw.status == 303:
                    method, body, fields = "GET", None, None
                url = location
                continue
            if stream and raw.status < 400:
                return Response(raw.status, raw.headers, b"", url, raw=raw)
            try:
                data = raw.data if not stream else raw.read()
            except (ReadTimeoutError, Urllib3TimeoutError) as exc:
                raise APITimeoutError(f"{method} read timed out") from exc
            except (HTTPError, OSError) as exc:
                raise APIConnectionError(f"{method} body broken: {exc.__class__.__name__}") from exc
            finally:
                if stream:
                    raw.release_conn()
            return Response(raw.status, raw.headers, data or b"", url)
        raise APIConnectionError(f"too many redirects (more than {MAX_REDIRECTS})")


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
        elif name == "retry" and value.isdigit():
            event.retry = int(value)
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
