"""The embedding pipeline (``embed_file``, what ``ipfs-accel embed`` runs) against the emulator.

1. Throughput: 10,000 short texts through the emulator's TEI (batch limit 32, capacity 4, a
   fixed 50 ms per batch): its share of the service's ceiling, ``capacity * 32 / latency``
   texts per second (target: at least 90%), and a plain loop of the ``openai`` SDK posting
   batches of 32 to the emulator's OpenAI service (same capacity and latency) from a thread
   pool of 4, the same texts in the same run.
2. Rate-limited goodput: the emulator's OpenAI service enforcing 600 requests per minute per
   key, spread evenly (a bucket of one second's worth): our pipeline told ``rpm=600`` (target:
   at least 97% of the quota, zero 429s) and the ``openai`` SDK's retry-on-429 loop from 4
   threads (its share of the quota and the 429s it took).

    python -m pytest benchmarks/bench_pipeline.py -p no:cacheprovider --benchmark-enable -o addopts=
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import QUICK, per_op

from ipfs_accelerate_api.emulator import Emulator, ServiceConfig
from ipfs_accelerate_api.pipelines import embed_file

N = 1_000 if QUICK else 10_000
BATCH = 32
CAPACITY = 4
LATENCY = 0.05
DIM = 64
CEILING = CAPACITY * BATCH / LATENCY
TEXTS = [f"short text number {i}" for i in range(N)]
MODEL = "text-embedding-3-small"

RPM = 600  # 10 requests a second
RATE = RPM / 60
GOODPUT_REQUESTS = 30 if QUICK else 120
GOODPUT_TEXTS = [f"quota text {i}" for i in range(GOODPUT_REQUESTS * BATCH)]
THROUGHPUT = "pipeline: embed 10k short texts, capacity 4"
GOODPUT = "pipeline: rate-limited goodput, 600 rpm"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    (d / "in.txt").write_text("\n".join(TEXTS) + "\n")
    (d / "quota.txt").write_text("\n".join(GOODPUT_TEXTS) + "\n")
    return d


@pytest.fixture(scope="module")
def emu():
    cfg = {"tei": ServiceConfig(capacity=CAPACITY, latency=LATENCY),
           "openai": ServiceConfig(capacity=CAPACITY, latency=LATENCY)}
    with Emulator(cfg) as e:
        e.services["tei"].dim = DIM
        e.services["tei"].max_client_batch_size = BATCH
        e.services["tei"].cache_rows = 2 * N
        yield e
    e.assert_no_handler_errors()


def _timed(benchmark, impl: str, run, texts: int) -> list[float]:
    times: list[float] = []

    def once() -> None:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)

    per_op(benchmark, texts)
    benchmark.extra_info["impl"] = impl
    # a first run unmeasured: the emulator makes (and keeps) each text's vector once
    benchmark.pedantic(once, rounds=1 if QUICK else 3, iterations=1, warmup_rounds=1)
    return times[1:] or times  # with --benchmark-disable the run is once, without warm-up


@pytest.mark.benchmark(group=THROUGHPUT)
def test_pipeline_tei_share_of_ceiling(benchmark, emu, corpus):
    out = str(corpus / "out.npy")
    summaries = []

    def run():
        summaries.append(embed_file(str(corpus / "in.txt"), out, backend="tei",
                                    base_url=emu.base_url("tei"), max_concurrency=CAPACITY,
                                    restart=True))

    times = _timed(benchmark, "ipfs_accelerate_api embed_file (TEI)", run, N)
    assert np.load(out).shape == (N, DIM)
    assert all(s.rows == N for s in summaries)
    share = N / min(times) / CEILING
    benchmark.extra_info["share_of_ceiling"] = round(share, 3)
    benchmark.extra_info["requests_per_run"] = summaries[-1].requests - 1  # less /info
    assert summaries[-1].requests - 1 == math.ceil(N / BATCH)


@pytest.mark.benchmark(group=THROUGHPUT)
def test_openai_sdk_thread_pool(benchmark, emu):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=emu.base_url("openai"), api_key="sk-bench")
    batches = [TEXTS[i:i + BATCH] for i in range(0, N, BATCH)]
    pool = ThreadPoolExecutor(CAPACITY)

    def one(batch):
        r = client.embeddings.create(model=MODEL, input=batch, dimensions=DIM)
        return np.array([d.embedding for d in r.data], dtype=np.float32)

    def run():
        assert np.vstack(list(pool.map(one, batches))).shape == (N, DIM)

    try:
        times = _timed(benchmark, "openai SDK, 4 threads, batches of 32", run, N)
    finally:
        pool.shutdown()
        client.close()
    benchmark.extra_info["share_of_ceiling"] = round(N / min(times) / CEILING, 3)


@pytest.fixture
def quota():
    """An OpenAI service that enforces RPM per key, a second's worth at most at once."""
    import ipfs_accelerate_api.backends.openai  # noqa: F401 - imported once, before timing
    with Emulator({"openai": ServiceConfig(rpm=RPM, burst=1.0, latency=0.01)}) as e:
        yield e


def _goodput(benchmark, quota, seconds: float) -> None:
    sent_429 = quota.stats("openai")["sent_429"]
    # the most the quota allows in that time: a second's burst, then the rate
    share = GOODPUT_REQUESTS / (RATE + RATE * seconds)
    benchmark.extra_info["share_of_quota"] = round(share, 3)
    benchmark.extra_info["sent_429"] = sent_429


@pytest.mark.benchmark(group=GOODPUT)
def test_pipeline_goodput_under_a_quota(benchmark, quota, corpus):
    out = str(corpus / "quota.npy")
    times: list[float] = []

    def run():
        t0 = time.perf_counter()
        s = embed_file(str(corpus / "quota.txt"), out, backend="openai", model=MODEL,
                       base_url=quota.base_url("openai"), api_key="sk-bench", rpm=RPM,
                       max_concurrency=CAPACITY, batch_size=BATCH, params={"dimensions": DIM},
                       restart=True)
        times.append(time.perf_counter() - t0)
        assert s.rows == len(GOODPUT_TEXTS) and s.requests == GOODPUT_REQUESTS

    per_op(benchmark, GOODPUT_REQUESTS)
    benchmark.extra_info["impl"] = "ipfs_accelerate_api embed_file, rpm=600"
    benchmark.pedantic(run, rounds=1, iterations=1)
    _goodput(benchmark, quota, times[0])
    assert quota.stats("openai")["sent_429"] == 0  # counts, not time: paced, never refused


@pytest.mark.benchmark(group=GOODPUT)
def test_openai_sdk_retry_loop_under_a_quota(benchmark, quota):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=quota.base_url("openai"), api_key="sk-bench")
    batches = [GOODPUT_TEXTS[i:i + BATCH] for i in range(0, len(GOODPUT_TEXTS), BATCH)]
    pool = ThreadPoolExecutor(CAPACITY)
    times: list[float] = []

    def one(batch):
        while True:  # the SDK retries 429s itself (twice); then the loop sends again
            try:
                return client.embeddings.create(model=MODEL, input=batch, dimensions=DIM)
            except openai.RateLimitError:
                continue

    def run():
        t0 = time.perf_counter()
        assert len(list(pool.map(one, batches))) == GOODPUT_REQUESTS
        times.append(time.perf_counter() - t0)

    per_op(benchmark, GOODPUT_REQUESTS)
    benchmark.extra_info["impl"] = "openai SDK retry loop, 4 threads"
    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        pool.shutdown()
        client.close()
    _goodput(benchmark, quota, times[0])
