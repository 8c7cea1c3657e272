"""Request tracking: counters, bounded-memory latency histograms, and the end-of-request hook."""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Histogram", "RequestRecord", "Tracker"]


class Histogram:
    """Log-spaced buckets from 10 µs to ~1 h (5% wide): percentiles in constant memory."""

    _BASE = 1.05
    _MIN = 1e-5

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        b = 0 if seconds <= self._MIN else int(math.log(seconds / self._MIN, self._BASE)) + 1
        self._counts[b] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def percentile(self, p: float) -> float | None:
        if not self.count:
            return None
        rank = p / 100.0 * self.count
        seen = 0
        for b in sorted(self._counts):
            seen += self._counts[b]
            if seen >= rank:
                upper = self._MIN * self._BASE ** b
                return min(upper, self.max)
        return self.max

    def buckets(self) -> list[tuple[float, int]]:
        """``(upper bound in seconds, observations at or below it)`` for every bucket that
        holds any, in ascending order: the cumulative form a Prometheus histogram needs."""
        out, seen = [], 0
        for b in sorted(self._counts):
            seen += self._counts[b]
            out.append((self._MIN * self._BASE ** b, seen))
        return out

    def summary(self) -> dict[str, float | None]:
        return {"p50": self.percentile(50), "p90": self.percentile(90),
                "p99": self.percentile(99), "max": self.max if self.count else None,
                "mean": self.total / self.count if self.count else None, "count": self.count}


@dataclass
class RequestRecord:
    """What ``on_request_end`` receives for every finished request."""

    request_id: str
    backend: str
    operation: str
    ok: bool
    error: str | None
    attempts: int
    latency: float
    queue_wait: float
    prompt_tokens: int
    completion_tokens: int
    key: str | None
    model: str | None = None
    #: A Router's call: the deployments it went to, in order (the last one answered, if
    #: ``ok``); empty for a backend's own request.
    deployments_tried: list[str] = field(default_factory=list)


def _usage_table(usage: dict[tuple[str | None, str | None], list[int]]) -> dict[str, Any]:
    """``{model: {key: {requests, succeeded, prompt_tokens, completion_tokens}}}`` (a model
    or key that was not named: ``"-"``)."""
    out: dict[str, Any] = {}
    for (model, key), (n, ok, p, c) in usage.items():
        out.setdefault(model or "-", {})[key or "-"] = {
            "requests": n, "succeeded": ok, "prompt_tokens": p, "completion_tokens": c}
    return out


class Tracker:
    def __init__(self, backend: str, hook: Callable[[RequestRecord], Any] | None = None) -> None:
        self.backend = backend
        self.hook = hook
        self._lock = threading.Lock()
        self.submitted = self.succeeded = self.failed = self.retried = 0
        self.rate_limited = 0  # 429 answers seen, whether the request was retried or not
        self.prompt_tokens = self.completion_tokens = 0
        self.errors: Counter[str] = Counter()
        #: (model, key label) -> [requests, succeeded, prompt tokens, completion tokens]
        self.usage: dict[tuple[str | None, str | None], list[int]] = {}
        self.latency = Histogram()
        self.queue_wait = Histogram()
        #: a stream's request ends at its first chunk: its latency is the time to it
        self.ttft = Histogram()
        self.limiter_waits = 0
        self.limiter_wait_seconds = 0.0

    def submit(self) -> None:
        with self._lock:
            self.submitted += 1

    def retry(self) -> None:
        with self._lock:
            self.retried += 1

    def saw_429(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def limiter_wait(self, seconds: float) -> None:
        with self._lock:
            self.limiter_waits += 1
            self.limiter_wait_seconds += seconds

    def finish(self, record: RequestRecord) -> None:
        """One lock per request: everything about it is recorded here."""
        with self._lock:
            self.queue_wait.add(record.queue_wait)
            if record.ok:
                self.succeeded += 1
                self.latency.add(record.latency)
                if record.operation.startswith("stream"):
                    self.ttft.add(record.latency)
            else:
                self.failed += 1
                self.errors[record.error or "Unknown"] += 1
            self.prompt_tokens += record.prompt_tokens
            self.completion_tokens += record.completion_tokens
            row = self.usage.get((record.model, record.key))
            if row is None:
                row = self.usage[(record.model, record.key)] = [0, 0, 0, 0]
            row[0] += 1
            row[1] += record.ok
            row[2] += record.prompt_tokens
            row[3] += record.completion_tokens
        if self.hook is not None:
            try:
                self.hook(record)
            except Exception:  # a broken hook must not lose the request
                pass

    def add_usage(self, model: str | None, key: str | None, prompt_tokens: int,
                  completion_tokens: int) -> None:
        """Tokens a request reported after it was recorded (a stream's, at its end)."""
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            row = self.usage.get((model, key))
            if row is None:
                row = self.usage[(model, key)] = [0, 0, 0, 0]
            row[2] += prompt_tokens
            row[3] += completion_tokens

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "submitted": self.submitted,
                "succeeded": self.succeeded,
                "failed": self.failed,
                "retried": self.retried,
                "rate_limited": self.rate_limited,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "errors": dict(self.errors),
                "usage": _usage_table(self.usage),
                "latency": self.latency.summary(),
                "queue_wait": self.queue_wait.summary(),
                "latency_buckets": self.latency.buckets(),
                "queue_wait_buckets": self.queue_wait.buckets(),
                "time_to_first_token": self.ttft.summary(),
                "time_to_first_token_buckets": self.ttft.buckets(),
                "limiter_waits": self.limiter_waits,
                "limiter_wait_seconds": self.limiter_wait_seconds,
            }
