"""A client given the server's limits: no 429s, and throughput close to the limit.

The emulator enforces 1,200 requests/min per key (20/s) with real 429s; the client is told
the same ``rpm`` and pushes as hard as it can from 8 threads. Timing is measured here, never
asserted in the test suite.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import QUICK

RPM = 1200
SECONDS = 1.0 if QUICK else 5.0


@pytest.mark.benchmark(group="client: limits vs emulator")
def test_client_given_server_limits(benchmark):
    from ipfs_accelerate_api import backend
    from ipfs_accelerate_api.emulator import Emulator, ServiceConfig

    def run():
        with Emulator({"openai": ServiceConfig(rpm=RPM)}) as emu:
            ai = backend("openai", base_url=emu.base_url("openai"), api_key="sk-bench", rpm=RPM,
                         max_concurrency=8)
            done: list[float] = []
            lock = threading.Lock()
            stop = time.monotonic() + SECONDS

            def worker():
                while time.monotonic() < stop:
                    ai.list_models()
                    with lock:
                        done.append(time.monotonic())

            threads = [threading.Thread(target=worker) for _ in range(8)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ai.close()
            burst = RPM / 60  # the client bucket's one-second capacity, granted at once
            steady = [t for t in done if t - t0 >= 1.0]
            rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 else float("nan")
            return {"sent_429": emu.stats("openai")["sent_429"], "requests": len(done),
                    "steady_rate": rate, "limit_rate": RPM / 60, "rate_fraction": rate / (RPM / 60),
                    "burst": burst}

    out = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    benchmark.extra_info["impl"] = "ipfs_accelerate_api (rpm=1200 on both sides)"
    assert out["sent_429"] == 0
