"""The transport's fast path: the common exchange written and read by the transport itself
on urllib3's pooled connections. Against a raw TCP server that answers exactly the bytes a
test gives it: every framing the path accepts, hostile answers, connection reuse and the
resend on a connection the server closed while it was idle, time bounds, TLS, and the
requests it leaves to urllib3."""

from __future__ import annotations

import gzip
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import urllib3

from ipfs_accelerate_api.config import Timeouts
from ipfs_accelerate_api.errors import APIConnectionError, APITimeoutError
from ipfs_accelerate_api.transport import Transport, _Headers

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
#: An answer that closes the connection (after what was written).
CLOSE = object()


class RawServer:
    """Reads each request (head and Content-Length body) and writes ``reply(request)``: bytes
    written as they are, a list of them written then the connection closed, a tuple of them
    written a few milliseconds apart (the connection kept), None: never answered (the
    connection is held until the server stops), or :data:`CLOSE`: closed without an answer. ``requests`` holds (connection number, request number on it, head,
    body) of everything read."""

    def __init__(self, reply: Callable[[RawServer, tuple], Any] | None = None, *,
                 tls: ssl.SSLContext | None = None) -> None:
        self.reply = reply or (lambda server, req: OK)
        self.requests: list[tuple[int, int, bytes, bytes]] = []
        self._tls = tls
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self.closed = threading.Semaphore(0)  # released once for every connection it closed
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()
            n += 1

    def _serve(self, conn: socket.socket, n: int) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
                self._conns.append(conn)
            buf, i = b"", 0
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                req = (n, i, head, body)
                self.requests.append(req)
                i += 1
                answer = self.reply(self, req)
                if answer is None:
                    self._stop.wait(30)
                    return
                if answer is CLOSE:
                    return
                if isinstance(answer, list):
                    for piece in answer:
                        conn.sendall(piece)
                    return
                if isinstance(answer, tuple):
                    for piece in answer:
                        conn.sendall(piece)
                        time.sleep(0.005)
                    continue
                conn.sendall(answer)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            self.closed.release()

    def connections(self) -> list[int]:
        """The connection number of every request read, in order."""
        return [r[0] for r in self.requests]

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def raw():
    made = []

    def factory(reply=None, **kw) -> RawServer:
        s = RawServer(reply, **kw)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def transport():
    t = Transport(timeouts=Timeouts(connect=5, read=5))
    yield t
    t.close()


def _lines(head: bytes) -> tuple[bytes, list[bytes]]:
    first, *rest = head.split(b"\r\n")
    return first, sorted(rest)


# -- what goes out ---------------------------------------------------------------------------

@pytest.mark.parametrize("method, body, headers", [
    ("POST", b'{"x": 1}', {"Content-Type": "application/json", "X-Request-ID": "r1",
                           "Authorization": "Bearer k", "User-Agent": "ipfs-accelerate-api"}),
    ("POST", None, {"Accept": "application/json"}),
    ("GET", None, {}),
    ("GET", b"", {"accept-encoding": "gzip"}),
    ("PUT", b"x" * 100, {"X-Empty": ""}),
    ("DELETE", None, {"X-A": "b"}),
])
def test_the_request_is_written_as_urllib3_writes_it(raw, transport, method, body, headers) -> None:
    server = raw()
    path = "/v2/models/m%2Fx/infer?a=1&b=~"
    assert transport.request(method, server.url + path, headers=headers, body=body).data == b"ok"
    pool = urllib3.PoolManager(retries=False)
    try:
        assert pool.request(method, server.url + path, headers=headers, body=body).data == b"ok"
    finally:
        pool.clear()
    (_, _, ours, our_body), (_, _, theirs, their_body) = server.requests
    assert _lines(ours) == _lines(theirs) and our_body == their_body == (body or b"")


@pytest.mark.parametrize("path, headers, body", [
    ("/a b", {}, None),  # urllib3 percent-encodes the target
    ("/x", {"X-Bytes": b"v"}, None),  # a bytes header value
    ("/x", {"X-Fold": "a\r\n b"}, None),  # an obsolete folded value
    ("/x", {"Content-Length": "3"}, b"abc"),  # the caller frames the body
    ("/x", {}, bytearray(b"abc")),  # not bytes
])
def test_what_the_fast_path_leaves_to_urllib3_still_works(raw, transport, path, headers, body) -> None:
    server = raw()
    assert transport.request("POST", server.url + path, headers=headers, body=body).data == b"ok"
    head = server.requests[0][2]
    assert head.startswith(b"POST /a%20b " if " " in path else b"POST /x ")


def test_invalid_headers_are_refused_as_before(raw, transport) -> None:
    server = raw()
    with pytest.raises(ValueError):
        transport.request("GET", server.url + "/", headers={"X-Bad": "a\r\nInjected: 1"})
    assert server.requests == []


