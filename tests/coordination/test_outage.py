"""Redis is a speed-up, never a point of failure: stopped, killed, read-only or out of memory,
requests carry on with local state (no hang, none lost, one warning) and the shared state
comes back when Redis does."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from ipfs_accelerate_api import backend
from ipfs_accelerate_api.config import Secret
from ipfs_accelerate_api.coordination import Coordination
from ipfs_accelerate_api.emulator import Emulator

#: Far above the ~0.1 s a request may lose to a dead Redis: only a hang can exceed it.
HANG = 2.0
THREADS = 8


def _wait_until(predicate, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("ipfs_accelerate_api.coordination")]


class Callers:
    """Threads calling ``list_models`` until stopped; every call's phase, latency, outcome."""

    def __init__(self, ai) -> None:
        self.ai, self.phase = ai, "before"
        self.calls: list[tuple[str, float, str]] = []
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(THREADS)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            phase, t0 = self.phase, time.monotonic()
            try:
                self.ai.list_models()
                outcome = "ok"
            except Exception as exc:
                outcome = repr(exc)
            with self.lock:
                self.calls.append((phase, time.monotonic() - t0, outcome))

    def run_phase(self, phase: str, seconds: float) -> None:
        self.phase = phase
        n = len(self.calls)
        time.sleep(seconds)
        _wait_until(lambda: len(self.calls) > n + THREADS)  # calls did finish in this phase

    def finish(self) -> list[tuple[str, float, str]]:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "a caller hung"
        return self.calls


def _shared_requests(coord: Coordination) -> int:
    names = list(coord.client.scan_iter(f"{coord.namespace}:*:key:*"))
    return sum(int(coord.client.hget(n, "requests") or 0) for n in names)


@pytest.mark.parametrize("how", ["SIGSTOP", "SIGKILL"])
def test_redis_stopped_mid_run_then_back(own_redis, caplog, how) -> None:
    caplog.set_level(logging.INFO, logger="ipfs_accelerate_api.coordination")
    coord = Coordination.from_url(own_redis.url, namespace="outage", recheck_min=0.05,
                                  recheck_max=0.2)  # the default 0.1 s socket timeout
    with Emulator() as emu:
        ai = backend("openai", base_url=emu.base_url("openai"), api_key="sk-x", rpm=600_000,
                     coordination=coord, max_concurrency=THREADS)
        callers = Callers(ai)
        try:
            callers.run_phase("before", 0.3)
            assert coord.healthy
            if how == "SIGSTOP":
                own_redis.pause()
            else:
                own_redis.kill()
            callers.run_phase("down", 1.0)
            assert not coord.healthy
            stale = ai.stats()["keys"]["openai-key-1"]
            assert stale["shared"] is False and stale["requests"] > 0  # local numbers meanwhile
            if how == "SIGSTOP":
                own_redis.resume()
            else:
                own_redis.start()  # same port, empty
            _wait_until(lambda: coord.healthy)
            before = _shared_requests(coord)
            callers.run_phase("after", 0.3)
            assert _shared_requests(coord) > before  # shared state resumed
        finally:
            calls = callers.finish()
            ai.close()
            coord.close()
    assert all(outcome == "ok" for _, _, outcome in calls), {o for _, _, o in calls}
    assert max(latency for _, latency, _ in calls) < HANG
    assert len(_warnings(caplog)) == 1  # one warning per outage, not one per request
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert coord.stats()["fallbacks"] == 1 and coord.stats()["rejoins"] == 1


def _readonly(client, on: bool) -> None:
    # A replica of a master that does not exist: reads work, every write is refused.
    client.replicaof("127.0.0.1", "1") if on else client.replicaof("NO", "ONE")


def _out_of_memory(client, on: bool) -> None:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1" if on else "0")


@pytest.mark.parametrize("breakage", [_readonly, _out_of_memory], ids=["READONLY", "OOM"])
def test_redis_answering_errors_counts_as_away(own_redis, caplog, breakage) -> None:
    caplog.set_level(logging.INFO, logger="ipfs_accelerate_api.coordination")
    coord = Coordination.from_url(own_redis.url, namespace="errors", socket_timeout=2.0,
                                  recheck_min=0.05, recheck_max=0.2)
    admin = Coordination.from_url(own_redis.url, namespace="admin", socket_timeout=2.0).client
    try:
        pool = coord.key_pool("openai", "http://e", [Secret("sk-a", "a")], rpm=6000)
        breaker = coord.breaker("openai", "http://e")
        assert pool.acquire()[0] is not None and coord.healthy
        breakage(admin, True)
        for _ in range(50):
            k, _ = pool.acquire()
            assert k is not None  # served locally
            pool.release(k, ok=True)
            assert breaker.allow()
            breaker.record_success()
        assert not coord.healthy and len(_warnings(caplog)) == 1
        assert "ReadOnlyError" in _warnings(caplog)[0] or "OutOfMemoryError" in _warnings(caplog)[0]
        time.sleep(0.5)
        assert not coord.healthy  # the background check writes: a read-only Redis stays away
        breakage(admin, False)
        _wait_until(lambda: coord.healthy)
        assert pool.stats()["a"]["shared"] is True
    finally:
        breakage(admin, False)
        admin.connection_pool.disconnect()
        coord.close()


def test_unreachable_from_the_start_runs_locally(caplog) -> None:
    caplog.set_level(logging.INFO, logger="ipfs_accelerate_api.coordination")
    with Emulator() as emu:
        ai = backend("openai", base_url=emu.base_url("openai"), api_key="sk-x", rpm=6000,
                     coordination="redis://127.0.0.1:1/0")
        try:
            for _ in range(20):
                assert ai.list_models()
            assert ai.stats()["breaker"]["shared"] is False
        finally:
            ai.close()
    assert len(_warnings(caplog)) == 1
