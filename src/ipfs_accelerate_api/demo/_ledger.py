"""The demo's accounting: every request it sends and how each ended, the per-backend table,
and the check that nothing was lost."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from typing import Any

__all__ = ["ANSWERED", "Ledger", "table"]

ANSWERED = "answered"
#: How long the check waits for a request still unfinished before calling it lost.
SETTLE_TIMEOUT = 30.0


class Ledger:
    """Each request the demo sends, by backend, and its outcome: ``answered``, or the class
    of the exception it ended in, marked expected (the phase that sent it said it may end
    so) or not. Thread-safe: futures report from the engine's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: Counter[str] = Counter()
        self.outcomes: dict[str, Counter[tuple[str, bool]]] = {}
        self.first_unexpected: dict[str, str] = {}
        self._futures: list[Future[Any]] = []

    def _record(self, backend: str, exc: BaseException | None,
                expected: tuple[type[BaseException], ...]) -> None:
        if exc is None:
            key = (ANSWERED, True)
        else:
            key = (type(exc).__name__, isinstance(exc, expected))
        with self._lock:
            self.outcomes.setdefault(backend, Counter())[key] += 1
            if not key[1]:
                self.first_unexpected.setdefault(key[0], f"{backend}: {exc}")

    def watch(self, backend: str, future: Future[Any],
              expected: tuple[type[BaseException], ...] = ()) -> Future[Any]:
        """Count ``future`` as one request to ``backend``; its outcome is recorded when done."""
        with self._lock:
            self.sent[backend] += 1
            self._futures.append(future)
        future.add_done_callback(lambda f: self._record(backend, f.exception(), expected))
        return future

    def call(self, backend: str, fn: Callable[[], Any],
             expected: tuple[type[BaseException], ...] = ()) -> tuple[Any, BaseException | None]:
        """Run one request now: ``(result, None)`` or ``(None, the exception)``, counted.
        Only exceptions (not KeyboardInterrupt) are caught."""
        with self._lock:
            self.sent[backend] += 1
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - every outcome is counted, none raised
            self._record(backend, exc, expected)
            return None, exc
        self._record(backend, None, expected)
        return result, None

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> int:
        """Wait for every watched request; the number still unfinished after ``timeout``."""
        with self._lock:
            futures = list(self._futures)
        _, pending = wait(futures, timeout=timeout)
        return len(pending)

    def count(self, backend: str | None = None, *, answered: bool | None = None,
              expected: bool | None = None) -> int:
        with self._lock:
            rows = [self.outcomes.get(backend, Counter())] if backend else list(self.outcomes.values())
            total = 0
            for outcomes in rows:
                for (what, ok), n in outcomes.items():
                    if answered is not None and (what == ANSWERED) != answered:
                        continue
                    if expected is not None and ok != expected:
                        continue
                    total += n
            return total

    def failures(self, *, expected: bool) -> Counter[str]:
        """Exception class -> count, over every backend."""
        out: Counter[str] = Counter()
        with self._lock:
            for outcomes in self.outcomes.values():
                for (what, ok), n in outcomes.items():
                    if what != ANSWERED and ok == expected:
                        out[what] += n
        return out


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"


def table(rows: Sequence[tuple[str, str, Mapping[str, Any], str]]) -> list[str]:
    """The per-backend table: ``rows`` are (backend, model, its ``stats()``, tokens shown)."""
    head = ("backend", "model", "requests", "succeeded", "failed", "retried", "429s seen",
            "breaker trips", "p50", "p99", "tokens")
    body = []
    for name, model, s, tokens in rows:
        lat = s.get("latency") or {}
        body.append((name, model, f"{s['submitted']:,}", f"{s['succeeded']:,}",
                     f"{s['failed']:,}", f"{s['retried']:,}", f"{s['rate_limited']:,}",
                     f"{(s.get('breaker') or {}).get('trips', 0)}", _ms(lat.get("p50")),
                     _ms(lat.get("p99")), tokens))
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head), line(["-" * w for w in widths]), *(line(r) for r in body)]
