"""Prometheus metrics for backends and routers, built from ``stats()`` at scrape time.

    from prometheus_client import REGISTRY
    from ipfs_accelerate_api.metrics import Collector, serve

    REGISTRY.register(Collector(openai_backend, router))   # into an existing registry
    server = serve(9464, openai_backend, router)           # or a server of its own

``prometheus_client`` is an optional extra (``pip install 'ipfs-accelerate-api[metrics]'``);
nothing else in the package imports it. Every series carries ``backend`` and ``deployment``
(a Router's deployment id; empty for a backend given directly); usage series add ``model``
and ``key`` (the key's masked label, such as ``openai-key-1``, never the key). Metric names
and what each counts: see :data:`METRICS`.

Cardinality stays bounded: keys and deployments are configured, error labels are exception
class names, and a model is a label only when it is configured (the price table's, the
``models=`` given, a Router deployment's); any other model name a caller sent is counted
under ``model="other"`` (a dated name such as ``gpt-4o-mini-2024-07-18`` under the table's
undated one). No request id ever becomes a label.

Histograms: the engine keeps log-spaced buckets 5% wide; they are folded into the fixed
``buckets=`` bounds here, so a bucket's count can be short by the observations within 5%
below its bound. ``_count`` and ``_sum`` are exact (``_sum`` up to float rounding).

Time to first token: a stream operation's first chunk is read inside the engine, so its
recorded latency is the time from sending to the first chunk; ``stats()`` keeps those in
``time_to_first_token``, exported with ``model="-"``. Pass :meth:`Collector.observe` as a
backend's ``on_request_end=`` to have them per model instead (that backend's ``"-"`` series
is then left out, so nothing is counted twice).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ._enums import BreakerState
from .engine.tracking import Histogram, RequestRecord
from .errors import ConfigurationError
from .pricing import Price, cost_table, load_prices, priced_name

__all__ = ["DEFAULT_BUCKETS", "METRICS", "OTHER_MODEL", "ROUTER_FIELDS", "Collector",
           "MetricsServer", "serve"]

log = logging.getLogger("ipfs_accelerate_api.metrics")

#: Histogram bounds in seconds (``+Inf`` is added).
DEFAULT_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: The model label of every model name that was not configured.
OTHER_MODEL = "other"
PREFIX = "ipfs_accel"
_BASE = ("backend", "deployment")
_USAGE = (*_BASE, "model", "key")
_KEY = (*_BASE, "key")

#: name (without the prefix) -> (type, extra labels, help). Counters get ``_total``.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "requests_submitted": ("counter", _BASE, "Requests submitted (stats()['submitted'])."),
    "requests": ("counter", (*_BASE, "outcome"),
                 "Requests finished, by outcome: succeeded or failed."),
    "request_errors": ("counter", (*_BASE, "error"),
                       "Failed requests by error class (stats()['errors'])."),
    "retries": ("counter", _BASE, "Attempts retried (stats()['retried'])."),
    "rate_limited": ("counter", _BASE,
                     "429 answers received, retried or not (stats()['rate_limited'])."),
    "limiter_waits": ("counter", _BASE, "Times a request waited for a key or rate budget."),
    "limiter_wait_seconds": ("counter", _BASE, "Seconds of those waits (as scheduled)."),
    "model_requests": ("counter", (*_USAGE, "outcome"),
                       "Requests finished per model and key, by outcome (stats()['usage'])."),
    "tokens": ("counter", (*_USAGE, "type"),
               "Tokens per model and key; type: input (prompt) or output (completion)."),
    "cost_usd": ("counter", _USAGE, "Cost in USD of those tokens at the price table."),
    "unpriced_model": ("gauge", (*_BASE, "model"),
                       "1 for a model that used tokens and has no price (left out of cost)."),
    "request_latency_seconds": ("histogram", _BASE, (
        "Time from the first attempt to the answer, of succeeded requests (to the first chunk "
        "for a stream).")),
    "queue_wait_seconds": ("histogram", _BASE, (
        "Time from submission to the first attempt, of every finished request.")),
    "time_to_first_token_seconds": ("histogram", (*_BASE, "model"), (
        "Time from the first attempt to a stream's first chunk (per model with "
        "on_request_end=collector.observe, else model=\"-\").")),
    "in_flight": ("gauge", _BASE, "Requests on the wire now (streams included)."),
    "waiting": ("gauge", _BASE, "Requests waiting to retry or for a key or rate budget."),
    "streams_open": ("gauge", _BASE, "Streams handed to callers and not finished."),
    "queue_depth": ("gauge", (*_BASE, "priority"), "Requests queued, per priority."),
    "queue_capacity": ("gauge", _BASE, "The queue's bound (0: unbounded)."),
    "queue_high_water": ("gauge", _BASE, "The most requests ever queued at once."),
    "queue_enqueued": ("counter", _BASE, "Requests put in the queue (retries included)."),
    "queue_dequeued": ("counter", _BASE, "Requests taken from the queue."),
    "queue_rejected": ("counter", _BASE, "Requests refused by a full queue."),
    "queue_dropped": ("counter", _BASE, "Requests dropped for higher-priority ones."),
    "breaker_state": ("gauge", (*_BASE, "state"), (
        "The breaker's state as a number (0 closed, 1 open, 2 half_open) and as the state "
        "label.")),
    "breaker_trips": ("counter", _BASE, "Times the breaker opened."),
    "breaker_failures": ("counter", _BASE, "Failures reported to the breaker."),
    "breaker_successes": ("counter", _BASE, "Successes reported to the breaker."),
    "breaker_rejected": ("counter", _BASE, "Calls the breaker refused."),
    "breaker_consecutive_failures": ("gauge", _BASE, "Failures in a row now."),
    "keys": ("gauge", (*_BASE, "status"),
             "API keys by status: healthy, cooling (after a 429) or disabled (401/403)."),
    "key_requests": ("counter", _KEY, "Requests sent with the key."),
    "key_succeeded": ("counter", _KEY, "Requests on the key that succeeded."),
    "key_errors": ("counter", _KEY, "Requests on the key that failed."),
    "key_tokens": ("counter", _KEY, "Tokens used on the key."),
    "key_cooldowns": ("counter", _KEY, "Times the key was put to cool down."),
    "key_limiter_waits": ("counter", _KEY, "Times the key's own limits made a request wait."),
    "key_in_flight": ("gauge", _KEY, "Requests on the key now."),
    "key_cooldown_seconds": ("gauge", _KEY, "Seconds left of the key's cooldown (0: none)."),
    "key_disabled": ("gauge", _KEY, "1 when the key has been disabled."),
    "deployment": ("info", ("deployment", "group", "backend", "model"),
                   "A Router deployment: its group, backend and model."),
}
#: ``stats()["router"]`` fields that are exported as ``ipfs_accel_router_<field>_total``
#: (every other numeric field is exported the same way, as a counter).
ROUTER_FIELDS = {"calls": "Calls the router took.",
                 "fallbacks": "Fallbacks to another group's deployment.",
                 "no_deployment": "Calls that found no deployment available."}


def _prometheus() -> Any:
    """``prometheus_client``, or a ConfigurationError naming the extra to install."""
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError as exc:
        raise ConfigurationError(
            "ipfs_accelerate_api.metrics needs prometheus_client: "
            "pip install 'ipfs-accelerate-api[metrics]'") from exc
    return prometheus_client


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _fold(pairs: Sequence[tuple[float, int]] | None, count: int,
          bounds: Sequence[float]) -> list[tuple[str, float]]:
    """The engine's cumulative ``(upper bound, count)`` pairs folded into ``bounds``."""
    out, i, seen = [], 0, 0
    pairs = pairs or ()
    for le in bounds:
        limit = le * (1 + 1e-9)
        while i < len(pairs) and pairs[i][0] <= limit:
            seen = pairs[i][1]
            i += 1
        out.append((repr(float(le)), float(min(seen, count))))
    out.append(("+Inf", float(count)))
    return out