def test_head_goes_the_usual_way(raw, transport) -> None:
    server = raw(lambda s, r: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    r = transport.request("HEAD", server.url + "/")
    assert (r.status, r.data, r.headers["content-length"]) == (200, b"", "5")
    assert transport.request("HEAD", server.url + "/").status == 200
    assert server.connections() == [0, 0]


# -- what comes back: every framing ----------------------------------------------------------

GZ = gzip.compress(b"unzipped")


@pytest.mark.parametrize("answer, data, reused", [
    (OK, b"ok", True),
    ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n"
      b"0\r\nX-Trailer: t\r\n\r\n"), b"hello world", True),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n", b"", True),
    ([b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"the end"], b"until the end", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", b"ok", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
    (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", b"", True),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + OK, b"ok", True),
    (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", b"ok", True),  # bare LF line ends
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", b"ok", True),
    ([b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\nto the end"], b"to the end", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", b"ok", False),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(GZ) + GZ,
     b"unzipped", True),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", b"nope", True),
    (b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", b"", True),  # no reason phrase
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
    (b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n", b"", True),
])
def test_every_framing(raw, transport, answer, data, reused) -> None:
    server = raw(lambda s, req: answer if len(s.requests) == 1 else OK)
    r = transport.request("GET", server.url + "/")
    assert r.data == data
    assert transport.request("GET", server.url + "/").data == b"ok"
    assert server.connections() == ([0, 0] if reused else [0, 1])


def test_a_large_body_in_pieces(raw, transport) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (big[:1 << 20], big[1 << 20:]))
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big,
               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"]
    server = raw(lambda s, req: answers[req[1]])
    sent = b"y" * (3 << 20)  # above the one-write size: the body goes out on its own
    assert transport.request("POST", server.url + "/", body=sent).data == big
    assert transport.request("GET", server.url + "/").data == big
    assert server.requests[0][3] == sent and server.connections() == [0, 0]


def test_an_answer_in_pieces(raw, transport) -> None:
    answer = (b"HTTP/1.1 200 OK\r", b"\nTransfer-Encoding: chunked\r\n", b"\r", b"\n5\r",
              b"\nhel", b"lo\r\n", b"0", b"\r\nX-T: 1\r", b"\n\r\n")
    server = raw(lambda s, req: answer)
    for _ in range(2):
        assert transport.request("GET", server.url + "/").data == b"hello"
    assert server.connections() == [0, 0]


def test_a_large_head_is_read(raw, transport) -> None:
    big = b"b" * 200_000  # more than http.client's 64 KiB a line; within the 1 MiB a head
    server = raw(lambda s, req: b"HTTP/1.1 200 OK\r\nX-Big: " + big + b"\r\n" + OK[17:])
    r = transport.request("GET", server.url + "/")
    assert r.data == b"ok" and len(r.headers["x-big"]) == len(big)


def test_the_headers(raw, transport) -> None:
    server = raw(lambda s, r: b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nX-Fold: a\r\n  b\r\n"
                              b"no colon here\r\nRetry-After:  3 \r\nContent-Length: 0\r\n\r\n")
    h = transport.request("GET", server.url + "/").headers
    assert h["x-a"] == h.get("X-A") == "1, 2" and h["X-FOLD"] == "a b"
    assert "retry-after" in h and h["Retry-After"] == "3" and h.get("missing", "d") == "d"
    assert 3 not in h and h.get(3) is None
    with pytest.raises(KeyError):
        h[3]
    assert dict(h) == {"X-A": "1, 2", "X-Fold": "a b", "Retry-After": "3", "Content-Length": "0"}
    assert len(h) == 4 and "X-Fold" in repr(h)
    with pytest.raises(KeyError):
        h["missing"]


def test_headers_mapping_alone() -> None:
    h = _Headers({"content-type": ["Content-Type", "application/json"]})
    assert h["CONTENT-TYPE"] == "application/json" and list(h) == ["Content-Type"]


# -- hostile answers ---------------------------------------------------------------------------

@pytest.mark.parametrize("answer", [
    [b"SSH-2.0-OpenSSH_9.0\r\n\r\n"],
    [b"HTTP/1.1 2000 OK\r\n\r\n"],
    [b"HTTP/1.1 0x1 OK\r\n\r\n"],
    [b"HTTP/2 200\r\n\r\n"],
    [b"\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"],
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"],
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokNOPE0\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok"],
    [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"],
    [b"HTTP/1.1 100 Continue\r\n\r\n" * 20 + OK],
    [b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 1_100_000 + b"\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n"],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Encoding: gzip\r\n\r\nnope"],
    [b"HTTP/1.1 200 OK\r\nContent"],
    CLOSE,
])
def test_a_hostile_answer_is_a_connection_error(raw, transport, answer) -> None:
    server = raw(lambda s, req: answer if req[0] == 0 else OK)
    with pytest.raises(APIConnectionError) as info:
        transport.request("GET", server.url + "/")
    assert not isinstance(info.value, APITimeoutError) and info.value.__cause__ is not None
    assert transport.request("GET", server.url + "/").data == b"ok"  # a new connection
    assert server.connections() == [0, 1]


def test_garbage_without_end_is_bounded_by_the_head_limit(raw, transport) -> None:
    server = raw(lambda s, req: [b"x" * 1_200_000])
    with pytest.raises(APIConnectionError):
        transport.request("GET", server.url + "/")


# -- connections kept, reused and replaced -------------------------------------------------------

def test_a_connection_the_server_closed_while_idle_is_replaced(raw, transport) -> None:
    server = raw(lambda s, req: [OK])  # answers, then closes the connection without saying so
    for _ in range(3):
        assert transport.request("GET", server.url + "/").data == b"ok"
        assert server.closed.acquire(timeout=10)  # closed while idle in the pool
    assert server.connections() == [0, 1, 2]


def test_a_reused_connection_closed_before_answering_is_not_sent_again(raw, transport) -> None:
    # The second request on the first connection races the server closing it: never answered.
    # As with urllib3 (retries off), the transport sends nothing twice: the engine decides.
    server = raw(lambda s, req: CLOSE if req[:2] == (0, 1) else OK)
    assert transport.request("POST", server.url + "/", body=b"1").data == b"ok"
    with pytest.raises(APIConnectionError, match="aborted"):
        transport.request("POST", server.url + "/", body=b"2")
    assert transport.request("POST", server.url + "/", body=b"3").data == b"ok"
    assert [(r[0], r[3]) for r in server.requests] == [(0, b"1"), (0, b"2"), (1, b"3")]


def test_a_new_connection_closed_before_answering_is_not_sent_again(raw, transport) -> None:
    server = raw(lambda s, req: CLOSE)
    with pytest.raises(APIConnectionError, match="aborted"):
        transport.request("POST", server.url + "/", body=b"1")
    assert len(server.requests) == 1


def test_a_reused_connection_that_answers_then_breaks_is_not_sent_again(raw, transport) -> None:
    server = raw(lambda s, req: [b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf"]
                 if req[:2] == (0, 1) else OK)
    transport.request("GET", server.url + "/")
    with pytest.raises(APIConnectionError, match="broken"):
        transport.request("GET", server.url + "/")
    assert len(server.requests) == 2


def test_many_threads_share_the_pool_without_crossing_answers(raw) -> None:
    def echo(s, req):
        rid = next(v for k, _, v in (ln.partition(b": ") for ln in req[2].split(b"\r\n"))
                   if k.lower() == b"x-request-id")
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(rid), rid)

    server = raw(echo)
    t = Transport(maxsize=4)
    bad: list[Any] = []

    def work(i: int) -> None:
        for j in range(40):
            rid = f"{i}-{j}"
            try:
                got = t.request("GET", server.url + "/", headers={"X-Request-ID": rid}).data
            except APIConnectionError as exc:  # pragma: no cover - reported below
                bad.append(exc)
                return
            if got != rid.encode():
                bad.append((rid, got))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t.close()
    assert bad == [] and len(server.requests) == 320


# -- time bounds -----------------------------------------------------------------------------------

def test_a_silent_server_is_a_read_timeout(raw) -> None:
    server = raw(lambda s, req: None if req[0] == 0 else OK)
    t = Transport(timeouts=Timeouts(connect=2, read=0.2))
    try:
        with pytest.raises(APITimeoutError) as info:
            t.request("GET", server.url + "/")
        assert info.value.__cause__ is not None
        assert t.request("GET", server.url + "/").data == b"ok"
        assert server.connections() == [0, 1]  # the timed-out connection was not reused
    finally:
        t.close()


@pytest.mark.parametrize("bound", ["total", "deadline"])
def test_a_bound_cuts_a_silent_server(raw, bound) -> None:
    import time

    server = raw(lambda s, req: None if req[0] == 0 else OK)
    t = Transport(timeouts=Timeouts(connect=2, read=30, total=0.3 if bound == "total" else None))
    try:
        deadline = time.monotonic() + 0.3 if bound == "deadline" else None
        match = "Timeouts.total" if bound == "total" else "deadline"
        with pytest.raises(APITimeoutError, match=match):
            t.request("GET", server.url + "/", deadline=deadline)
        assert t.request("GET", server.url + "/").data == b"ok"
        assert server.connections() == [0, 1]
    finally:
        t.close()


def test_a_bounded_exchange_reuses_its_connection(raw) -> None:
    server = raw()
    t = Transport(timeouts=Timeouts(connect=2, read=5, total=5))
    try:
        for _ in range(3):
            assert t.request("GET", server.url + "/").data == b"ok"
        assert server.connections() == [0, 0, 0]
    finally:
        t.close()


# -- TLS -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(d / "k.pem"),
                    "-out", str(d / "c.pem"), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    return ctx


def test_tls_without_verification(raw, tls_context) -> None:
    server = raw(lambda s, req: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"2\r\nok\r\n0\r\n\r\n", tls=tls_context)
    t = Transport(verify=False)
    try:
        for _ in range(2):
            with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
                assert t.request("POST", server.url + "/", body=b"{}").data == b"ok"
        assert server.connections() == [0, 0]
    finally:
        t.close()


def test_tls_verification_refuses_an_unknown_certificate(raw, tls_context) -> None:
    server = raw(tls=tls_context)
    t = Transport()
    try:
        with pytest.raises(APIConnectionError) as info:
            t.request("GET", server.url + "/")
        assert not isinstance(info.value, APITimeoutError)
        assert "certificate" in str(info.value).lower()
    finally:
        t.close()
