"""Benchmark helpers. ``IPFS_ACCEL_BENCH_QUICK=1`` shrinks every size (CI runs the suite once
that way with ``--benchmark-disable`` so it cannot rot); the README's numbers come from full
runs (see ``benchmarks/report.py``)."""

from __future__ import annotations

import importlib
import os
from types import SimpleNamespace

import pytest

QUICK = os.environ.get("IPFS_ACCEL_BENCH_QUICK", "") not in ("", "0")

_MODULES = ("pqueue", "ratelimit", "breaker", "packer", "vecmath")


def load_twin(tag: str) -> SimpleNamespace:
    pkg = "_c" if tag == "c" else "_pure"
    ns = SimpleNamespace(tag=tag)
    for m in _MODULES:
        mod = importlib.import_module(f"ipfs_accelerate_api.core.{pkg}.{m}")
        for name in getattr(mod, "__all__", []) or dir(mod):
            if not name.startswith("_"):
                setattr(ns, name, getattr(mod, name))
        for name in ("PriorityQueue", "TokenBucket", "RateLimiter", "CircuitBreaker",
                     "pack_batches", "pack_sorted", "l2_normalize", "cosine_similarity",
                     "top_k"):
            if hasattr(mod, name):
                setattr(ns, name, getattr(mod, name))
    return ns


def twins() -> dict[str, SimpleNamespace]:
    out = {"py": load_twin("py")}
    try:
        out["c"] = load_twin("c")
    except ImportError:
        pass
    return out


def per_op(benchmark, n: int) -> None:
    """Record how many operations one benchmark call performs (report.py divides by it)."""
    benchmark.extra_info["ops_per_call"] = n


def sequential(benchmark, impl: str, call, n: int) -> None:
    """Benchmark ``n`` sequential calls of ``call`` as one round, reported per call as ``impl``."""

    def run():
        for _ in range(n):
            call()

    per_op(benchmark, n)
    benchmark.extra_info["impl"] = impl
    benchmark(run)


@pytest.fixture(params=["c", "py"])
def twin(request):
    t = twins()
    if request.param not in t:
        pytest.skip("compiled twins not built")
    return t[request.param]
