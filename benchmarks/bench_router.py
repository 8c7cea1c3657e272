"""Routing overhead per chat call: ``Router`` over one deployment vs the bare backend, both
against nginx serving a canned OpenAI answer on loopback, in the same run (target: at most
5% more time per call), and LiteLLM's ``Router.completion`` over the same server, in a child
process (target: ours at least 10x faster). Skipped without nginx; LiteLLM's row without
litellm (``pip install litellm``).

    python -m pytest benchmarks/bench_router.py -o addopts= --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from bench_client import CHAT_JSON, MESSAGES, nginx

from conftest import QUICK, sequential

N_SEQ = 20 if QUICK else 300
GROUP = "router: chat, sequential"


@pytest.fixture(scope="module")
def server():
    with nginx({"/v1/chat/completions": CHAT_JSON}) as root:
        yield root + "/v1"


@pytest.mark.benchmark(group=GROUP)
def test_bare_backend(benchmark, server):
    from ipfs_accelerate_api import backend

    with backend("openai", base_url=server, api_key="sk-bench", max_concurrency=1) as ai:
        ai.chat(MESSAGES, model="gpt-4o-mini")
        sequential(benchmark, "bare backend", lambda: ai.chat(MESSAGES, model="gpt-4o-mini"),
                   N_SEQ)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("strategy", ["simple_shuffle", "latency_based"])
def test_router_one_deployment(benchmark, server, strategy):
    from ipfs_accelerate_api import Router

    deployments = [{"group": "chat", "backend": "openai", "model": "gpt-4o-mini",
                    "options": {"base_url": server, "api_key": "sk-bench",
                                "max_concurrency": 1}}]
    with Router(deployments, strategy=strategy) as router:
        router.chat(MESSAGES, model="chat")
        sequential(benchmark, f"Router ({strategy})",
                   lambda: router.chat(MESSAGES, model="chat"), N_SEQ)


_LITELLM_SCRIPT = """
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")
from litellm import Router
base, n = sys.argv[1], int(sys.argv[2])
msgs = json.loads(sys.argv[3])
router = Router(model_list=[{"model_name": "chat", "litellm_params": {
    "model": "openai/gpt-4o-mini", "api_base": base, "api_key": "sk-bench"}}], num_retries=0)
call = lambda: router.completion(model="chat", messages=msgs)
call()
times = []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(n):
        call()
    times.append((time.perf_counter() - t) / n)
print(statistics.median(times))
"""


@pytest.mark.benchmark(group=GROUP)
def test_litellm_router(benchmark, server):
    """In a child process (litellm's import leaves threads and event loops behind)."""
    pytest.importorskip("litellm")
    n = max(5, N_SEQ // 10)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [sys.executable, "-c", _LITELLM_SCRIPT, server, str(n), json.dumps(MESSAGES)]

    def run():
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if out.returncode != 0:
            pytest.skip(f"litellm failed: {out.stderr[-300:]}")
        return float(out.stdout.strip().splitlines()[-1])

    seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["impl"] = "litellm Router.completion"
    benchmark.extra_info["seconds_per_op"] = seconds
    benchmark.extra_info["ops_per_call"] = 1
