"""What the worker processes of the multi-process tests run (module level: spawn imports it).

Each worker reports ``(tag, value)`` on the results queue, or ``("error", traceback)``.
Times are wall-clock ``time.time()`` (one host: one clock for every process).
"""

from __future__ import annotations

import functools
import threading
import time
import traceback
from typing import Any, Callable

SHARED_KEY = "sk-shared-quota"


def reporting(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(results: Any, *args: Any) -> None:
        try:
            fn(results, *args)
        except BaseException:
            results.put(("error", traceback.format_exc()))

    return run


def _threads(n: int, body: Callable[[], None]) -> None:
    threads = [threading.Thread(target=body) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


@reporting
def hammer_pool(results: Any, url: str, namespace: str, rpm: float, threads: int,
                seconds: float, clock_offset: float, go: Any) -> None:
    """Greedy acquires on one shared key from ``threads`` threads, sleeping the wait the
    script returns; reports ``(before, after)`` of every grant. ``clock_offset`` skews this
    process's local clock (the shared bucket must not care)."""
    from ipfs_accelerate_api.config import Secret
    from ipfs_accelerate_api.coordination import Coordination

    coord = Coordination.from_url(url, namespace=namespace, socket_timeout=2.0)
    pool = coord.key_pool("openai", "http://quota.test", [Secret(SHARED_KEY, "shared")], rpm=rpm,
                          clock=lambda: time.monotonic() + clock_offset)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()
    results.put(("ready", None))
    go.wait(30)
    end = time.time() + seconds

    def body() -> None:
        while True:
            before = time.time()
            if before >= end:
                return
            key, wait = pool.acquire(0.0)
            after = time.time()
            if key is not None:
                with lock:
                    spans.append((before, after))
            else:
                time.sleep(min(wait, max(0.0, end - after)))

    _threads(threads, body)
    results.put(("spans", {"spans": spans, "fallbacks": coord.stats()["fallbacks"]}))
    coord.close()


@reporting
def hammer_backend(results: Any, url: str | None, namespace: str, base_url: str, rpm: float,
                   threads: int, seconds: float, go: Any) -> None:
    """``list_models`` in a loop from ``threads`` threads through a backend told ``rpm``
    (shared through Redis, or local when ``url`` is None); reports successes and 429s."""
    from ipfs_accelerate_api import RetryPolicy, backend
    from ipfs_accelerate_api.coordination import Coordination
    from ipfs_accelerate_api.errors import APITimeoutError, RateLimitError

    coord = None if url is None else Coordination.from_url(url, namespace=namespace,
                                                           socket_timeout=2.0)
    ai = backend("openai", base_url=base_url, api_key=SHARED_KEY, rpm=rpm, coordination=coord,
                 max_concurrency=threads, retry=RetryPolicy(max_retries=0, deadline=1.0))
    counts = {"ok": 0, "429": 0, "timeout": 0}
    lock = threading.Lock()
    results.put(("ready", None))
    go.wait(30)
    end = time.time() + seconds

    def body() -> None:
        while time.time() < end:
            try:
                ai.list_models()
                outcome = "ok"
            except RateLimitError:
                outcome = "429"
            except APITimeoutError:  # after a 429 the server's headers say: wait a minute
                outcome = "timeout"
            with lock:
                counts[outcome] += 1

    _threads(threads, body)
    ai.close()
    counts["fallbacks"] = 0 if coord is None else coord.stats()["fallbacks"]
    results.put(("counts", counts))
    if coord is not None:
        coord.close()


@reporting
def breaker_worker(results: Any, url: str, namespace: str, base_url: str, threads: int,
                   seconds: float, opened: Any, half_open: Any) -> None:
    """Phase 1 (after ``opened``): one call through a backend, expected to fail fast.
    Phase 2 (after ``half_open``): ``allow()`` on the shared breaker from every thread for
    ``seconds``; reports how many were let through."""
    from ipfs_accelerate_api import BreakerPolicy, RetryPolicy, backend
    from ipfs_accelerate_api.coordination import Coordination
    from ipfs_accelerate_api.errors import CircuitOpenError

    coord = Coordination.from_url(url, namespace=namespace, socket_timeout=2.0)
    policy = BreakerPolicy(failure_threshold=3, recovery_timeout=2.0)
    ai = backend("openai", base_url=base_url, api_key=SHARED_KEY, coordination=coord,
                 breaker=policy, retry=RetryPolicy(max_retries=0))
    results.put(("ready", None))
    opened.wait(30)
    try:
        ai.list_models()
        outcome = "sent"
    except CircuitOpenError:
        outcome = "failed fast"
    results.put(("phase1", outcome))
    half_open.wait(30)
    breaker = ai.engine.breaker
    allowed = []
    end = time.time() + seconds

    def body() -> None:
        while time.time() < end:
            if breaker.allow():
                allowed.append(time.time())
            time.sleep(0.001)

    _threads(threads, body)
    results.put(("phase2", {"allowed": len(allowed), "fallbacks": coord.stats()["fallbacks"]}))
    ai.close()
    coord.close()
