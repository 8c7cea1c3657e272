"""A small hostile HTTP server for the request-path tests: it drips bytes, never answers,
pings forever, echoes credentials or answers whatever body a test sets.

Each behaviour is chosen by the request path, so one server serves a whole module::

    /drip-body       headers at once, then one body byte every ``drip`` seconds
    /drip-headers    the status line and headers one byte every ``drip`` seconds
    /silent          reads the request, never answers
    /ping-stream     an SSE response that sends only ``: ping`` comments
    /slow-stream     SSE chat chunks, one every ``drip`` seconds, never ``[DONE]``
    /held-stream     one SSE chat chunk, then waits for ``server.release`` (a threading.Event)
                     before the rest; ``server.released_in_time`` says whether it came
    /tail-then-hold  ``server.first`` (one SSE chat chunk) and ``server.tail``, then holds the
                     connection open
    /echo-key        a 401 whose JSON body and headers repeat the Authorization header
    /json            ``server.body`` (bytes) with ``server.status``/``server.ctype``

The server records, per connection, how many bytes it wrote before the client hung up
(``server.written``), so a test can show a client gave up early without timing it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHUNK = (b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
         b'"delta":{"content":"tick "},"finish_reason":null}]}\n\n')


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "HostileServer"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _drip(self, data: bytes) -> None:
        sent = 0
        for i in range(len(data)):
            if self.server.stopping.is_set() or not self._write(data[i:i + 1]):
                break
            sent += 1
            time.sleep(self.server.drip)
        self.server.record(self.path, sent, len(data))
        self.close_connection = True

    def _handle(self) -> None:
        self.server.requests.append((self.path, dict(self.headers), self._body()))
        path = "/" + self.path.split("?")[0].lstrip("/").split("/")[0]
        if path == "/drip-body":
            body = b'{"choices": [{"message": {"role": "assistant", "content": "' + b"x" * 200 + b'"}}]}'
            self._write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body))
            self._drip(body)
        elif path == "/drip-headers":
            body = b'{"choices": []}'
            head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Filler: "
                    + b"y" * 200 + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
            self._drip(head + body)
        elif path == "/silent":
            self.server.stopping.wait(self.server.hold)
            self.close_connection = True
        elif path == "/ping-stream" or path == "/slow-stream":
            self._write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        b"Connection: close\r\n\r\n")
            piece = b": ping\n\n" if path == "/ping-stream" else CHUNK
            sent = 0
            while not self.server.stopping.is_set() and sent < self.server.max_pieces:
                if not self._write(piece):
                    break
                sent += 1
                time.sleep(self.server.drip)
            self.server.record(self.path, sent, self.server.max_pieces)
            self.close_connection = True
        elif path == "/held-stream":
            self._write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        b"Connection: close\r\n\r\n" + CHUNK)
            self.server.released_in_time = self.server.release.wait(self.server.hold)
            self._write(CHUNK + b"data: [DONE]\n\n")
            self.close_connection = True
        elif path == "/tail-then-hold":
            self._write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        b"Connection: close\r\n\r\n" + self.server.first + self.server.tail)
            self.server.stopping.wait(self.server.hold)
            self.close_connection = True
        elif path == "/echo-key":
            auth = self.headers.get("Authorization", "")
            body = json.dumps({"error": {"message": f"invalid credentials: {auth}",
                                         "type": "invalid_request_error", "echo": [auth]}}).encode()
            self._write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                        b"X-Echo: " + auth.encode("latin-1") + b"\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body)
        else:
            body = self.server.body
            self._write(b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                        % (self.server.status, self.server.ctype.encode(), len(body)) + body)


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *, drip: float = 0.1, hold: float = 30.0, max_pieces: int = 600) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.drip = drip
        self.hold = hold
        self.max_pieces = max_pieces
        self.stopping = threading.Event()
        self.release = threading.Event()
        self.released_in_time: bool | None = None
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.written: list[tuple[str, int, int]] = []  # (path, sent, would have sent)
        self.body = b"{}"
        self.tail = b""
        self.first = CHUNK
        self.status = 200
        self.ctype = "application/json"
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hostile-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, path: str, sent: int, total: int) -> None:
        with self._lock:
            self.written.append((path, sent, total))

    def wait_written(self, n: int = 1, timeout: float = 30.0) -> list[tuple[str, int, int]]:
        """The records of the first ``n`` finished connections (waits for the server side)."""
        end = time.monotonic() + timeout
        while len(self.written) < n and time.monotonic() < end:
            time.sleep(0.01)
        return list(self.written)

    def __enter__(self) -> "HostileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


def free_port() -> int:
    """A loopback port nothing listens on (for connection-refused tests)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
