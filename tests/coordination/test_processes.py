"""Several processes, one Redis: the quota holds across them, and so does the breaker.

No timing assertions: admissions are counted in windows against the quota. A grant counts in a
window only if its whole acquire call (before..after) lies inside it, so a preempted worker
can make a window look emptier, never fuller.
"""

from __future__ import annotations

import time

import urllib3

from ipfs_accelerate_api import BreakerPolicy, RetryPolicy, backend
from ipfs_accelerate_api.emulator import Emulator, FaultPlan, ServiceConfig
from ipfs_accelerate_api.errors import ServerError

from . import _workers

PROCESSES, THREADS = 4, 8


def _most_in_window(spans: list[tuple[float, float]], width: float) -> int:
    """Most grants whose acquire lies wholly inside some window of ``width`` seconds."""
    spans = sorted(spans)
    most = 0
    for i, (start, _) in enumerate(spans):
        inside = sum(1 for b, a in spans[i:] if a <= start + width)
        most = max(most, inside)
    return most


def test_four_processes_share_one_per_key_quota(redis_server, namespace, processes) -> None:
    """4 processes x 8 threads, one key at 100/s (capacity 100): in any window of T seconds at
    most 100*T + 100 grants, and at least 97% of the quota over the run. One process's local
    clock runs 30 s ahead: the shared bucket refills on Redis's clock, so it gains nothing."""
    rate, seconds = 100.0, 2.0
    go = processes.event()
    for i in range(PROCESSES):
        processes.start(_workers.hammer_pool, redis_server.url, namespace, rate * 60, THREADS,
                        seconds, 30.0 if i == 0 else 0.0, go)
    processes.collect("ready")
    go.set()
    reports = processes.collect("spans")
    assert all(r["fallbacks"] == 0 for r in reports)
    spans = [s for r in reports for s in r["spans"]]
    capacity = rate
    for width in (0.25, 0.5, 1.0, 1.5):
        assert _most_in_window(spans, width) <= rate * width + capacity, width
    first, last = min(b for b, _ in spans), max(a for _, a in spans)
    assert len(spans) <= rate * (last - first) + capacity
    # Demand never stopped between the first grant's end and the last grant's start.
    supplied = rate * (max(b for b, _ in spans) - min(a for _, a in spans)) + capacity
    assert len(spans) >= 0.97 * supplied, (len(spans), supplied)
    assert all(r["spans"] for r in reports)  # every process got its share of the key


def _drain(emu: Emulator, key: str) -> None:
    """Spend the emulator's whole per-key allowance (it holds a minute's worth)."""
    http = urllib3.PoolManager(retries=False)
    url = emu.base_url("openai") + "/models"
    for _ in range(100_000):
        if http.request("GET", url, headers={"Authorization": f"Bearer {key}"}).status == 429:
            break
    http.clear()


def _run_against_emulator(redis_url, namespace, processes, shared: bool) -> tuple[dict, list]:
    rpm, seconds = 600.0, 2.0
    with Emulator({"openai": ServiceConfig(rpm=rpm)}) as emu:
        go = processes.event()
        for _ in range(PROCESSES):
            processes.start(_workers.hammer_backend, redis_url if shared else None, namespace,
                            emu.base_url("openai"), rpm, THREADS, seconds, go)
        processes.collect("ready")
        # The server now has nothing left; 2 s from now it holds 2 s of the rate: the clients'
        # burst (1 s) plus 1 s of slack, so its remaining-requests header never reads 0 (which
        # with its reset header would tell every client to wait most of a minute).
        _drain(emu, _workers.SHARED_KEY)
        before = emu.stats("openai")["sent_429"]
        time.sleep(2.0)
        go.set()
        counts = processes.collect("counts")
        return {"sent_429": emu.stats("openai")["sent_429"] - before}, counts


def test_emulator_told_the_same_quota_sends_no_429(redis_server, namespace, processes) -> None:
    """Real HTTP from 4 processes x 8 threads, each backend told the server's rpm and sharing
    it through Redis; the emulator (drained first, so it has no minute of slack) sends no 429."""
    seen, counts = _run_against_emulator(redis_server.url, namespace, processes, shared=True)
    assert seen["sent_429"] == 0
    assert sum(c["429"] for c in counts) == 0
    assert sum(c["ok"] for c in counts) > 0  # (32 threads on 10/s: many run out of deadline)
    assert all(c["fallbacks"] == 0 for c in counts)


def test_without_coordination_the_same_run_gets_429s(redis_server, namespace, processes) -> None:
    """The control: the same run with per-process limits multiplies the quota by 4."""
    seen, counts = _run_against_emulator(redis_server.url, namespace, processes, shared=False)
    assert seen["sent_429"] > 0
    assert sum(c["429"] for c in counts) > 0


def test_breaker_is_shared_across_processes(redis_server, namespace, processes) -> None:
    """Opened by one process, it fails the others fast (the service sees none of their
    calls); half-open, exactly one probe gets through across 4 processes x 8 threads."""
    from ipfs_accelerate_api.coordination import Coordination

    with Emulator({"openai": ServiceConfig(faults=FaultPlan(script=["503"] * 3))}) as emu:
        url = emu.base_url("openai")
        opened, half_open = processes.event(), processes.event()
        for _ in range(PROCESSES):
            processes.start(_workers.breaker_worker, redis_server.url, namespace, url, THREADS,
                            0.5, opened, half_open)
        processes.collect("ready")
        coord = Coordination.from_url(redis_server.url, namespace=namespace, socket_timeout=2.0)
        policy = BreakerPolicy(failure_threshold=3, recovery_timeout=2.0)
        ai = backend("openai", base_url=url, api_key=_workers.SHARED_KEY, coordination=coord,
                     breaker=policy, retry=RetryPolicy(max_retries=0))
        try:
            for _ in range(3):
                try:
                    ai.list_models()
                except ServerError:
                    pass
            assert ai.stats()["breaker"]["state"] == "OPEN"
            opened.set()
            assert processes.collect("phase1") == ["failed fast"] * PROCESSES
            assert emu.stats("openai")["requests"] == 3
            deadline = time.monotonic() + 10
            while ai.stats()["breaker"]["state"] != "HALF_OPEN":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            half_open.set()
            phase2 = processes.collect("phase2")
            assert all(r["fallbacks"] == 0 for r in phase2)
            assert sum(r["allowed"] for r in phase2) == 1
        finally:
            ai.close()
            coord.close()
