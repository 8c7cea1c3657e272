"""put+get pairs: our queue (C, pure) versus queue.PriorityQueue and a bare heapq."""

from __future__ import annotations

import heapq
import queue

import pytest

from conftest import QUICK, per_op

N = 200 if QUICK else 5000


@pytest.mark.benchmark(group="pqueue: put+get pair")
def test_ours(benchmark, twin):
    from ipfs_accelerate_api import Priority

    q = twin.PriorityQueue()
    put, get, normal = q.put, q.get, Priority.NORMAL

    def run():
        for i in range(N):
            put(i, normal)
            get()

    per_op(benchmark, N)
    benchmark.extra_info["impl"] = twin.tag
    benchmark(run)


@pytest.mark.benchmark(group="pqueue: put+get pair")
def test_stdlib_priority_queue(benchmark):
    q = queue.PriorityQueue()
    put, get = q.put, q.get

    def run():
        for i in range(N):
            put((1, i, i))
            get()

    per_op(benchmark, N)
    benchmark.extra_info["impl"] = "queue.PriorityQueue"
    benchmark(run)


@pytest.mark.benchmark(group="pqueue: put+get pair")
def test_heapq_no_lock(benchmark):
    h: list = []
    push, pop = heapq.heappush, heapq.heappop

    def run():
        for i in range(N):
            push(h, (1, i, i))
            pop(h)

    per_op(benchmark, N)
    benchmark.extra_info["impl"] = "heapq (no lock)"
    benchmark(run)
