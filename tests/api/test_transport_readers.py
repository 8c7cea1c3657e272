"""The transport's stream readers (SSE, NDJSON, line splitting) and its redirect handling,
the latter over real HTTP to two small local servers (two origins)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ipfs_accelerate_api.config import Timeouts
from ipfs_accelerate_api.errors import APIConnectionError, APITimeoutError, ResponseFormatError
from ipfs_accelerate_api.transport import (
    AUTH_HEADERS,
    Response,
    SSEEvent,
    Transport,
    iter_ndjson,
    iter_sse,
)


def sse(*chunks: bytes) -> list[SSEEvent]:
    return list(iter_sse(iter(chunks)))


def data(*chunks: bytes) -> list[str]:
    return [e.data for e in sse(*chunks)]


# -- line splitting -------------------------------------------------------------------------

@pytest.mark.parametrize("chunks", [
    [b"data: a\ndata: b\n\n"],
    [b"data: a\r\ndata: b\r\n\r\n"],
    [b"data: a\rdata: b\r\r"],
    [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"],  # CRLF split across chunks
    [b"data: a\r", b"data: b\r", b"\r"],  # a CR at a chunk's end, no LF after it
    [b"da", b"ta: a\n", b"data: b", b"\n", b"\n"],
])
def test_every_line_ending(chunks) -> None:
    assert data(*chunks) == ["a\nb"]


@pytest.mark.parametrize("chunk", [b"1\n2\r\n", b"1\r2\n", b"1\r\n2\r"])
def test_a_line_end_near_the_start(chunk) -> None:
    assert list(iter_ndjson(iter([chunk]))) == [1, 2]


def test_the_last_line_loses_only_its_cr() -> None:
    assert data(b"data: MAX") == ["MAX"]
    assert data(b"data: MAX\r") == ["MAX"]


def test_a_cr_at_the_very_end_is_a_line_end() -> None:
    assert data(b"data: x\r") == ["x"]
    assert list(iter_ndjson(iter([b'{"a": 1}\r']))) == [{"a": 1}]


def test_blank_lines_in_a_row() -> None:
    assert data(b"\r\n\r\ndata: a\r\r\r\ndata: b\n\n\n") == ["a", "b"]


def test_a_line_with_bad_utf8_is_typed() -> None:
    with pytest.raises(ResponseFormatError, match="UTF-8"):
        list(iter_ndjson(iter([b'{"a": 1}\n', b"\xc3\x28\n"])))
    with pytest.raises(ResponseFormatError, match="UTF-8"):
        data(b"data: ok\n\n", b"data: \xff")


# -- server-sent events ---------------------------------------------------------------------

def test_event_fields() -> None:
    (ev,) = sse(b"event: delta\nid: 7\nretry: 3000\ndata: {\"x\": 1}\n\n")
    assert (ev.event, ev.id, ev.retry, ev.data) == ("delta", "7", 3000, '{"x": 1}')
    assert ev.json() == {"x": 1}


def test_defaults_and_reset_between_events() -> None:
    a, b = sse(b"event: first\nid: 1\ndata: a\n\ndata: b\n\n")
    assert (a.event, a.id) == ("first", "1")
    assert (b.event, b.id, b.retry) == ("message", None, None)


@pytest.mark.parametrize("line, retry", [(b"retry: soon", None), (b"retry: -1", None),
                                         (b"retry:250", 250), (b"retry: 1.5", None)])
def test_retry_must_be_digits(line, retry) -> None:
    (ev,) = sse(line + b"\ndata: x\n\n")
    assert ev.retry == retry


def test_unknown_fields_are_ignored() -> None:
    (ev,) = sse(b"foo: 12\nDATA: no\ndata: x\n\n")
    assert (ev.event, ev.data, ev.id, ev.retry) == ("message", "x", None, None)


def test_only_one_space_after_the_colon_is_dropped() -> None:
    assert data(b"data:  two\ndata:none\ndata\n\n") == [" two\nnone\n"]


def test_an_event_without_data_is_still_an_event() -> None:
    (ev,) = sse(b"event: ping\n\n")
    assert (ev.event, ev.data) == ("ping", "")


def test_what_is_not_an_event() -> None:
    assert sse(b": comment\n\n") == []
    assert sse(b"id: 5\n\n") == []  # an id alone dispatches nothing
    assert sse(b"retry: 10\n\nfoo: bar\n\n") == []
    assert sse(b"\n\n\n") == []
    assert sse(b"") == []


def test_a_field_named_like_a_comment_is_not_one() -> None:
    assert data(b"data: :not a comment\n:a comment\n\n") == [":not a comment"]


def test_an_event_cut_off_at_the_end() -> None:
    events = sse(b"data: a\n\nevent: tail\ndata: b")
    assert [(e.event, e.data) for e in events] == [("message", "a"), ("tail", "b")]
    assert [(e.event, e.data) for e in sse(b"data: a\n\nevent: tail")] == [
        ("message", "a"), ("tail", "")]
    assert sse(b"data: a\n\nid: 3") == sse(b"data: a\n\n")


def test_event_json_errors_are_typed() -> None:
    with pytest.raises(ResponseFormatError, match="not JSON"):
        SSEEvent(data="{half").json()


# -- NDJSON and whole bodies ----------------------------------------------------------------

def test_ndjson_lines() -> None:
    chunks = [b'{"a": 1}\r\n', b"   \n\n", b'[1, 2]\n{"b"', b': "c"}']
    assert list(iter_ndjson(iter(chunks))) == [{"a": 1}, [1, 2], {"b": "c"}]
    assert list(iter_ndjson(iter([b"\n \n"]))) == []


def test_ndjson_errors_are_typed() -> None:
    it = iter_ndjson(iter([b'{"a": 1}\n{nope}\n']))
    assert next(it) == {"a": 1}
    with pytest.raises(ResponseFormatError, match="NDJSON"):
        next(it)


def test_response_json() -> None:
    assert Response(200, {}, b'{"a": [1]}', "http://h/").json() == {"a": [1]}
    with pytest.raises(ResponseFormatError) as info:
        Response(502, {}, b"<html>bad gateway</html>", "http://h/").json()
    assert info.value.status == 502
    with pytest.raises(ResponseFormatError):
        Response(200, {}, b'"\xff"', "http://h/").json()


# -- redirects ------------------------------------------------------------------------------

class _Hop(BaseHTTPRequestHandler):
    """``/to/<status>?url=<where>`` answers ``status`` with that location (none without
    ``url``); ``/chain/<n>`` redirects n times; ``/status/<code>`` answers that code;
    ``/slow/<seconds>`` answers late; anything else echoes the request."""

    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        self.server.seen.append({  # type: ignore[attr-defined]
            "method": self.command, "path": parts.path, "body": body.decode(),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "port": self.client_address[1]})
        segs = parts.path.strip("/").split("/")
        if segs[0] == "to":
            where = parse_qs(parts.query).get("url")
            self._answer(int(segs[1]), b"moved", {"location": where[0]} if where else {})
        elif segs[0] == "chain" and int(segs[1]) > 0:
            self._answer(302, b"", {"location": f"/chain/{int(segs[1]) - 1}"})
        elif segs[0] == "status":
            code = int(segs[1])
            self._answer(code, b"" if code == 204 else b'{"error": "nope"}', {})
        elif segs[0] == "slow":
            time.sleep(float(segs[1]))
            self._answer(200, b"late", {})
        else:
            echo = {"method": self.command, "path": parts.path, "body": body.decode()}
            self._answer(200, json.dumps(echo).encode(), {"content-type": "application/json"})

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def servers():
    """Two servers on different ports: two origins."""
    started = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hop)
        srv.daemon_threads = True
        srv.seen = []
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
        started.append(srv)
    yield started
    for srv in started:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def transport():
    t = Transport()
    yield t
    t.close()


CREDENTIALS = {"Authorization": "Bearer sk-1", "X-Api-Key": "sk-1", "x-goog-api-key": "sk-1",
               "api-key": "sk-1", "Proxy-Authorization": "Basic eA==", "Cookie": "s=1"}


def test_every_credential_header_is_listed() -> None:
    assert AUTH_HEADERS == {h.lower() for h in CREDENTIALS}


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_on_the_same_host_keeps_the_credentials(servers, transport, code) -> None:
    hop, _ = servers
    r = transport.request("GET", f"{hop.url}/to/{code}?url=/echo",
                          headers={**CREDENTIALS, "X-Request-ID": "r1"})
    assert r.status == 200 and r.url == f"{hop.url}/echo"
    final = hop.seen[-1]["headers"]
    assert {h.lower(): final[h.lower()] for h in CREDENTIALS} == {
        h.lower(): v for h, v in CREDENTIALS.items()}
    assert final["x-request-id"] == "r1"
    assert len({s["port"] for s in hop.seen}) == 1  # the redirect's connection was reused


def test_a_redirect_to_another_host_drops_every_credential(servers, transport) -> None:
    hop, far = servers
    r = transport.request("GET", f"{hop.url}/to/307?url={far.url}/echo",
                          headers={**CREDENTIALS, "X-Request-ID": "r1"})
    assert r.status == 200 and r.url == f"{far.url}/echo"
    assert AUTH_HEADERS.isdisjoint(far.seen[-1]["headers"])
    assert far.seen[-1]["headers"]["x-request-id"] == "r1"  # the rest is kept
    assert AUTH_HEADERS <= set(hop.seen[0]["headers"])  # the first host had them


def test_dropped_credentials_stay_dropped_on_the_way_back(servers, transport) -> None:
    hop, far = servers
    back = f"{far.url}/to/302?url={hop.url}/echo"
    transport.request("GET", f"{hop.url}/to/302?url={back}", headers=CREDENTIALS)
    assert [s["path"] for s in hop.seen] == ["/to/302", "/echo"]
    assert AUTH_HEADERS.isdisjoint(hop.seen[-1]["headers"])


def test_303_turns_a_post_into_a_get_without_body(servers, transport) -> None:
    hop, _ = servers
    r = transport.request("POST", f"{hop.url}/to/303?url=/echo", body=b'{"q": 1}',
                          headers={"Content-Type": "application/json"})
    assert r.json() == {"method": "GET", "path": "/echo", "body": ""}


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_other_redirects_resend_the_post(servers, transport, code) -> None:
    hop, _ = servers
    r = transport.request("POST", f"{hop.url}/to/{code}?url=/echo", body=b'{"q": 1}')
    assert r.json() == {"method": "POST", "path": "/echo", "body": '{"q": 1}'}


def test_303_drops_form_fields_and_307_resends_them(servers, transport) -> None:
    hop, _ = servers
    r = transport.request("POST", f"{hop.url}/to/303?url=/echo", fields={"f": "v"})
    assert r.json()["method"] == "GET" and r.json()["body"] == ""
    r = transport.request("POST", f"{hop.url}/to/307?url=/echo", fields={"f": "v"})
    assert r.json()["method"] == "POST" and 'name="f"' in r.json()["body"]


def test_a_relative_location(servers, transport) -> None:
    hop, _ = servers
    r = transport.request("GET", f"{hop.url}/to/302?url=../echo/here")
    assert r.url == f"{hop.url}/echo/here" and r.json()["path"] == "/echo/here"


@pytest.mark.parametrize("hops, ok", [(5, True), (6, False)])
def test_at_most_five_redirects(servers, transport, hops, ok) -> None:
    hop, _ = servers
    if ok:
        assert transport.request("GET", f"{hop.url}/chain/{hops}").status == 200
    else:
        with pytest.raises(APIConnectionError, match="too many redirects"):
            transport.request("GET", f"{hop.url}/chain/{hops}")
    assert len(hop.seen) == 6


@pytest.mark.parametrize("path, status", [("/to/302", 302), ("/to/300?url=/echo", 300),
                                          ("/to/305?url=/echo", 305)])
def test_what_is_not_followed(servers, transport, path, status) -> None:
    hop, _ = servers
    r = transport.request("GET", hop.url + path)
    assert r.status == status and len(hop.seen) == 1


def test_a_streamed_request_follows_redirects(servers, transport) -> None:
    hop, _ = servers
    r = transport.request("GET", f"{hop.url}/to/307?url=/echo", stream=True)
    assert r.status == 200
    assert json.loads(b"".join(r.iter_bytes()))["path"] == "/echo"


def test_an_error_status_is_read_whole_even_when_streaming(servers, transport) -> None:
    hop, _ = servers
    r = transport.request("GET", f"{hop.url}/status/400", stream=True)
    assert (r.status, r.data, r.raw) == (400, b'{"error": "nope"}', None)
    transport.request("GET", f"{hop.url}/echo")
    assert len({s["port"] for s in hop.seen}) == 1  # the connection was given back
    r = transport.request("GET", f"{hop.url}/status/399", stream=True)
    assert r.data == b"" and r.raw is not None  # below 400: the caller reads the stream
    assert b"".join(r.iter_bytes()) == b'{"error": "nope"}'


def test_an_empty_body(servers, transport) -> None:
    hop, _ = servers
    r = transport.request("GET", f"{hop.url}/status/204")
    assert (r.status, r.data) == (204, b"")


def test_a_per_request_timeout_overrides_the_default(servers) -> None:
    hop, _ = servers
    t = Transport(timeouts=Timeouts(connect=2, read=5))
    try:
        with pytest.raises(APITimeoutError) as info:
            t.request("GET", f"{hop.url}/slow/1", timeouts=Timeouts(connect=2, read=0.1))
        assert info.value.__cause__ is not None
    finally:
        t.close()


def test_nobody_listening_is_a_connection_error(transport) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(APIConnectionError) as info:
            transport.request("GET", f"http://127.0.0.1:{port}/")
    assert info.value.__cause__ is not None
