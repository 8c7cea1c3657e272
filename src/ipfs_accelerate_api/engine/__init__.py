"""The request engine every backend shares.

    submit -> priority queue -> worker -> key (pool, per-key limiter) -> breaker -> operation
           -> classify -> done | retry later (scheduler, no worker held) | fail

An *operation* is any callable ``op(attempt) -> value | OpResult``: an HTTP request built by
an adapter, a boto3 call, anything. It raises :mod:`ipfs_accelerate_api.errors` exceptions;
the engine decides what happens next. Every submitted request ends in a result or an
exception, and :meth:`Engine.close` fails whatever is still waiting with ``ClientClosed``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..config import BreakerPolicy, RetryPolicy, Secret
from ..core import CircuitBreaker, Priority, PriorityQueue
from ..errors import (
    AcceleratorError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    CircuitOpenError,
    ClientClosed,
    PermissionDeniedError,
    QueueClosed,
    QueueFull,
)
from .keys import KeyPool, KeyState, RateLimitInfo
from .retry import counts_against_breaker, is_retryable, server_delay
from .tracking import RequestRecord, Tracker

__all__ = ["Attempt", "Engine", "OpResult", "RateLimitInfo", "check_priority", "new_request_id"]

log = logging.getLogger("ipfs_accelerate_api.engine")

DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_QUEUE_SIZE = 10_000
#: A request never waits less than this between attempts (avoids hot loops on bad hints).
MIN_RETRY_DELAY = 0.001


@dataclass
class OpResult:
    """An operation's value plus what the engine should learn from it.

    ``stream=True``: the value is an iterator still reading from the server; the request's
    concurrency slot is held until it is exhausted, closed, broken or garbage-collected, so
    ``max_concurrency`` bounds streams too."""

    value: Any
    prompt_tokens: int = 0
    completion_tokens: int = 0
    headers: Mapping[str, str] | None = None
    stream: bool = False


class _SlotStream:
    """A stream that gives its concurrency slot back exactly once: when it is exhausted,
    raises, is closed, or is collected (also if it was never iterated). The last usage its
    chunks carried (``chunk.usage``) is counted then: a stream's request was recorded at its
    first chunk, before the service said what it used."""

    __slots__ = ("_it", "_give", "_count", "_usage")

    def __init__(self, it: Any, give: Callable[[], None],
                 count: Callable[[int, int], None] | None = None) -> None:
        self._it = it
        self._give: Callable[[], None] | None = give
        self._count = count
        self._usage: Any = None

    def __iter__(self) -> "_SlotStream":
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._it)
        except BaseException:
            self._release()
            raise
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self._usage = usage
        return chunk

    def close(self) -> None:
        try:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
        finally:
            self._release()

    def _release(self) -> None:
        give, self._give = self._give, None
        if give is None:
            return
        try:
            usage, count = self._usage, self._count
            if usage is not None and count is not None:
                count(int(getattr(usage, "prompt_tokens", 0) or 0),
                      int(getattr(usage, "completion_tokens", 0) or 0))
        finally:
            give()

    def __del__(self) -> None:
        if self._give is not None:
            self.close()


@dataclass
class Attempt:
    """Passed to an operation: who is calling, with which key, which try this is, and the
    request's deadline (an instant of the engine's clock, :func:`time.monotonic` unless one
    was injected; None: no deadline) that the operation must not outlive."""

    request_id: str
    key: Secret | None
    number: int
    deadline: float | None


_PRIORITIES = frozenset(int(p) for p in Priority)


def check_priority(priority: Any) -> None:
    """One check for every path (inline, queued, batched): a :class:`Priority` or its value."""
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in _PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(f'Priority.{p.name} ({int(p)})' for p in Priority)}; "
                         f"got {priority!r}")


class _InlineFuture:
    """The outcome of a call that runs in the caller's thread: no locks needed, because only
    that thread touches it. If the call has to wait (a retry), :meth:`Engine._defer` swaps in
    a real :class:`Future` before any other thread can see the call."""

    __slots__ = ("_value", "_exc", "_done")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._exc: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any) -> None:
        self._value, self._done = value, True

    def set_exception(self, exc: BaseException) -> None:
        self._exc, self._done = exc, True

    def result(self, timeout: float | None = None) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._value


class _Slots:
    """Concurrency slots: tokens in a C priority queue (GIL-atomic take and give back, GIL
    released while blocked), cheaper than a Python semaphore on every request."""

    def __init__(self, n: int) -> None:
        self._q = PriorityQueue()
        for i in range(n):
            self._q.put_nowait(i)

    def try_take(self) -> bool:
        try:
            self._q.get_nowait()
            return True
        except Exception:
            return False

    def take(self) -> None:
        self._q.get()

    def give(self) -> None:
        self._q.put_nowait(0)


_ids = itertools.count()
_id_prefix: tuple[int, str] = (-1, "")


def new_request_id() -> str:
    """A request id unique across threads and processes: 16 random hex digits drawn once per
    process (again after a fork), then a counter. Cheaper than ``uuid4``, which reads the
    OS's random source on every call."""
    global _id_prefix
    pid, prefix = _id_prefix
    if pid != os.getpid():
        pid, prefix = os.getpid(), os.urandom(8).hex()
        _id_prefix = (pid, prefix)
    return f"{prefix}{next(_ids):016x}"


