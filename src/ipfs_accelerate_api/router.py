"""One object over several deployments: it picks one, falls back when one is down, and
shows what happened.

    router = ia.Router([
        {"group": "fast-chat", "backend": "openai", "model": "gpt-4o-mini", "options": {...}},
        {"group": "fast-chat", "backend": "groq", "model": "llama-3.1-8b-instant", "weight": 2},
        {"group": "claude-chat", "backend": "claude", "model": "claude-sonnet-4-5"},
    ], strategy="latency_based", fallbacks={"fast-chat": ["claude-chat"]})
    router.chat(messages, model="fast-chat")

A deployment is skipped while its breaker is open, while every one of its keys is cooling
down or disabled, or while its limits have no room (:meth:`Engine.ready_in`). A call tries
the group's available deployments (in the strategy's order), then its fallback groups in
turn, at most ``max_hops`` times after the first; when none is available it waits up to
``wait_for_recovery`` seconds for the first to come back, or raises
:class:`NoDeploymentAvailable` with the earliest ``retry_after``.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from ._enums import Priority
from .engine import new_request_id
from .engine.tracking import RequestRecord
from .errors import (
    APIConnectionError,
    CircuitOpenError,
    ConfigurationError,
    ContentFilteredError,
    ContextWindowExceededError,
    NoDeploymentAvailable,
    RateLimitError,
    ServerError,
)

__all__ = ["STRATEGIES", "Router"]

STRATEGIES = ("simple_shuffle", "least_busy", "usage_based", "latency_based", "cost_based",
              "order")
MAX_HOPS = 5
#: What moves a call on to another deployment (after that deployment's own retries).
FALLBACK_ERRORS = (CircuitOpenError, APIConnectionError, ServerError, RateLimitError)
#: latency_based: the weight of a new sample, and how much a deployment's estimate shrinks
#: each time another one is chosen (so a deployment that was slow is tried again after a
#: bounded number of calls, and wins again if it has become fast).
LATENCY_ALPHA = 0.3
LATENCY_FORGET = 0.8
_DEPLOYMENT_KEYS = {"group", "backend", "model", "options", "weight", "rpm", "tpm", "cost",
                    "context_window", "id"}


@dataclass
class _Deployment:
    id: str
    group: str
    backend_name: str
    model: str
    weight: float
    cost: tuple[float, float] | None
    context_window: int | None
    backend: Any
    order: int
    per_token: float | None = None  # latency_based: seconds per output token, decayed
    calls: int = 0
    failures: int = 0

    def price(self) -> float:
        return math.inf if self.cost is None else self.cost[0] + self.cost[1]


def _headroom(d: _Deployment) -> float:
    """The share of its limits a deployment has left (a key pool without the measure, such
    as a shared one, counts as full)."""
    measure = getattr(d.backend.engine.keys, "headroom", None)
    return 1.0 if measure is None else float(measure())


def _table_price(model: str) -> tuple[float, float] | None:
    """The bundled table's price of ``model`` (cost_based, when a deployment names none)."""
    from .pricing import load_prices, price_for

    price = price_for(model, load_prices())
    return None if price is None else (float(price["input"]), float(price["output"]))