class _Scrape:
    """The metric families of one scrape."""

    def __init__(self, prom: Any) -> None:
        core = prom.core
        kinds = {"counter": core.CounterMetricFamily, "gauge": core.GaugeMetricFamily,
                 "histogram": core.HistogramMetricFamily, "info": core.InfoMetricFamily}
        self.families: dict[str, Any] = {}
        for name, (kind, labels, doc) in METRICS.items():
            if kind == "info":
                self.families[name] = kinds[kind](f"{PREFIX}_{name}", doc, labels=())
            else:
                self.families[name] = kinds[kind](f"{PREFIX}_{name}", doc, labels=labels)
        self._counter = core.CounterMetricFamily
        self.seen: set[tuple[str, str]] = set()
        #: (backend, deployment), stats()'s time-to-first-token summary and buckets
        self.ttft: list[tuple[tuple[str, str], Any, Any]] = []

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        self.families[name].add_metric(list(labels), value)

    def router_family(self, field: str) -> Any:
        name = f"router_{field}"
        fam = self.families.get(name)
        if fam is None:
            doc = ROUTER_FIELDS.get(field, f"The router's stats()['router'][{field!r}].")
            fam = self.families[name] = self._counter(f"{PREFIX}_{name}", doc, labels=["router"])
        return fam


