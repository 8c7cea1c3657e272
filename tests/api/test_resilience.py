"""Retries, keys, limits, the breaker and secrets, against the emulator over real HTTP."""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ipfs_accelerate_api import BreakerPolicy, RetryPolicy
from ipfs_accelerate_api.core import BreakerState
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.errors import (
    AcceleratorError,
    AuthenticationError,
    CircuitOpenError,
    ServerError,
)

from .conftest import MSG


def _wait_until(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_retry_after_is_honoured_and_key_cools_down(make, emu) -> None:
    emu.config("openai").faults = FaultPlan(script=["429"])
    ai = make(api_keys=["sk-a", "sk-b"])
    assert ai.list_models()
    s = ai.stats()
    assert s["retried"] == 1
    assert s["keys"]["openai-key-1"]["cooldowns"] == 1
    # The retry went to the other key instead of waiting for the cooling one.
    assert emu.stats("openai")["by_key"] == {"sk-a": 1, "sk-b": 1}


def test_single_key_waits_for_its_cooldown(make, emu) -> None:
    emu.config("openai").faults = FaultPlan(script=["429", "429"])
    ai = make()
    assert ai.list_models()
    assert ai.stats()["retried"] == 2
    assert emu.stats("openai")["requests"] == 3


def test_round_robin_spreads_keys(make, emu) -> None:
    ai = make(api_keys=["k1", "k2", "k3"])
    for _ in range(9):
        ai.list_models()
    assert emu.stats("openai")["by_key"] == {"k1": 3, "k2": 3, "k3": 3}


def test_least_loaded_uses_idle_keys(make, emu) -> None:
    emu.config("openai").latency = 0.02
    ai = make(api_keys=["k1", "k2"], key_strategy="least_loaded", max_concurrency=2)
    futures = [ai.submit("list_models") for _ in range(10)]
    for f in futures:
        f.result()
    by_key = emu.stats("openai")["by_key"]
    assert set(by_key) == {"k1", "k2"} and sum(by_key.values()) == 10


def test_401_disables_the_key_and_moves_on(make, emu) -> None:
    emu.config("openai").keys = ["sk-good"]
    ai = make(api_keys=["sk-bad", "sk-good"])
    for _ in range(3):
        assert ai.list_models()
    keys = ai.stats()["keys"]
    assert keys["openai-key-1"]["disabled"].startswith("401")
    assert keys["openai-key-2"]["disabled"] is None
    assert emu.stats("openai")["by_key"] == {"sk-bad": 1, "sk-good": 3}


def test_no_429_when_given_the_servers_limits(make, emu) -> None:
    emu.config("openai").rpm = 1200
    emu.config("openai").tpm = 100_000
    ai = make(rpm=1200, tpm=100_000, max_concurrency=4)
    futures = [ai.submit("chat", MSG, model="gpt-4o-mini", max_tokens=8) for _ in range(60)]
    for f in futures:
        f.result()
    assert emu.stats("openai")["sent_429"] == 0
    assert ai.stats()["limiter_waits"] > 0  # the client did pace itself


def test_breaker_opens_in_an_outage_and_closes_after(make, emu) -> None:
    emu.config("openai").faults = FaultPlan(rate=1.0, kinds=["503"])
    ai = make(retry=RetryPolicy(max_retries=0),
              breaker=BreakerPolicy(failure_threshold=3, recovery_timeout=0.2))
    for _ in range(3):
        with pytest.raises(ServerError):
            ai.list_models()
    assert ai.engine.breaker.state is BreakerState.OPEN
    seen = emu.stats("openai")["requests"]
    with pytest.raises(CircuitOpenError) as info:
        ai.list_models()
    assert 0 < info.value.retry_after <= 0.2
    assert emu.stats("openai")["requests"] == seen  # failed fast, nothing sent
    emu.config("openai").faults = FaultPlan()  # the outage ends
    _wait_until(lambda: ai.engine.breaker.state is BreakerState.HALF_OPEN)
    assert ai.list_models()
    assert ai.engine.breaker.state is BreakerState.CLOSED
    assert ai.stats()["breaker"]["trips"] == 1


def test_4xx_does_not_trip_the_breaker(make, emu) -> None:
    ai = make(breaker=BreakerPolicy(failure_threshold=2))
    for _ in range(4):
        with pytest.raises(AcceleratorError):
            ai.embed([""], model="text-embedding-3-small")
    assert ai.engine.breaker.state is BreakerState.CLOSED


def _client_sockets(port: int) -> int | None:
    """Open TCP sockets of this process connected *to* ``port`` (Linux /proc; None elsewhere)."""
    try:
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as fh:
                for line in fh.readlines()[1:]:
                    parts = line.split()
                    if int(parts[2].rsplit(":", 1)[1], 16) == port and parts[9] in inodes:
                        count += 1
        return count
    except OSError:
        return None


@pytest.mark.slow
def test_ten_thousand_requests_under_faults(emu) -> None:
    from ipfs_accelerate_api import backend

    emu.config("openai").faults = FaultPlan(
        rate=0.2, kinds=["500", "503", "429", "reset", "malformed", "wrong_shape", "truncate"], seed=7)
    ours = lambda: [t.name for t in threading.enumerate()  # noqa: E731
                    if t.name.startswith("ipfs-accel-") and t.name != "ipfs-accel-emulator"]
    assert ours() == []
    ai = backend("openai", base_url=emu.base_url("openai"), api_keys=["k1", "k2", "k3", "k4"],
                 max_concurrency=16,
                 retry=RetryPolicy(max_retries=6, base_delay=0.001, max_delay=0.005),
                 breaker=BreakerPolicy(failure_threshold=1000))
    n = 10_000
    futures = [ai.submit("list_models") for _ in range(n)]
    ok = failed = 0
    for f in futures:
        try:
            f.result(timeout=120)
            ok += 1
        except AcceleratorError:
            failed += 1
    assert ok + failed == n
    s = ai.stats()
    assert s["submitted"] == n and s["succeeded"] == ok and s["failed"] == failed
    assert failed < n * 0.001
    ids = emu.record("openai").request_ids
    assert len(set(ids)) == n  # every request reached the server, retries reuse their id
    assert s["retried"] == len(ids) - n  # and nothing was sent twice beyond its retries
    assert _client_sockets(emu.port) not in (0,)  # the check sees our pooled connections
    ai.close()
    gc.collect()
    assert ours() == []  # workers, scheduler: all gone
    assert _client_sockets(emu.port) in (0, None)  # every connection we opened is closed


CANARY = "sk-canary-7f3a9c1e5b"


@pytest.mark.parametrize("service", ["openai", "groq"])
def test_canary_key_never_leaks(make, emu, caplog, service) -> None:
    emu.config(service).keys = ["sk-other"]
    records = []
    caplog.set_level(logging.DEBUG)
    ai = make(service, api_key=CANARY, on_request_end=records.append)
    with pytest.raises(AuthenticationError) as info:
        ai.list_models()
    exc = info.value
    texts = [
        str(exc), repr(exc), "".join(traceback.format_exception(exc)),
        json.dumps(exc.body), json.dumps(dict(exc.headers)), repr(ai),
        json.dumps(ai.stats(), default=str), caplog.text, repr(records),
        repr(ai._keys), str(ai._keys[0]),
    ]
    for text in texts:
        assert CANARY not in text
        assert CANARY[6:] not in text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(ai._keys[0])


class _Redirector(BaseHTTPRequestHandler):
    target = ""
    seen_auth: list = []

    def do_GET(self):
        type(self).seen_auth.append(self.headers.get("authorization"))
        self.send_response(307)
        self.send_header("location", self.target + self.path.split("/v1", 1)[1])
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def test_redirect_to_another_host_drops_the_key(make, emu) -> None:
    _Redirector.target = f"http://localhost:{emu.port}/openai/v1"
    _Redirector.seen_auth = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        ai = make(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                  retry=RetryPolicy(max_retries=0))
        with pytest.raises(AuthenticationError):
            ai.list_models()
        assert _Redirector.seen_auth == ["Bearer sk-test"]  # the first host got the key
        assert emu.record("openai").auth_headers_seen == [{}]  # the other host did not
    finally:
        server.shutdown()
        server.server_close()