@dataclass(eq=False)
class _Call:
    operation: Callable[[Attempt], Any]
    op_name: str
    priority: int
    est_tokens: float
    future: Future
    submitted: float
    deadline: float | None
    id: str = field(default_factory=new_request_id)
    attempts: int = 0
    started: float | None = None
    last_key: str | None = None
    in_attempt: bool = False
    expiry_armed: bool = False
    slot_handed: bool = False  # a stream took the concurrency slot with it
    model: str | None = None  # for usage and cost per model (the caller's, as given)


class _Scheduler:
    """Holds calls that wait (backoff, cooldown, limiter) and re-queues them when due, and
    the deadlines of queued calls (``expire``). One thread, started on first use; no worker
    is held while a call waits."""

    _REQUEUE, _EXPIRE = 0, 1

    def __init__(self, requeue: Callable[[_Call], None], expire: Callable[[_Call], None],
                 clock: Callable[[], float]) -> None:
        self._requeue = requeue
        self._expire = expire
        self._clock = clock
        self._heap: list[tuple[float, int, int, _Call]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._waiting = 0

    def __len__(self) -> int:
        return self._waiting

    def add(self, call: _Call, delay: float) -> None:
        """Re-queue ``call`` in ``delay`` seconds."""
        self._push(self._clock() + delay, self._REQUEUE, call)

    def expire_at(self, call: _Call, when: float) -> None:
        """Call ``expire(call)`` at ``when`` (it decides whether the call is still waiting)."""
        self._push(when, self._EXPIRE, call)

    def _push(self, when: float, kind: int, call: _Call) -> None:
        with self._cv:
            if self._closed:
                raise ClientClosed("backend closed")
            heapq.heappush(self._heap, (when, next(self._seq), kind, call))
            self._waiting += kind == self._REQUEUE
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ipfs-accel-scheduler",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or self._heap[0][0] > self._clock()):
                    timeout = None if not self._heap else self._heap[0][0] - self._clock()
                    self._cv.wait(timeout)
                if self._closed:
                    return
                _, _, kind, call = heapq.heappop(self._heap)
                self._waiting -= kind == self._REQUEUE
            (self._requeue if kind == self._REQUEUE else self._expire)(call)

    def close(self) -> list[_Call]:
        with self._cv:
            self._closed = True
            pending = [c for _, _, kind, c in self._heap if kind == self._REQUEUE]
            self._heap.clear()
            self._waiting = 0
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        return pending


class Engine:
    """Queue, workers, keys, limits, breaker, retries and tracking for one backend endpoint.

    Args:
        name: the backend's name (errors and stats carry it).
        keys: API keys (empty: the service needs none).
        key_strategy: ``"round_robin"`` or ``"least_loaded"``.
        max_concurrency: worker threads, i.e. requests in flight at most.
        queue_size, overflow: the bounded priority queue (``block``/``reject``/``drop_lowest``).
        rpm, tpm: client-side limits per key.
        retry, breaker: policies.
        ratelimit_parser: turns a response's headers into :class:`RateLimitInfo`.
        on_request_end: called with a :class:`RequestRecord` for every finished request.
        key_pool, circuit: replace the in-process key pool / breaker (shared-state seams).
    """

    def __init__(
        self,
        name: str,
        *,
        keys: Sequence[Secret] = (),
        key_strategy: str = "round_robin",
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        overflow: str = "block",
        rpm: float | None = None,
        tpm: float | None = None,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        ratelimit_parser: Callable[[Mapping[str, str]], RateLimitInfo | None] | None = None,
        on_request_end: Callable[[RequestRecord], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        key_pool: KeyPool | None = None,
        circuit: Any = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.name = name
        self.retry = retry or RetryPolicy()
        bp = breaker or BreakerPolicy()
        self._clock = clock
        self._queue = PriorityQueue(queue_size, overflow, on_drop=self._dropped)
        # The seams for shared state (e.g. Redis): pass any object with KeyPool's methods
        # (acquire/release/refund/cooldown/disable/available/sync/stats) and any breaker with
        # CircuitBreaker's (allow/record_success/record_failure/retry_after/state/stats).
        self._keys = key_pool if key_pool is not None else KeyPool(
            keys, strategy=key_strategy, rpm=rpm, tpm=tpm, clock=clock)
        self._breaker = circuit if circuit is not None else CircuitBreaker(
            bp.failure_threshold, bp.recovery_timeout, bp.half_open_max_calls, bp.success_threshold)
        add_listener = getattr(self._breaker, "add_listener", None)
        if add_listener is not None:  # every transition is logged
            add_listener(self._log_breaker)
        self._tracker = Tracker(name, on_request_end)
        self._scheduler = _Scheduler(self._requeue, self._expire, clock)
        self._ratelimit_parser = ratelimit_parser
        self._max_concurrency = max_concurrency
        # One slot per request in flight, taken by workers and by callers that run inline.
        self._slots = _Slots(max_concurrency)
        self._streams_open = 0  # streams handed to callers, each holding a slot
        self._streams_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self._closed = False
        self._rand = random.Random()

    # -- intake ---------------------------------------------------------------------------
    def submit(self, operation: Callable[[Attempt], Any], *, op_name: str = "call",
               priority: int = Priority.NORMAL, est_tokens: float = 0.0,
               deadline: float | None = None, model: str | None = None) -> Future:
        """Queue ``operation``; the returned future resolves to its value or its error.

        ``deadline`` (seconds from now; default ``RetryPolicy.deadline``) bounds the whole
        call: queueing, attempts and the waits between them. ``model`` is recorded with the
        request (its usage is counted per model and key)."""
        if self._closed:
            raise ClientClosed(f"{self.name}: backend is closed")
        check_priority(priority)
        now = self._clock()
        limit = deadline if deadline is not None else self.retry.deadline
        call = _Call(operation, op_name, int(priority), float(est_tokens), Future(), now,
                     None if limit is None else now + limit, model=model)
        self._ensure_workers()
        self._tracker.submit()
        self._arm_expiry(call)
        try:
            self._queue.put(call, call.priority)
        except QueueFull as exc:
            self._finish(call, exc if exc.args else QueueFull(f"{self.name}: queue full"))
        except QueueClosed:
            self._finish(call, ClientClosed(f"{self.name}: backend is closed"))
        return call.future

    def call(self, operation: Callable[[Attempt], Any], *, op_name: str = "call",
             priority: int = Priority.NORMAL, est_tokens: float = 0.0,
             deadline: float | None = None, model: str | None = None) -> Any:
        """Run ``operation`` and wait for its value (raising its error).

        When nothing is queued and a concurrency slot is free, the first attempt runs right in
        the calling thread (no hand-off to a worker, no priority is overtaken); anything that
        has to wait (a retry, a cooldown, a rate limit) goes through the queue as usual.
        """
        if self._closed:
            raise ClientClosed(f"{self.name}: backend is closed")
        check_priority(priority)
        if self._queue.empty() and self._slots.try_take():
            now = self._clock()
            limit = deadline if deadline is not None else self.retry.deadline
            c = _Call(operation, op_name, int(priority), float(est_tokens),  # type: ignore[arg-type]
                      _InlineFuture(), now, None if limit is None else now + limit, model=model)
            self._tracker.submit()
            try:
                self._run(c)
            except BaseException as exc:
                if not c.future.done():
                    self._finish(c, exc)
            finally:
                if not c.slot_handed:
                    self._slots.give()
            if not c.future.done():
                self._ensure_workers()  # it was deferred: a worker will pick it up
            return c.future.result()
        return self.submit(operation, op_name=op_name, priority=priority, est_tokens=est_tokens,
                           deadline=deadline, model=model).result()

    def _ensure_workers(self) -> None:
        if self._workers:
            return
        with self._start_lock:
            if self._workers or self._closed:
                return
            for i in range(self._max_concurrency):
                t = threading.Thread(target=self._work, name=f"ipfs-accel-{self.name}-{i}",
                                     daemon=True)
                t.start()
                self._workers.append(t)

    def _dropped(self, call: _Call) -> None:
        self._finish(call, QueueFull(f"{self.name}: dropped for a higher-priority request"))

    def _requeue(self, call: _Call) -> None:
        if self._closed:
            self._finish(call, ClientClosed(f"{self.name}: backend closed while waiting"))
            return
        try:
            self._queue.put(call, call.priority, block=False)
        except QueueFull:
            self._defer(call, 0.01)  # full of new work: try again shortly, never lose it
        except QueueClosed:
            self._finish(call, ClientClosed(f"{self.name}: backend closed while waiting"))

    def _defer(self, call: _Call, delay: float) -> None:
        if isinstance(call.future, _InlineFuture):  # leaving the caller's thread: make it real
            call.future = Future()
        try:
            self._arm_expiry(call)
            self._scheduler.add(call, max(MIN_RETRY_DELAY, delay))
        except ClientClosed as exc:
            self._finish(call, exc)

    def _arm_expiry(self, call: _Call) -> None:
        """A call with a deadline ends at its deadline, even while it waits in the queue."""
        if call.deadline is not None and not call.expiry_armed:
            call.expiry_armed = True
            self._scheduler.expire_at(call, call.deadline)

    def _stream_ended(self) -> None:
        with self._streams_lock:
            self._streams_open -= 1
        self._slots.give()

    def _expire(self, call: _Call) -> None:
        # An attempt in progress is bounded by the operation itself (the transport cuts it
        # at the deadline); a call between attempts or in the queue ends here.
        if not call.in_attempt and not call.future.done():
            log.debug("%s %s %s: deadline passed while waiting", self.name, call.op_name, call.id,
                      extra=self._log_fields(call, "give_up", error="APITimeoutError"))
            self._finish(call, APITimeoutError(
                f"{self.name}: deadline passed after {call.attempts} attempt(s) while waiting",
                backend=self.name))

    # -- the worker -----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            try:
                call = self._queue.get()
            except QueueClosed:
                return
            if self._closed:
                self._finish(call, ClientClosed(f"{self.name}: backend closed before sending"))
                continue
            self._slots.take()
            try:
                self._run(call)
            except BaseException as exc:  # never let a worker die with a request in hand
                if not call.future.done():
                    self._finish(call, exc)
            finally:
                if not call.slot_handed:
                    self._slots.give()

    def _run(self, call: _Call) -> None:
        if call.future.done():
            return
        now = self._clock()
        if call.deadline is not None and now >= call.deadline:
            self._finish(call, APITimeoutError(f"{self.name}: deadline exceeded before an answer",
                                               backend=self.name))
            return
        try:
            key, wait = self._keys.acquire(call.est_tokens)
        except AuthenticationError as exc:
            exc.backend = self.name
            log.debug("%s %s %s: giving up: every key is disabled", self.name, call.op_name,
                      call.id, extra=self._log_fields(call, "give_up", exc))
            self._finish(call, exc)
            return
        if key is None:
            log.debug("%s %s %s: no key or rate budget now; waiting %.3fs", self.name,
                      call.op_name, call.id, wait)
            self._tracker.limiter_wait(wait)
            if call.deadline is not None and now + wait > call.deadline:
                self._finish(call, APITimeoutError(
                    f"{self.name}: no key or rate budget before the deadline", backend=self.name))
            else:
                self._defer(call, wait)
            return
        if not self._breaker.allow():
            self._keys.refund(key, call.est_tokens)
            ra = self._breaker.retry_after()
            log.debug("%s %s %s: circuit open, failing fast (retry in %.3fs)", self.name,
                      call.op_name, call.id, ra, extra=self._log_fields(
                          call, "give_up", error="CircuitOpenError", delay=ra))
            self._finish(call, CircuitOpenError(
                f"{self.name}: circuit open, retry in {ra:.1f}s", retry_after=ra, backend=self.name))
            return
        call.attempts += 1
        call.last_key = key.label
        if call.started is None:
            call.started = now
        attempt = Attempt(call.id, key.secret, call.attempts, call.deadline)
        call.in_attempt = True
        try:
            result = call.operation(attempt)
        except AcceleratorError as exc:
            call.in_attempt = False
            self._failed(call, key, exc)
            return
        except BaseException:
            call.in_attempt = False
            self._breaker.record_success()  # a bug in an operation is not the endpoint's fault
            self._keys.release(key, ok=False)
            raise
        call.in_attempt = False
        self._breaker.record_success()
        if isinstance(result, OpResult):
            used = result.prompt_tokens + result.completion_tokens
            self._keys.release(key, ok=True, est_tokens=call.est_tokens, used_tokens=used)
            self._learn(key, result.headers)
            value = result.value
            if result.stream:  # the slot leaves with the stream
                with self._streams_lock:
                    self._streams_open += 1
                value = _SlotStream(value, self._stream_ended,
                                    lambda p, c, call=call: self._tracker.add_usage(
                                        call.model, call.last_key, p, c))
                call.slot_handed = True
            self._finish(call, None, value, result.prompt_tokens, result.completion_tokens)
        else:
            self._keys.release(key, ok=True, est_tokens=call.est_tokens,
                               used_tokens=call.est_tokens)
            self._finish(call, None, result)

    def _learn(self, key: KeyState, headers: Mapping[str, str] | None) -> None:
        if headers and self._ratelimit_parser is not None:
            info = self._ratelimit_parser(headers)
            if info is not None:
                self._keys.sync(key, info)

    def _failed(self, call: _Call, key: KeyState, exc: AcceleratorError) -> None:
        if getattr(exc, "backend", None) is None and hasattr(exc, "backend"):
            exc.backend = self.name  # type: ignore[attr-defined]
        if counts_against_breaker(exc):
            self._breaker.record_failure()
        else:
            self._breaker.record_success()
        self._keys.release(key, ok=False, est_tokens=call.est_tokens, used_tokens=0)
        headers = getattr(exc, "headers", None) or {}
        self._learn(key, headers)
        hint = server_delay(headers) if headers else None
        if hint is None:
            hint = getattr(exc, "retry_after", None)  # a hint from the body, set by the adapter
        extra_try = False
        if isinstance(exc, APIStatusError):
            if exc.status == 429:
                self._tracker.saw_429()
                cool = hint if hint is not None else self._backoff(call)
                log.debug("%s %s %s: key %s cools down for %.3fs after a 429", self.name,
                          call.op_name, call.id, key.label, cool, extra=self._log_fields(
                              call, "cooldown", exc, key=key.label, delay=cool))
                self._keys.cooldown(key, cool)
            elif isinstance(exc, (AuthenticationError, PermissionDeniedError)) \
                    and getattr(key, "secret", None) is not None:
                # a key the service refused; without keys (a keyless server, a proxy's 403)
                # there is no key to blame, and the next request must not be refused for it
                log.debug("%s %s %s: key %s disabled after a %d", self.name, call.op_name,
                          call.id, key.label, exc.status, extra=self._log_fields(
                              call, "key_disabled", exc, key=key.label))
                self._keys.disable(key, f"{exc.status} {exc.message[:120]}")
                extra_try = self._keys.available() > 0  # another key may work
        retryable = extra_try or is_retryable(exc)
        limit = getattr(exc, "retry_limit", None)
        if limit is not None:  # the service's own budget for this failure decides
            retryable = call.attempts <= limit
        if not retryable or call.attempts > self.retry.max_retries + (1 if extra_try else 0):
            log.debug("%s %s %s: giving up after %d attempt(s): %s", self.name, call.op_name,
                      call.id, call.attempts, type(exc).__name__,
                      extra=self._log_fields(call, "give_up", exc, key=key.label))
            self._finish(call, exc)
            return
        if hint is not None and hint > self.retry.max_server_delay:
            log.debug("%s %s %s: server asks for %.1fs, more than max_server_delay",
                      self.name, call.op_name, call.id, hint,
                      extra=self._log_fields(call, "give_up", exc, key=key.label, delay=hint))
            self._finish(call, exc)
            return
        delay = 0.0 if extra_try else (hint if hint is not None else self._backoff(call))
        if call.deadline is not None and self._clock() + delay >= call.deadline:
            log.debug("%s %s %s: no time left before the deadline", self.name, call.op_name,
                      call.id, extra=self._log_fields(call, "give_up", exc, key=key.label,
                                                      delay=delay))
            self._finish(call, exc)
            return
        log.debug("%s %s %s: attempt %d on %s failed (%s); retry in %.3fs (%s)", self.name,
                  call.op_name, call.id, call.attempts, key.label, type(exc).__name__, delay,
                  "server hint" if hint is not None else "backoff",
                  extra=self._log_fields(call, "retry", exc, key=key.label, delay=delay))
        self._tracker.retry()
        self._defer(call, delay)

    # -- structured logs: ``extra=`` fields of every decision (labels only, never a key) ----
    def _log_fields(self, call: _Call, event: str, exc: BaseException | None = None,
                    **fields: Any) -> dict[str, Any]:
        out = {"event": event, "request_id": call.id, "backend": self.name,
               "operation": call.op_name, "key": call.last_key, "attempt": call.attempts,
               "delay": None, "error": None if exc is None else type(exc).__name__,
               "status": getattr(exc, "status", None)}
        out.update(fields)
        return out

    def _log_breaker(self, old: Any, new: Any) -> None:
        old, new = getattr(old, "name", str(old)), getattr(new, "name", str(new))
        log.debug("%s: circuit breaker %s -> %s", self.name, old, new,
                  extra={"event": "breaker", "backend": self.name, "old_state": old,
                         "new_state": new})

    def _backoff(self, call: _Call) -> float:
        return self.retry.backoff(max(1, call.attempts), self._rand.random())

    def _finish(self, call: _Call, exc: BaseException | None, value: Any = None,
                prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        if call.future.done():
            return
        end = self._clock()
        started = call.started if call.started is not None else end
        record = RequestRecord(
            request_id=call.id, backend=self.name, operation=call.op_name, ok=exc is None,
            error=None if exc is None else type(exc).__name__, attempts=call.attempts,
            latency=end - started, queue_wait=started - call.submitted,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, key=call.last_key,
            model=call.model,
        )
        try:
            if exc is None:
                call.future.set_result(value)
            else:
                if isinstance(exc, AcceleratorError) and getattr(exc, "request_id", "x") is None:
                    exc.request_id = call.id  # type: ignore[attr-defined]
                call.future.set_exception(exc)
        except Exception:  # cancelled by the caller meanwhile
            return
        self._tracker.finish(record)

    # -- lifecycle and stats --------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Stop intake, fail what is still waiting with ``ClientClosed``, let in-flight finish."""
        if self._closed:
            return
        self._closed = True
        for call in self._scheduler.close():
            self._finish(call, ClientClosed(f"{self.name}: backend closed while waiting"))
        self._queue.close()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        while True:  # anything a worker did not pick up
            try:
                call = self._queue.get_nowait()
            except (QueueClosed, Exception):
                break
            self._finish(call, ClientClosed(f"{self.name}: backend closed before sending"))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def keys(self) -> KeyPool:
        return self._keys

    @property
    def max_concurrency(self) -> int:
        """Requests in flight at most (streams included)."""
        return self._max_concurrency

    @property
    def outstanding(self) -> int:
        """Requests submitted and not finished yet: queued, running or waiting to retry."""
        t = self._tracker
        return t.submitted - t.succeeded - t.failed

    def ready_in(self, est_tokens: float = 0.0) -> float:
        """Seconds until a request could start (0: now): the breaker's open time left, or
        until a key is out of its cooldown and its limits have room (``inf``: every key is
        disabled). Nothing is taken: this is for a caller choosing where to send (a
        Router)."""
        wait = float(self._breaker.retry_after())
        ready = getattr(self._keys, "ready_in", None)
        if ready is not None:
            wait = max(wait, float(ready(est_tokens)))
        return wait

    @property
    def retried(self) -> int:
        """Retries so far (a cheap counter, as :attr:`rate_limited`)."""
        return self._tracker.retried

    @property
    def rate_limited(self) -> int:
        """429 answers seen so far (retried or not): a cheap signal for callers that adapt
        how much they send, such as the embedding pipeline."""
        return self._tracker.rate_limited

    def stats(self) -> dict[str, Any]:
        snap = self._tracker.snapshot()
        keys = self._keys.stats()
        snap["in_flight"] = sum(k["in_flight"] for k in keys.values())
        q = self._queue.stats()
        snap.update({
            "backend": self.name,
            "queue_depth": q["depth"],
            "queue": q,
            "waiting": len(self._scheduler),
            "streams_open": self._streams_open,
            "breaker": self._breaker.stats(),
            "keys": keys,
        })
        return snap