class Collector:
    """A ``prometheus_client`` collector of backends and routers (anything with ``stats()``;
    a router's has a ``"deployments"`` entry), read at every scrape.

    Args:
        objs: backends and routers (more with :meth:`add`).
        models: model names that may be labels besides the price table's and the Router
            deployments' (a self-hosted model, say); others count as ``"other"``.
        prices: the price table for the cost of a backend whose ``stats()`` has no
            ``"cost"`` of its own (default: :func:`~ipfs_accelerate_api.pricing.load_prices`).
        buckets: the histograms' bounds in seconds.

    Raises :class:`ConfigurationError` when ``prometheus_client`` is not installed.
    """

    def __init__(self, *objs: Any, models: Iterable[str] = (),
                 prices: Mapping[str, Price] | None = None,
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self._prom = _prometheus()
        bounds = sorted(float(b) for b in buckets)
        if not bounds or not all(0 < b < math.inf for b in bounds):
            raise ConfigurationError(f"buckets must be finite numbers > 0, got {buckets!r}")
        self._bounds = tuple(bounds)
        self._prices = dict(load_prices() if prices is None else prices)
        self._models = set(models) | set(self._prices)
        self._objs: list[Any] = []
        self._lock = threading.Lock()
        self._ttft: dict[tuple[str, str, str], Histogram] = {}
        self._warned: set[tuple[str, str]] = set()
        for obj in objs:
            self.add(obj)

    def add(self, obj: Any) -> None:
        """Export ``obj`` (a backend or a router) too."""
        if not callable(getattr(obj, "stats", None)):
            raise ConfigurationError(f"Collector: {obj!r} has no stats()")
        with self._lock:
            if all(o is not obj for o in self._objs):
                self._objs.append(obj)

    def model_label(self, model: str | None) -> str:
        """The label for a model name: itself when configured, ``"-"`` for none, the undated
        name a dated one is priced as, otherwise :data:`OTHER_MODEL`."""
        if model is None or model == "-":
            return "-"
        if model in self._models:
            return model
        return priced_name(model, self._prices) or OTHER_MODEL

    def observe(self, record: RequestRecord) -> None:
        """An ``on_request_end`` hook: a succeeded stream operation's latency (sending to the
        first chunk) goes to the time-to-first-token histogram. Cheap and never raises."""
        try:
            if not record.ok or not record.operation.startswith("stream"):
                return
            key = (record.backend, str(getattr(record, "deployment", None) or ""),
                   self.model_label(record.model))
            with self._lock:
                hist = self._ttft.get(key)
                if hist is None:
                    hist = self._ttft[key] = Histogram()
                hist.add(record.latency)
        except Exception:  # a metrics hook must never fail a request
            log.debug("metrics: could not observe a record", exc_info=True)

    # -- prometheus_client's collector protocol --------------------------------------------
    def describe(self) -> Iterator[Any]:
        """The families (without samples), so a registry checks names without a scrape."""
        yield from _Scrape(self._prom).families.values()

    def collect(self) -> Iterator[Any]:
        scrape = _Scrape(self._prom)
        with self._lock:
            objs = list(self._objs)
        for i, obj in enumerate(objs):
            try:
                stats = obj.stats()
            except Exception:
                log.warning("metrics: %r.stats() failed; left out of this scrape", obj,
                            exc_info=True)
                continue
            if isinstance(stats.get("deployments"), Mapping):
                self._router(scrape, obj, i, stats)
            else:
                self._backend(scrape, str(stats.get("backend") or getattr(obj, "name", "")),
                              "", stats)
        with self._lock:
            ttft = [(k, h.buckets(), h.count, h.total) for k, h in self._ttft.items()]
        observed = {k[:2] for k, *_ in ttft}
        for (backend, deployment), summ, pairs in scrape.ttft:
            if (backend, deployment) not in observed:  # per model through observe, else here
                count = int(_num(summ.get("count")))
                ttft.append(((backend, deployment, "-"), pairs, count,
                             _num(summ.get("mean")) * count))
        for labels, pairs, count, total in ttft:
            scrape.families["time_to_first_token_seconds"].add_metric(
                list(labels), _fold(pairs, count, self._bounds), total)
        yield from scrape.families.values()

    # -- one object ---------------------------------------------------------------------------
    def _router(self, scrape: _Scrape, obj: Any, index: int, stats: Mapping[str, Any]) -> None:
        name = getattr(obj, "name", None)
        router = name if isinstance(name, str) and name else f"router-{index}"
        for field, value in (stats.get("router") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scrape.router_family(str(field)).add_metric([router], float(value))
        for dep_id, dep in stats["deployments"].items():
            model = dep.get("model")
            if isinstance(model, str) and model:
                self._models.add(model)
            backend = str(dep.get("backend") or "")
            scrape.families["deployment"].add_metric([], {
                "deployment": str(dep_id), "group": str(dep.get("group") or ""),
                "backend": backend, "model": self.model_label(model)})
            self._backend(scrape, backend, str(dep_id), dep)

    def _backend(self, scrape: _Scrape, backend: str, deployment: str,
                 s: Mapping[str, Any]) -> None:
        if (backend, deployment) in scrape.seen:
            if (backend, deployment) not in self._warned:
                self._warned.add((backend, deployment))
                log.warning("metrics: two objects export backend=%r deployment=%r; the second "
                            "is left out (use one Collector per such backend)", backend,
                            deployment)
            return
        scrape.seen.add((backend, deployment))
        base = (backend, deployment)
        add = scrape.add
        add("requests_submitted", base, _num(s.get("submitted")))
        add("requests", (*base, "succeeded"), _num(s.get("succeeded")))
        add("requests", (*base, "failed"), _num(s.get("failed")))
        for error, n in sorted((s.get("errors") or {}).items()):
            add("request_errors", (*base, str(error)), _num(n))
        add("retries", base, _num(s.get("retried")))
        add("rate_limited", base, _num(s.get("rate_limited")))
        add("limiter_waits", base, _num(s.get("limiter_waits")))
        add("limiter_wait_seconds", base, _num(s.get("limiter_wait_seconds")))
        self._usage(scrape, base, s)
        for name, summary, pairs in (("request_latency_seconds", "latency", "latency_buckets"),
                                     ("queue_wait_seconds", "queue_wait", "queue_wait_buckets")):
            summ = s.get(summary) or {}
            count = int(_num(summ.get("count")))
            total = _num(summ.get("mean")) * count
            scrape.families[name].add_metric(list(base), _fold(s.get(pairs), count, self._bounds),
                                             total)
        if s.get("time_to_first_token"):
            scrape.ttft.append((base, s["time_to_first_token"],
                                s.get("time_to_first_token_buckets")))
        add("in_flight", base, _num(s.get("in_flight")))
        add("waiting", base, _num(s.get("waiting")))
        add("streams_open", base, _num(s.get("streams_open")))
        for priority, depth in (s.get("queue_depth") or {}).items():
            add("queue_depth", (*base, str(priority).lower()), _num(depth))
        q = s.get("queue") or {}
        add("queue_capacity", base, _num(q.get("maxsize")))
        add("queue_high_water", base, _num(q.get("high_water")))
        for field in ("enqueued", "dequeued", "rejected", "dropped"):
            add(f"queue_{field}", base, _num(q.get(field)))
        self._breaker(scrape, base, s.get("breaker") or {})
        self._keys(scrape, base, s.get("keys") or {})

    def _usage(self, scrape: _Scrape, base: tuple[str, str], s: Mapping[str, Any]) -> None:
        rows: dict[tuple[str, str], list[float]] = {}  # (model label, key) -> n, ok, in, out
        for model, keys in (s.get("usage") or {}).items():
            label = self.model_label(model)
            for key, u in keys.items():
                row = rows.setdefault((label, str(key)), [0.0, 0.0, 0.0, 0.0])
                row[0] += _num(u.get("requests"))
                row[1] += _num(u.get("succeeded"))
                row[2] += _num(u.get("prompt_tokens"))
                row[3] += _num(u.get("completion_tokens"))
        for (model, key), (n, ok, tin, tout) in sorted(rows.items()):
            labels = (*base, model, key)
            scrape.add("model_requests", (*labels, "succeeded"), ok)
            scrape.add("model_requests", (*labels, "failed"), n - ok)
            scrape.add("tokens", (*labels, "input"), tin)
            scrape.add("tokens", (*labels, "output"), tout)
        cost = s.get("cost")
        if not isinstance(cost, Mapping):
            cost = cost_table(s.get("usage") or {}, self._prices)
        dollars: dict[tuple[str, str], float] = {}
        for model, entry in (cost.get("by_model") or {}).items():
            label = self.model_label(model)
            for key, usd in (entry.get("by_key") or {}).items():
                dollars[(label, str(key))] = dollars.get((label, str(key)), 0.0) + _num(usd)
        for (model, key), usd in sorted(dollars.items()):
            scrape.add("cost_usd", (*base, model, key), usd)
        for model in sorted({self.model_label(m) for m in cost.get("unpriced") or ()}):
            scrape.add("unpriced_model", (*base, model), 1.0)

    @staticmethod
    def _breaker(scrape: _Scrape, base: tuple[str, str], b: Mapping[str, Any]) -> None:
        state = str(b.get("state") or "CLOSED").upper()
        number = BreakerState[state].value if state in BreakerState.__members__ else -1
        scrape.add("breaker_state", (*base, state.lower()), float(number))
        for field in ("trips", "failures", "successes", "rejected"):
            scrape.add(f"breaker_{field}", base, _num(b.get(field)))
        scrape.add("breaker_consecutive_failures", base, _num(b.get("consecutive_failures")))

    @staticmethod
    def _keys(scrape: _Scrape, base: tuple[str, str], keys: Mapping[str, Any]) -> None:
        status = {"healthy": 0, "cooling": 0, "disabled": 0}
        for label, k in sorted(keys.items()):
            labels = (*base, str(label))
            cooling = _num(k.get("cooling_down_for"))
            disabled = k.get("disabled") is not None
            status["disabled" if disabled else "cooling" if cooling > 0 else "healthy"] += 1
            for field in ("requests", "succeeded", "errors", "tokens", "cooldowns",
                          "limiter_waits"):
                scrape.add(f"key_{field}", labels, _num(k.get(field)))
            scrape.add("key_in_flight", labels, _num(k.get("in_flight")))
            scrape.add("key_cooldown_seconds", labels, cooling)
            scrape.add("key_disabled", labels, 1.0 if disabled else 0.0)
        for name, n in status.items():
            scrape.add("keys", (*base, name), float(n))


class MetricsServer:
    """What :func:`serve` started: ``collector`` (to :meth:`~Collector.add` more objects or
    to pass ``collector.observe`` as a hook), ``registry``, ``port``; :meth:`close` stops it."""

    def __init__(self, collector: Collector, registry: Any, server: Any, thread: Any,
                 port: int) -> None:
        self.collector = collector
        self.registry = registry
        self.port = port
        self._server = server
        self._thread = thread

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve(port: int, *objs: Any, addr: str = "127.0.0.1", **options: Any) -> MetricsServer:
    """Serve ``/metrics`` of ``objs`` on ``addr:port`` (0: a free port, see ``.port``) from a
    registry of its own, in a daemon thread; ``options`` go to :class:`Collector`."""
    prom = _prometheus()
    collector = Collector(*objs, **options)
    registry = prom.CollectorRegistry(auto_describe=True)
    registry.register(collector)
    started = prom.start_http_server(port, addr=addr, registry=registry)
    server, thread = started if isinstance(started, tuple) else (None, None)
    if server is not None:
        port = server.server_port
    return MetricsServer(collector, registry, server, thread, port)
