"""TEI embedding throughput: 10,000 short texts through the emulator's TEI (batch limit 32,
capacity 4 answering 429 beyond it, a fixed latency per batch). Compared in the same run, on
the same server: our backend (batch size and concurrency from ``/info`` and the option
``max_concurrency=4``), the official ``huggingface_hub.InferenceClient.feature_extraction``
looping over batches of 32, and a thread pool of 4 running it. Each records the requests it
sent (ours must equal the packer's minimum, ceil(n / 32)) and its share of the emulator's
ceiling, ``capacity * 32 / latency`` texts per second (target: ours >= 90%).

    python -m pytest benchmarks/bench_tei.py -p no:cacheprovider --benchmark-enable -o addopts=
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import QUICK, per_op

from ipfs_accelerate_api import backend
from ipfs_accelerate_api.emulator import Emulator, ServiceConfig

N = 1_000 if QUICK else 10_000
BATCH = 32
CAPACITY = 4
LATENCY = 0.05  # seconds per batch, the model's time
DIM = 64  # small vectors: the emulator's own JSON work stays far below LATENCY
ROUNDS = 1 if QUICK else 3
CEILING = CAPACITY * BATCH / LATENCY  # texts per second the server can give at most
TEXTS = [f"short text number {i}" for i in range(N)]
MINIMUM = math.ceil(N / BATCH)


@pytest.fixture(scope="module")
def emu():
    with Emulator({"tei": ServiceConfig(capacity=CAPACITY, latency=LATENCY)}) as e:
        e.services["tei"].dim = DIM
        e.services["tei"].max_client_batch_size = BATCH
        e.services["tei"].cache_rows = 2 * N
        e.config("tei").latency = 0.0
        with backend("tei", base_url=e.base_url("tei"), max_concurrency=CAPACITY) as ai:
            ai.embed(TEXTS)  # the emulator's vectors made once, before anything is timed
        e.config("tei").latency = LATENCY
        yield e
    e.assert_no_handler_errors()


def _measure(benchmark, emu, impl: str, run) -> float:
    """Time ``run`` (embeds all of TEXTS once), and record requests per run and the share
    of the server's ceiling it reached."""
    record = emu.services["tei"].record
    times: list[float] = []
    def sent() -> int:
        paths = record.snapshot()["by_path"]
        return paths.get("/embed", 0) + paths.get("/", 0)  # InferenceClient posts to the root

    before = sent()

    def timed() -> None:
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
        assert out.shape == (N, DIM)

    per_op(benchmark, N)
    benchmark.extra_info["impl"] = impl
    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1)
    requests = (sent() - before) / len(times)
    benchmark.extra_info["requests_per_run"] = requests
    benchmark.extra_info["minimum_requests"] = MINIMUM
    benchmark.extra_info["share_of_ceiling"] = round(N / min(times) / CEILING, 3)
    return requests


@pytest.mark.benchmark(group="tei: embed 10k short texts, capacity 4")
def test_tei_embed_ours(benchmark, emu):
    ai = backend("tei", base_url=emu.base_url("tei"), max_concurrency=CAPACITY)
    ai.embed("warm")  # /info read, connection open
    try:
        requests = _measure(benchmark, emu, "ipfs_accelerate_api", lambda: ai.embed(TEXTS))
    finally:
        ai.close()
    assert requests == MINIMUM  # counts, not time: the packer's minimum, none refused
    assert emu.stats("tei")["sent_429"] == 0
    assert emu.stats("tei")["refused"] == {}


@pytest.mark.benchmark(group="tei: embed 10k short texts, capacity 4")
def test_tei_embed_inference_client_loop(benchmark, emu):
    hf = pytest.importorskip("huggingface_hub")
    client = hf.InferenceClient(base_url=emu.base_url("tei"))
    batches = [TEXTS[i:i + BATCH] for i in range(0, N, BATCH)]

    def run():
        return np.vstack([client.feature_extraction(b) for b in batches])

    _measure(benchmark, emu, "InferenceClient, one batch at a time", run)


@pytest.mark.benchmark(group="tei: embed 10k short texts, capacity 4")
def test_tei_embed_inference_client_pool(benchmark, emu):
    hf = pytest.importorskip("huggingface_hub")
    client = hf.InferenceClient(base_url=emu.base_url("tei"))
    batches = [TEXTS[i:i + BATCH] for i in range(0, N, BATCH)]
    pool = ThreadPoolExecutor(CAPACITY)

    def run():
        return np.vstack(list(pool.map(client.feature_extraction, batches)))

    try:
        _measure(benchmark, emu, "InferenceClient, 4 threads", run)
    finally:
        pool.shutdown()
