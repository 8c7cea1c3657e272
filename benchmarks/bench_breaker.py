"""Breaker overhead per call: allow()+record_success() versus pybreaker's call() overhead."""

from __future__ import annotations

import pytest

from conftest import QUICK, per_op

N = 200 if QUICK else 5000


def _noop():
    return None


@pytest.mark.benchmark(group="breaker: overhead per call")
def test_ours(benchmark, twin):
    br = twin.CircuitBreaker()
    allow, ok = br.allow, br.record_success

    def run():
        for _ in range(N):
            if allow():
                _noop()
                ok()

    per_op(benchmark, N)
    benchmark.extra_info["impl"] = twin.tag
    benchmark(run)


@pytest.mark.benchmark(group="breaker: overhead per call")
def test_pybreaker_call(benchmark):
    pybreaker = pytest.importorskip("pybreaker")
    br = pybreaker.CircuitBreaker()
    call = br.call

    def run():
        for _ in range(N):
            call(_noop)

    per_op(benchmark, N)
    benchmark.extra_info["impl"] = "pybreaker.call"
    benchmark(run)


@pytest.mark.benchmark(group="breaker: overhead per call")
def test_bare_call(benchmark):
    """The loop and the call itself, subtracted from both sides by report.py."""

    def run():
        for _ in range(N):
            _noop()

    per_op(benchmark, N)
    benchmark.extra_info["impl"] = "bare call"
    benchmark(run)