def _cost(value: Any, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not {"input", "output"} <= set(value):
        raise ConfigurationError(f"{where}: cost must be {{'input': ..., 'output': ...}} "
                                 "(per million tokens)")
    try:
        return float(value["input"]), float(value["output"])
    except (TypeError, ValueError):
        raise ConfigurationError(f"{where}: cost values must be numbers") from None


def _chains(groups: set[str], fallbacks: Mapping[str, Sequence[str]] | None,
            what: str) -> dict[str, list[str]]:
    """Each group's fallback groups, followed transitively, in order; a loop is refused."""
    table = dict(fallbacks or {})
    for g, targets in table.items():
        if g not in groups:
            raise ConfigurationError(f"{what}: {g!r} is not a deployment group")
        if isinstance(targets, str) or not all(t in groups for t in targets):
            raise ConfigurationError(f"{what}[{g!r}] must be a list of deployment groups")

    def walk(g: str, path: list[str]) -> list[str]:
        out: list[str] = []
        for t in table.get(g, ()):
            if t in path or t == g:
                raise ConfigurationError(f"{what}: a loop ({' -> '.join([*path, g, t])})")
            if t not in out:
                out.append(t)
            out += [x for x in walk(t, [*path, g]) if x not in out]
        return out

    return {g: walk(g, []) for g in groups}


class Router:
    """Load balancing and fallbacks over deployments of backends; the same surface as a
    backend (``chat``, ``stream_chat``, ``complete``, ``embed``, ``submit``, the async forms,
    ``stats()``, ``close()``, a context manager), with the group as the ``model``."""

    def __init__(self, deployments: Sequence[Mapping[str, Any]], *,
                 strategy: str = "simple_shuffle",
                 fallbacks: Mapping[str, Sequence[str]] | None = None,
                 context_window_fallbacks: Mapping[str, Sequence[str]] | None = None,
                 content_filter_fallbacks: Mapping[str, Sequence[str]] | None = None,
                 wait_for_recovery: float = 0.0, coordination: Any = None,
                 max_hops: int = MAX_HOPS, seed: int | None = None, name: str = "router",
                 on_request_end: Callable[[RequestRecord], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from .backends import backend as make

        if strategy not in STRATEGIES:
            raise ConfigurationError(f"strategy must be one of {', '.join(STRATEGIES)}; "
                                     f"got {strategy!r}")
        if not isinstance(wait_for_recovery, (int, float)) or isinstance(wait_for_recovery, bool) \
                or not math.isfinite(wait_for_recovery) or wait_for_recovery < 0:
            raise ConfigurationError("wait_for_recovery must be a finite number of seconds >= 0")
        if type(max_hops) is not int or not 0 <= max_hops <= MAX_HOPS:
            raise ConfigurationError(f"max_hops must be an integer from 0 to {MAX_HOPS}")
        if not deployments:
            raise ConfigurationError("a Router needs at least one deployment")
        self.name = name  # the ``router`` label of its metrics
        self.strategy = strategy
        self.wait_for_recovery = float(wait_for_recovery)
        self.max_hops = max_hops
        self._rng = random.Random(seed)
        self._clock, self._sleep = clock, sleep
        self._hook = on_request_end
        self._lock = threading.Lock()
        self._deployments: list[_Deployment] = []
        self._groups: dict[str, list[_Deployment]] = {}
        try:
            for i, spec in enumerate(deployments):
                d = self._build(i, spec, make, coordination)
                self._deployments.append(d)
                self._groups.setdefault(d.group, []).append(d)
        except BaseException:
            self.close()
            raise
        ids = [d.id for d in self._deployments]
        if len(set(ids)) != len(ids):
            self.close()
            raise ConfigurationError("deployment ids must be unique")
        groups = set(self._groups)
        try:
            self._fallbacks = _chains(groups, fallbacks, "fallbacks")
            self._context = _chains(groups, context_window_fallbacks, "context_window_fallbacks")
            self._filter = _chains(groups, content_filter_fallbacks, "content_filter_fallbacks")
        except ConfigurationError:
            self.close()
            raise
        self._calls = self._fallback_count = self._no_deployment = 0
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def _build(self, i: int, spec: Mapping[str, Any], make: Any, coordination: Any) -> _Deployment:
        where = f"deployments[{i}]"
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{where} must be a dict")
        unknown = set(spec) - _DEPLOYMENT_KEYS
        if unknown:
            raise ConfigurationError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        for key in ("group", "backend", "model"):
            if not isinstance(spec.get(key), str) or not spec[key]:
                raise ConfigurationError(f"{where}: {key!r} is required (a non-empty string)")
        weight = spec.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConfigurationError(f"{where}: weight must be a positive number")
        options = dict(spec.get("options") or {})
        for k in ("rpm", "tpm"):
            if spec.get(k) is not None:
                options[k] = spec[k]
        if coordination is not None:
            options.setdefault("coordination", coordination)
        cost = _cost(spec.get("cost"), where)
        if cost is not None and "prices" not in options:  # stats()["cost"] at this price
            options["prices"] = {spec["model"]: {"input": cost[0], "output": cost[1]}}
        window = spec.get("context_window")
        if window is not None and (type(window) is not int or window <= 0):
            raise ConfigurationError(f"{where}: context_window must be a positive integer")
        backend = make(spec["backend"], **options)
        return _Deployment(
            id=str(spec.get("id") or f"{spec['group']}/{spec['backend']}/{spec['model']}#{i}"),
            group=spec["group"], backend_name=spec["backend"], model=spec["model"],
            weight=float(weight), cost=cost or _table_price(spec["model"]), context_window=window,
            backend=backend, order=i)

    # -- choosing ---------------------------------------------------------------------------
    def _ranked(self, candidates: list[_Deployment]) -> list[_Deployment]:
        """``candidates`` (all available now) in the order the strategy would try them."""
        s = self.strategy
        if len(candidates) <= 1 or s == "order":
            return candidates
        if s == "simple_shuffle":  # weighted random, without replacement
            pool, out = list(candidates), []
            while pool:
                pick = self._rng.choices(pool, weights=[d.weight for d in pool])[0]
                pool.remove(pick)
                out.append(pick)
            return out
        if s == "least_busy":
            return sorted(candidates, key=lambda d: (d.backend.engine.outstanding, d.order))
        if s == "usage_based":
            return sorted(candidates, key=lambda d: (-_headroom(d), d.order))
        if s == "latency_based":  # never sampled first, then the fastest per token
            return sorted(candidates, key=lambda d: (d.per_token is not None,
                                                     d.per_token or 0.0, d.order))
        return sorted(candidates, key=lambda d: (d.price(), d.order))  # cost_based

    def _available(self, groups: list[str], tried: set[str],
                   est_tokens: float) -> tuple[list[_Deployment], float]:
        """The untried deployments of ``groups`` that could take a request now (each group's
        in the strategy's order, the groups in turn), and the seconds until the first of the
        others could (``inf``: none)."""
        ready: list[_Deployment] = []
        soonest = math.inf
        for g in groups:
            now: list[_Deployment] = []
            for d in self._groups[g]:
                if d.id in tried:
                    continue
                wait = d.backend.engine.ready_in(est_tokens)
                if wait <= 0:
                    now.append(d)
                else:
                    soonest = min(soonest, wait)
            ready += self._ranked(now)
        return ready, soonest

    def _learn(self, chosen: _Deployment, seconds: float, result: Any) -> None:
        if self.strategy != "latency_based":
            return
        usage = getattr(result, "usage", None)
        tokens = max(1, getattr(usage, "completion_tokens", 0) or 0)
        sample = seconds / tokens
        with self._lock:
            chosen.per_token = sample if chosen.per_token is None else \
                LATENCY_ALPHA * sample + (1 - LATENCY_ALPHA) * chosen.per_token
            for d in self._groups[chosen.group]:
                if d is not chosen and d.per_token is not None:
                    d.per_token *= LATENCY_FORGET

    # -- calling ------------------------------------------------------------------------------
    def _group(self, model: Any) -> str:
        if not isinstance(model, str) or model not in self._groups:
            known = ", ".join(sorted(self._groups))
            raise ValueError(f"model must name a deployment group ({known}); got {model!r}")
        return model

    def _route(self, operation: str, group: str, call: Callable[[_Deployment], Any],
               est_tokens: float = 0.0) -> Any:
        """``call(deployment)`` on the group's deployments, falling back as configured."""
        if self._closed:
            from .errors import ClientClosed

            raise ClientClosed("router closed")
        start = self._clock()
        tried: list[str] = []
        chain = [group, *self._fallbacks[group]]
        budget_end = start + self.wait_for_recovery
        last_exc: BaseException | None = None
        with self._lock:
            self._calls += 1
        while True:
            ready, soonest = self._available(chain, set(tried), est_tokens)
            if not ready:
                untried = any(d.id not in tried for g in chain for d in self._groups[g])
                wait = soonest
                if untried and wait < math.inf and self._clock() + wait <= budget_end:
                    self._sleep(wait)
                    continue
                if last_exc is not None and not untried:
                    self._record(operation, group, start, tried, last_exc)
                    raise last_exc
                with self._lock:
                    self._no_deployment += 1
                exc = NoDeploymentAvailable(
                    f"router: no deployment of {group!r} (or its fallbacks) can take a "
                    f"request now; the first is back in {wait:.3g}s", retry_after=wait,
                    group=group)
                if last_exc is not None:
                    exc.__cause__ = last_exc
                self._record(operation, group, start, tried, exc)
                raise exc
            d = ready[0]
            if tried:
                with self._lock:
                    self._fallback_count += 1
            tried.append(d.id)
            t0 = self._clock()
            try:
                result = call(d)
            except ContextWindowExceededError as exc:
                last_exc = exc
                chain = list(self._context[d.group])
                if not chain:
                    self._record(operation, group, start, tried, exc)
                    raise
            except ContentFilteredError as exc:
                last_exc = exc
                chain = list(self._filter[d.group])
                if not chain:
                    self._record(operation, group, start, tried, exc)
                    raise
            except FALLBACK_ERRORS as exc:
                last_exc = exc
                with self._lock:
                    d.failures += 1
            except BaseException as exc:
                self._record(operation, group, start, tried, exc)
                raise
            else:
                with self._lock:
                    d.calls += 1
                self._learn(d, self._clock() - t0, result)
                self._record(operation, group, start, tried, None, result)
                return result
            if len(tried) > self.max_hops:
                self._record(operation, group, start, tried, last_exc)
                raise last_exc

    def _record(self, operation: str, group: str, start: float, tried: list[str],
                exc: BaseException | None, result: Any = None) -> None:
        if self._hook is None:
            return
        usage = getattr(result, "usage", None)
        record = RequestRecord(
            request_id=getattr(result, "request_id", None) or new_request_id(),
            backend="router", operation=operation, ok=exc is None,
            error=None if exc is None else type(exc).__name__, attempts=len(tried),
            latency=self._clock() - start, queue_wait=0.0,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0, key=None,
            model=group, deployments_tried=list(tried))
        try:
            self._hook(record)
        except Exception:  # a broken hook must not lose the call
            pass

    # -- the backend surface ------------------------------------------------------------------
    def chat(self, messages: list[dict[str, Any]], *, model: str,
             priority: int = Priority.NORMAL, **params: Any) -> Any:
        group = self._group(model)
        return self._route("chat", group, lambda d: d.backend.chat(
            messages, model=d.model, priority=priority, **params))

    def complete(self, prompt: str, *, model: str, priority: int = Priority.NORMAL,
                 **params: Any) -> Any:
        group = self._group(model)
        return self._route("complete", group, lambda d: d.backend.complete(
            prompt, model=d.model, priority=priority, **params))

    def embed(self, texts: Any, *, model: str, priority: int = Priority.NORMAL,
              **params: Any) -> Any:
        group = self._group(model)
        return self._route("embed", group, lambda d: d.backend.embed(
            texts, model=d.model, priority=priority, **params))

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str,
                    priority: int = Priority.NORMAL, **params: Any) -> Iterator[Any]:
        """A stream falls back only before its first chunk: once text has arrived, an error
        is the caller's (with the text so far in ``partial_text``)."""
        group = self._group(model)

        def opened(d: _Deployment) -> tuple[Any, Iterator[Any]]:
            it = iter(d.backend.stream_chat(messages, model=d.model, priority=priority, **params))
            try:
                first = next(it)
            except StopIteration:
                return None, iter(())
            except BaseException:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
                raise
            return first, it

        first, rest = self._route("stream_chat", group, opened)

        def chunks() -> Iterator[Any]:
            if first is not None:
                yield first
            yield from rest

        return chunks()

    def submit(self, method: str, *args: Any, **kwargs: Any) -> Future:
        """Start ``method`` (``chat``, ``complete``, ``embed``) without waiting."""
        if method not in ("chat", "complete", "embed"):
            from .errors import UnsupportedOperation

            raise UnsupportedOperation(f"router has no operation {method!r} to submit")
        self._group(kwargs.get("model"))
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(32, thread_name_prefix="ipfs-accel-router")
        return self._executor.submit(getattr(self, method), *args, **kwargs)

    async def achat(self, messages: list[dict[str, Any]], **kw: Any) -> Any:
        return await asyncio.wrap_future(self.submit("chat", messages, **kw))

    async def acomplete(self, prompt: str, **kw: Any) -> Any:
        return await asyncio.wrap_future(self.submit("complete", prompt, **kw))

    async def aembed(self, texts: Any, **kw: Any) -> Any:
        return await asyncio.wrap_future(self.submit("embed", texts, **kw))

    # -- what happened ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """``{"router": {calls, fallbacks, no_deployment, strategy}, "deployments": {id:
        {group, backend, model, calls, failures, per_token, **that backend's stats()}}}``."""
        with self._lock:
            router = {"calls": self._calls, "fallbacks": self._fallback_count,
                      "no_deployment": self._no_deployment, "strategy": self.strategy}
        deployments = {}
        for d in self._deployments:
            deployments[d.id] = {"group": d.group, "backend": d.backend_name, "model": d.model,
                                 "routed": d.calls, "route_failures": d.failures,
                                 "per_token": d.per_token, **d.backend.stats()}
        return {"router": router, "deployments": deployments}

    def close(self) -> None:
        self._closed = True
        if getattr(self, "_executor", None) is not None:
            self._executor.shutdown(wait=False)  # type: ignore[union-attr]
        for d in getattr(self, "_deployments", []):
            d.backend.close()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Router {self.strategy} groups={sorted(self._groups)} "
                f"deployments={len(self._deployments)}>")
