"""Routing overhead per chat call: ``Router`` over one deployment vs the bare backend, both
against nginx serving a canned OpenAI answer on loopback, in the same run (target: at most
5% more time per call), and LiteLLM's ``Router.completion`` over the same server, in a child
process (target: ours at least 10x faster). Skipped without nginx; LiteLLM's row without
litellm (``pip install litellm``).

    python -m pytest benchmarks/bench_router.py -o addopts= --benchmark-enable --benchmark-only
"""

from __future__ import annotations


import pytest
from bench_client import CHAT_JSON, MESSAGES, litellm_child, nginx

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


@pytest.mark.benchmark(group="router: overhead, interleaved")
def test_router_overhead_interleaved(benchmark, server):
    """Rounds of the bare backend and of the Router over it taken in turn, in one loop, so
    the machine's noise falls on both alike; the ratio of their medians per call."""
    import statistics
    import time

    from ipfs_accelerate_api import Router, backend

    opts = {"base_url": server, "api_key": "sk-bench", "max_concurrency": 1}
    rounds, per = (5, 20) if QUICK else (30, 50)
    with backend("openai", **opts) as ai, Router([{"group": "chat", "backend": "openai",
                                                   "model": "gpt-4o-mini",
                                                   "options": opts}]) as router:
        calls = {"bare": lambda: ai.chat(MESSAGES, model="gpt-4o-mini"),
                 "router": lambda: router.chat(MESSAGES, model="chat")}
        times: dict[str, list[float]] = {"bare": [], "router": []}

        def run():
            for i in range(rounds):
                for name in (("bare", "router") if i % 2 else ("router", "bare")):
                    t = time.perf_counter()
                    for _ in range(per):
                        calls[name]()
                    times[name].append((time.perf_counter() - t) / per)

        for c in calls.values():
            c()
        benchmark.pedantic(run, rounds=1, iterations=1)
    bare, routed = statistics.median(times["bare"]), statistics.median(times["router"])
    benchmark.extra_info.update(impl="Router / bare backend", ops_per_call=rounds * per * 2,
                                ratio=round(routed / bare, 4), bare_us=round(bare * 1e6, 1),
                                router_us=round(routed * 1e6, 1))


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
    litellm_child(benchmark, _LITELLM_SCRIPT, server, "litellm Router.completion",
                  max(5, N_SEQ // 10))
