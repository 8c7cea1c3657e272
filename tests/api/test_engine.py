"""The engine on its own: any operation (not only HTTP), and its injectable state."""

from __future__ import annotations

import pytest

from ipfs_accelerate_api import RetryPolicy
from ipfs_accelerate_api.config import Secret
from ipfs_accelerate_api.core import CircuitBreaker
from ipfs_accelerate_api.engine import Engine, OpResult
from ipfs_accelerate_api.engine.keys import KeyPool
from ipfs_accelerate_api.errors import APIConnectionError, CircuitOpenError, ServerError


def test_runs_any_operation_with_retries() -> None:
    attempts = []

    def flaky(attempt):
        attempts.append((attempt.number, attempt.key.label))
        if attempt.number < 3:
            raise APIConnectionError("not yet")
        return OpResult("done", prompt_tokens=3, completion_tokens=4)

    e = Engine("custom", keys=[Secret("k", "custom-key-1")],
               retry=RetryPolicy(max_retries=5, base_delay=0.001, max_delay=0.002))
    try:
        assert e.call(flaky) == "done"
        assert [n for n, _ in attempts] == [1, 2, 3]
        s = e.stats()
        assert s["retried"] == 2 and s["prompt_tokens"] == 3 and s["completion_tokens"] == 4
        assert e.submit(lambda a: 42).result(5) == 42
    finally:
        e.close()


def test_unexpected_exception_is_not_retried_but_delivered() -> None:
    e = Engine("custom")
    try:
        with pytest.raises(ZeroDivisionError):
            e.call(lambda a: 1 / 0)
        assert e.stats()["errors"] == {"ZeroDivisionError": 1}
    finally:
        e.close()


def test_injected_breaker_and_key_pool() -> None:
    shared_breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60)
    pool = KeyPool([Secret("a", "x-key-1")])
    e1 = Engine("one", circuit=shared_breaker, key_pool=pool, retry=RetryPolicy(max_retries=0))
    e2 = Engine("two", circuit=shared_breaker, key_pool=pool, retry=RetryPolicy(max_retries=0))
    try:
        with pytest.raises(ServerError):
            e1.call(lambda a: (_ for _ in ()).throw(ServerError("down", status=503)))
        with pytest.raises(CircuitOpenError):  # the other engine sees the shared state
            e2.call(lambda a: "never runs")
        assert pool.stats()["x-key-1"]["requests"] == 1
    finally:
        e1.close()
        e2.close()
