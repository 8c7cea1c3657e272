"""Small pieces of the request path: framing, retry hints, credentials, tracking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ipfs_accelerate_api.config import RetryPolicy, Secret, Timeouts, resolve_credentials
from ipfs_accelerate_api.engine.retry import is_retryable, parse_duration, server_delay
from ipfs_accelerate_api.engine.tracking import Histogram
from ipfs_accelerate_api.errors import (
    APIConnectionError,
    BadRequestError,
    ConfigurationError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    StreamInterrupted,
    status_error_class,
)
from ipfs_accelerate_api.transport import iter_ndjson, iter_sse


def _sse(*chunks: bytes):
    return [(e.event, e.data) for e in iter_sse(iter(chunks))]


def test_sse_framing_variants() -> None:
    assert _sse(b"data: a\n\n", b"data:b\n\n") == [("message", "a"), ("message", "b")]
    assert _sse(b"data: x\r\n\r\ndata: y\r\n", b"\r\n") == [("message", "x"), ("message", "y")]
    assert _sse(b": keep-alive\n\ndata: 1\ndata: 2\n\n") == [("message", "1\n2")]
    assert _sse(b"event: message_start\ndata: {}\n\nevent: ping\ndata: {}\n\n") == [
        ("message_start", "{}"), ("ping", "{}")]
    # split anywhere, even inside CRLF and inside a multi-byte character
    text = "data: h\u00e9llo\r\n\r\n".encode()
    assert _sse(*[text[i:i + 1] for i in range(len(text))]) == [("message", "h\u00e9llo")]
    assert _sse(b"data: last") == [("message", "last")]  # closed without the blank line


def test_sse_bad_utf8_is_typed() -> None:
    with pytest.raises(ResponseFormatError):
        _sse(b"data: \xff\xfe\n\n")


def test_ndjson() -> None:
    assert list(iter_ndjson(iter([b'{"a": 1}\n{"b"', b': 2}\n\n{"c": 3}']))) == [
        {"a": 1}, {"b": 2}, {"c": 3}]
    with pytest.raises(ResponseFormatError):
        list(iter_ndjson(iter([b"{nope}\n"])))


def test_parse_duration() -> None:
    assert parse_duration("6m0s") == 360
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("12ms") == pytest.approx(0.012)
    assert parse_duration("2m59.56s") == pytest.approx(179.56)
    assert parse_duration("1h2m") == 3720
    assert parse_duration("7") == 7
    assert parse_duration("soon") is None


def test_server_delay_precedence() -> None:
    assert server_delay({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert server_delay({"Retry-After": "3"}) == 3
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < server_delay({"retry-after": date}) <= 31
    assert server_delay({"x-ratelimit-remaining-requests": "0",
                         "x-ratelimit-reset-requests": "1.5s",
                         "x-ratelimit-remaining-tokens": "10",
                         "x-ratelimit-reset-tokens": "9s"}) == 1.5
    assert server_delay({}) is None


def test_retry_classification() -> None:
    assert is_retryable(RateLimitError("x", status=429))
    assert is_retryable(ServerError("x", status=503))
    assert is_retryable(status_error_class(408)("x", status=408))
    assert is_retryable(status_error_class(409)("x", status=409))
    for status in (400, 401, 403, 404, 422):
        assert not is_retryable(status_error_class(status)("x", status=status))
    assert is_retryable(APIConnectionError("reset"))
    assert not is_retryable(StreamInterrupted("cut", partial_text="ab"))
    assert not is_retryable(ServerError("x", status=500, headers={"x-should-retry": "false"}))
    assert is_retryable(BadRequestError("x", status=400, headers={"x-should-retry": "true"}))


def test_backoff_is_capped_with_full_jitter() -> None:
    p = RetryPolicy(base_delay=0.5, max_delay=8)
    assert p.backoff(1, 0.999) < 0.5
    assert p.backoff(10, 0.999) < 8
    assert p.backoff(3, 0.0) == 0.0
    assert RetryPolicy(jitter=False).backoff(2, 0.3) == 1.0
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ConfigurationError):
        Timeouts(connect=0)
    assert RetryPolicy() == RetryPolicy() and "max_retries=3" in repr(RetryPolicy())


def test_histogram_percentiles_bounded() -> None:
    h = Histogram()
    for i in range(1, 10_001):
        h.add(i / 10_000)  # 0.1 ms .. 1 s
    assert h.percentile(50) == pytest.approx(0.5, rel=0.06)
    assert h.percentile(99) == pytest.approx(0.99, rel=0.06)
    assert len(h._counts) < 400


def test_credentials_sources(tmp_path, monkeypatch) -> None:
    env = {"OPENAI_API_KEYS": "k1, k2"}
    c = resolve_credentials("openai", "OPENAI", env=env)
    assert [k.reveal() for k in c.keys] == ["k1", "k2"] and c.source == "environment"
    env = {"OPENAI_API_KEY_1": "a", "OPENAI_API_KEY_2": "b", "OPENAI_API_KEY": "z"}
    assert [k.reveal() for k in resolve_credentials("openai", "OPENAI", env=env).keys] == ["a", "b"]
    assert [k.reveal() for k in resolve_credentials("openai", "OPENAI", env={"OPENAI_API_KEY": "z"}).keys] == ["z"]
    assert resolve_credentials("openai", "OPENAI", api_key="x", env=env).keys[0].reveal() == "x"
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"openai": {"api_keys": ["f1", "f2"], "base_url": "http://h/v1"}}))
    os.chmod(path, 0o600)
    c = resolve_credentials("openai", "OPENAI", env={"IPFS_ACCEL_CREDENTIALS": str(path)})
    assert [k.reveal() for k in c.keys] == ["f1", "f2"] and c.base_url == "http://h/v1"
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        resolve_credentials("openai", "OPENAI", env={"IPFS_ACCEL_CREDENTIALS": str(path)})
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        resolve_credentials("openai", "OPENAI", env={"IPFS_ACCEL_CREDENTIALS": str(tmp_path / "none")})
    assert resolve_credentials("x", "X", required=False, env={}).keys == ()


def test_secret_hides_itself() -> None:
    s = Secret("sk-123456789", "openai-key-1")
    assert "123456789" not in repr(s) + str(s) + f"{s}"
    assert s.reveal() == "sk-123456789"
    with pytest.raises(ConfigurationError):
        Secret("  ")


def test_cli_emulate_serves_every_service_with_its_options(tmp_path) -> None:
    import urllib3

    from ipfs_accelerate_api.emulator import SERVICES

    cmd = [sys.executable, "-m", "ipfs_accelerate_api.cli", "emulate", "--port", "0",
           "--rpm", "1"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            urls = dict(proc.stdout.readline().strip().split(": ", 1) for _ in SERVICES)
            assert set(urls) == set(SERVICES)
            assert all(u.startswith("http://127.0.0.1:") for u in urls.values())
            r = urllib3.request("GET", urls["openai"] + "/models", headers={"Authorization": "Bearer k"})
            assert r.status == 200 and r.json()["object"] == "list"
            # --rpm applies to every service: a second request on one key is refused
            body = {"model": "llama-3.1-8b-instant", "messages": [{"role": "user", "content": "hi"}]}
            statuses = [urllib3.request("POST", urls["groq"] + "/chat/completions", json=body,
                                        headers={"Authorization": "Bearer k"}).status
                        for _ in range(2)]
            assert statuses == [200, 429]
        finally:
            proc.terminate()
            assert proc.wait(10) == 0


def test_pytest_plugin_fixture(ai_emulator) -> None:
    assert ai_emulator.base_url("openai").endswith("/openai/v1")
