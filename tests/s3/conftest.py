"""Fixtures for the S3 Kit tests: a real S3 implementation (moto's server) on a loopback port.

* ``moto_url``: moto's ``ThreadedMotoServer`` in this process (session-wide); ``bucket`` makes
  a fresh bucket on it per test, ``raw`` is a plain boto3 client to it (to look behind the
  backend's back), ``seed`` writes objects straight into moto's store (fast bulk setup).
* ``moto_processes``: two ``moto_server`` processes, each with its own store (multiplexing:
  one can be stopped mid-run).
* ``FaultProxy``: a loopback HTTP proxy in front of a server that answers chosen requests
  with an S3 error, delays them, sends bodies slowly, and counts what passes.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

from ipfs_accelerate_api import RetryPolicy, backend  # noqa: E402

ACCESS_KEY = "AKIATESTKEY0000"
SECRET_KEY = "test-secret-key-0000"
FAST_RETRY = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01)
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_client(url: str):
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id="x",
                        aws_secret_access_key="y",
                        config=Config(s3={"addressing_style": "path"},
                                      request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


@pytest.fixture(scope="session")
def moto_url():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server._server.server_port}"
    server.stop()


@pytest.fixture(scope="session")
def raw(moto_url):
    return raw_client(moto_url)


@pytest.fixture
def bucket(raw) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=name)
    return name


@pytest.fixture
def seed(moto_url):
    """``seed(bucket, {key: bytes})``: objects written straight into moto's store."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    store = s3_backends[DEFAULT_ACCOUNT_ID]["global"]

    def put(bucket: str, objects: dict[str, bytes]) -> None:
        for key, value in objects.items():
            store.put_object(bucket, key, value)

    return put


@pytest.fixture
def make(moto_url, bucket):
    """``make(**options)``: an S3 backend on the session's moto server and the test's bucket
    (fast retries); all are closed after the test."""
    made = []

    def build(**options):
        if "endpoints" not in options:
            options.setdefault("endpoint_url", moto_url)
            options.setdefault("access_key", ACCESS_KEY)
            options.setdefault("secret_key", SECRET_KEY)
        options.setdefault("bucket", bucket)
        options.setdefault("retry", FAST_RETRY)
        b = backend("s3", **options)
        made.append(b)
        return b

    yield build
    for b in made:
        b.close()


# -- moto in processes of their own -----------------------------------------------------------
class MotoProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def moto_processes():
    """Two moto servers in processes of their own (separate stores); stopped afterwards."""
    procs = [MotoProcess(), MotoProcess()]
    try:
        for p in procs:
            p.wait_ready()
        yield procs
    finally:
        for p in procs:
            p.stop()


# -- a proxy that injects faults --------------------------------------------------------------
@dataclass
class Rule:
    """Requests matching ``method`` and ``path`` (a regex on the path and query) get
    ``status``/``code`` instead of an answer (``times`` of them; None: all), or are delayed
    by ``delay`` seconds, or have their answer's body sent in ``chunk``-byte pieces with
    ``pause`` seconds between them."""

    method: str | None = None
    path: str | None = None
    status: int | None = None
    code: str = "InternalError"
    times: int | None = None
    delay: float = 0.0
    chunk: int = 0
    pause: float = 0.0
    headers: dict | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and \
            (self.path is None or re.search(self.path, path) is not None)


class FaultProxy:
    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname, parts.port)
        self.rules: list[Rule] = []
        self.seen: Counter[str] = Counter()  # "METHOD path-without-query"
        self.log: list[tuple[str, str]] = []
        self.active = 0
        self.peak: Counter[str] = Counter()  # most requests in flight at once, by method
        self._active: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def add(self, **kw) -> Rule:
        rule = Rule(**kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def _rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for r in self.rules:
                if r.matches(method, path) and (r.times is None or r.times > 0):
                    if r.times is not None:
                        r.times -= 1
                    return r
        return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        with self._lock:
            self.seen[f"{method} {path.split('?')[0]}"] += 1
            self.log.append((method, path))
            self._active[method] += 1
            self.peak[method] = max(self.peak[method], self._active[method])
        try:
            rule = self._rule(method, path)
            if rule is not None and rule.delay:
                time.sleep(rule.delay)
            if rule is not None and rule.status is not None:
                xml = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{rule.code}</Code>"
                       f"<Message>injected {rule.code}</Message><RequestId>inj-1</RequestId>"
                       "</Error>").encode()
                h.send_response(rule.status)
                for k, v in (rule.headers or {}).items():
                    h.send_header(k, v)
                h.send_header("Content-Type", "application/xml")
                h.send_header("Content-Length", str(0 if method == "HEAD" else len(xml)))
                h.end_headers()
                if method != "HEAD":
                    h.wfile.write(xml)
                return
            conn = http.client.HTTPConnection(*self.target, timeout=60)
            try:
                headers = {k: v for k, v in h.headers.items()
                           if k.lower() not in ("connection", "keep-alive")}
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            h.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    h.send_header(k, v)
            # A HEAD answer's length is the object's, not its (empty) body's.
            h.send_header("Content-Length", resp.getheader("Content-Length", "0")
                          if method == "HEAD" else str(len(data)))
            h.end_headers()
            if method == "HEAD":
                return
            if rule is not None and rule.chunk:
                for i in range(0, len(data), rule.chunk):
                    h.wfile.write(data[i:i + rule.chunk])
                    h.wfile.flush()
                    time.sleep(rule.pause)
            else:
                h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self._lock:
                self._active[method] -= 1

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(moto_url):
    p = FaultProxy(moto_url)
    yield p
    p.close()


def write_model(root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
