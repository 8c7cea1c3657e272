"""The Prometheus collector, scraped and parsed back with ``prometheus_client.parser``: its
values equal ``stats()``; plus the structured logs of the engine's decisions.

Each scrape is compared with the very ``stats()`` snapshot it was built from (a wrapper
keeps it), so nothing moves between the two."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.request

import pytest

from ipfs_accelerate_api import BreakerPolicy, RetryPolicy
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.engine.tracking import Histogram
from ipfs_accelerate_api.errors import CircuitOpenError, ConfigurationError, ServerError
from ipfs_accelerate_api.pricing import PRICES_ENV, cost_table, load_prices

from .conftest import MSG

CANARY = "sk-canary-9f2c41d7e3b8a6"


@pytest.fixture(autouse=True)
def _no_price_file(monkeypatch):
    monkeypatch.delenv(PRICES_ENV, raising=False)


@pytest.fixture
def prom():
    return pytest.importorskip("prometheus_client")


class Kept:
    """Forwards ``stats()`` and keeps the snapshot it returned."""

    def __init__(self, obj) -> None:
        self.obj = obj
        self.last = None

    def stats(self):
        self.last = self.obj.stats()
        return self.last


class FakeRouter:
    """A Router's ``stats()`` shape over real backends (the Router is built elsewhere)."""

    name = "main"

    def __init__(self, deployments: dict) -> None:
        self.deployments = deployments  # id -> (group, model, backend)

    def stats(self):
        return {"router": {"calls": 7, "fallbacks": 2, "no_deployment": 1},
                "deployments": {d: {"group": g, "backend": b.name, "model": m, **b.stats()}
                                for d, (g, m, b) in self.deployments.items()}}


class Scrape:
    """One exposition, parsed: ``value(name, **labels)`` of the sample with exactly those
    labels (``backend="openai", deployment=""`` by default)."""

    def __init__(self, prom, collector) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        registry = prom.CollectorRegistry()
        registry.register(collector)
        self.text = prom.generate_latest(registry).decode()
        self.samples = {}
        self.types = {}
        for fam in text_string_to_metric_families(self.text):
            self.types[fam.name] = fam.type
            for s in fam.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name: str, **labels):
        if not name.startswith("router_"):
            labels = {"backend": "openai", "deployment": "", **labels}
        return self.samples[(f"ipfs_accel_{name}", tuple(sorted(labels.items())))]

    def matching(self, name: str, **labels) -> dict:
        """{labels: value} of the samples of ``name`` that have ``labels``."""
        out = {}
        for (n, lab), v in self.samples.items():
            d = dict(lab)
            if n == f"ipfs_accel_{name}" and all(d.get(k) == v2 for k, v2 in labels.items()):
                out[lab] = v
        return out


def scrape(prom, *objs, **options) -> Scrape:
    from ipfs_accelerate_api.metrics import Collector

    return Scrape(prom, Collector(*objs, **options))


# -- values equal stats() -------------------------------------------------------------------

def test_the_exposition_equals_stats(prom, make) -> None:
    ai = make(api_keys=["sk-a", "sk-b"])
    for model in ("gpt-4o-mini", "gpt-4o", "gpt-4o-mini"):
        ai.chat(MSG, model=model)
    ai.embed(["a text", "another"], model="text-embedding-3-small")
    ai.list_models()
    kept = Kept(ai)
    got = scrape(prom, kept)
    s = kept.last
    assert got.value("requests_submitted_total") == s["submitted"] == 5
    assert got.value("requests_total", outcome="succeeded") == s["succeeded"] == 5
    assert got.value("requests_total", outcome="failed") == s["failed"] == 0
    assert got.value("retries_total") == s["retried"]
    assert got.value("rate_limited_total") == s["rate_limited"] == 0
    # Tokens and requests per model and key, and their cost.
    cost = cost_table(s["usage"], load_prices())
    seen_in = seen_out = 0
    for model, keys in s["usage"].items():
        for key, row in keys.items():
            lab = {"model": model, "key": key}
            assert got.value("tokens_total", type="input", **lab) == row["prompt_tokens"]
            assert got.value("tokens_total", type="output", **lab) == row["completion_tokens"]
            assert got.value("model_requests_total", outcome="succeeded", **lab) == row["succeeded"]
            assert got.value("model_requests_total", outcome="failed", **lab) \
                == row["requests"] - row["succeeded"]
            seen_in += row["prompt_tokens"]
            seen_out += row["completion_tokens"]
            if model in cost["by_model"]:
                assert got.value("cost_usd_total", **lab) == pytest.approx(
                    cost["by_model"][model]["by_key"][key])
    assert seen_in == s["prompt_tokens"] > 0 and seen_out == s["completion_tokens"] > 0
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "-"} <= set(s["usage"])
    assert cost["total"] > 0
    assert sum(got.matching("cost_usd_total").values()) == pytest.approx(cost["total"])
    # Histograms: counts are exact, buckets cumulative and capped by the count.
    lat, qw = s["latency"], s["queue_wait"]
    assert got.value("request_latency_seconds_count") == lat["count"] == s["succeeded"]
    assert got.value("request_latency_seconds_sum") == pytest.approx(lat["mean"] * lat["count"])
    assert got.value("request_latency_seconds_bucket", le="+Inf") == lat["count"]
    assert got.value("queue_wait_seconds_count") == qw["count"] == s["succeeded"] + s["failed"]
    buckets = sorted((float(dict(lab)["le"]), v)
                     for lab, v in got.matching("request_latency_seconds_bucket").items())
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert got.types["ipfs_accel_request_latency_seconds"] == "histogram"
    # Gauges and per-key figures.
    assert got.value("in_flight") == s["in_flight"] == 0
    for priority, depth in s["queue_depth"].items():
        assert got.value("queue_depth", priority=priority.lower()) == depth
    assert got.value("queue_capacity") == s["queue"]["maxsize"]
    for label, k in s["keys"].items():
        for field in ("requests", "succeeded", "errors", "tokens", "cooldowns"):
            assert got.value(f"key_{field}_total", key=label) == k[field]
        assert got.value("key_in_flight", key=label) == k["in_flight"]
        assert got.value("key_disabled", key=label) == 0
    assert got.value("keys", status="healthy") == 2
    assert got.value("breaker_state", state="closed") == 0
    assert got.value("breaker_successes_total") == s["breaker"]["successes"]


def test_a_429_is_counted_and_its_key_cools(prom, make, emu, monkeypatch) -> None:
    # A Retry-After of 30 s instead of the emulator's 50 ms: the request waits (scraped
    # meanwhile) and its key is still cooling; the backend's close ends the wait.
    monkeypatch.setattr("ipfs_accelerate_api.emulator._server.FAULT_RETRY_AFTER", 30.0)
    emu.config("openai").faults = FaultPlan(script=["429"])
    ai = make(api_keys=["sk-a", "sk-b"])
    ai.submit("list_models")
    deadline = time.monotonic() + 10
    while ai.stats()["retried"] < 1:
        assert time.monotonic() < deadline, "the 429 was not retried"
        time.sleep(0.005)
    kept = Kept(ai)
    got = scrape(prom, kept)
    s = kept.last
    assert got.value("rate_limited_total") == s["rate_limited"] == 1
    assert got.value("retries_total") == s["retried"] == 1
    assert got.value("waiting") == s["waiting"] == 1
    assert got.value("keys", status="cooling") == 1
    assert got.value("keys", status="healthy") == 1
    assert got.value("key_cooldowns_total", key="openai-key-1") == 1
    cooling = s["keys"]["openai-key-1"]["cooling_down_for"]
    assert cooling > 20
    assert got.value("key_cooldown_seconds", key="openai-key-1") == pytest.approx(cooling)
    assert got.value("key_cooldown_seconds", key="openai-key-2") == 0
    assert got.value("key_errors_total", key="openai-key-1") == 1


def test_the_breaker_state_after_it_trips(prom, make, emu) -> None:
    emu.config("openai").faults = FaultPlan(rate=1.0, kinds=["503"])
    ai = make(retry=RetryPolicy(max_retries=0),
              breaker=BreakerPolicy(failure_threshold=2, recovery_timeout=60))
    for _ in range(2):
        with pytest.raises(ServerError):
            ai.list_models()
    with pytest.raises(CircuitOpenError):
        ai.list_models()
    kept = Kept(ai)
    got = scrape(prom, kept)
    b = kept.last["breaker"]
    assert b["state"] == "OPEN"
    assert got.value("breaker_state", state="open") == 1
    assert got.matching("breaker_state", state="closed") == {}
    assert got.value("breaker_trips_total") == b["trips"] == 1
    assert got.value("breaker_failures_total") == b["failures"] == 2
    assert got.value("breaker_rejected_total") == b["rejected"] == 1
    assert got.value("request_errors_total", error="ServerError") == 2
    assert got.value("request_errors_total", error="CircuitOpenError") == 1
    assert got.value("requests_total", outcome="failed") == kept.last["failed"] == 3
    assert got.value("request_latency_seconds_count") == 0  # only successes are timed
    assert got.value("queue_wait_seconds_count") == 3


def test_a_disabled_key_is_a_gauge(prom, make, emu) -> None:
    emu.config("openai").keys = ["sk-good"]
    ai = make(api_keys=["sk-bad", "sk-good"])
    for _ in range(2):
        assert ai.list_models()
    got = scrape(prom, ai)
    assert got.value("key_disabled", key="openai-key-1") == 1
    assert got.value("key_disabled", key="openai-key-2") == 0
    assert got.value("keys", status="disabled") == 1
    assert got.value("keys", status="healthy") == 1


def test_no_key_appears_anywhere(prom, make, emu, caplog) -> None:
    emu.config("openai").keys = ["sk-good"]
    emu.config("openai").faults = FaultPlan(script=[None, "429"])
    ai = make(api_keys=[CANARY, "sk-good"])
    with caplog.at_level(logging.DEBUG, logger="ipfs_accelerate_api"):
        for _ in range(3):
            ai.chat(MSG, model="gpt-4o-mini")
        got = scrape(prom, ai)
    assert "openai-key-1" in got.text and "openai-key-2" in got.text
    assert CANARY not in got.text and CANARY[3:] not in got.text
    assert CANARY not in caplog.text
    assert all(CANARY not in repr(vars(r)) for r in caplog.records)


# -- labels and cardinality -------------------------------------------------------------------

def test_models_beyond_the_configured_ones_are_other(prom, make, emu) -> None:
    emu.config("openai").models = ["ft:one", "ft:two", "gpt-4o-mini-2024-07-18", "mine"]
    ai = make()
    for model in ("ft:one", "ft:two", "gpt-4o-mini-2024-07-18", "mine", "gpt-4o-mini"):
        ai.chat(MSG, model=model)
    kept = Kept(ai)
    got = scrape(prom, kept, models=["mine"])
    usage = kept.last["usage"]
    models = {dict(lab)["model"] for lab in got.matching("tokens_total")}
    assert models == {"other", "mine", "gpt-4o-mini"}
    # The dated name counts under the table's undated one; the two fine-tunes under "other".
    key = "openai-key-1"
    assert got.value("tokens_total", model="gpt-4o-mini", key=key, type="output") == \
        usage["gpt-4o-mini"][key]["completion_tokens"] + \
        usage["gpt-4o-mini-2024-07-18"][key]["completion_tokens"]
    assert got.value("model_requests_total", model="other", key=key, outcome="succeeded") == 2
    assert got.value("unpriced_model", model="other") == 1
    assert got.value("unpriced_model", model="mine") == 1
    assert "ft:one" not in got.text and "2024-07-18" not in got.text


def test_a_router_labels_its_deployments(prom, backends, emu) -> None:
    oa = backends("openai")
    local = backends("ollama")
    oa.chat(MSG, model="gpt-4o-mini")
    local.chat(MSG, model="llama3.2:latest")
    local.chat(MSG, model="llama3.2:latest")
    router = FakeRouter({"oa-mini": ("fast-chat", "gpt-4o-mini", oa),
                         "home": ("fast-chat", "llama3.2:latest", local)})
    got = scrape(prom, router)
    assert got.value("router_calls_total", router="main") == 7
    assert got.value("router_fallbacks_total", router="main") == 2
    assert got.value("router_no_deployment_total", router="main") == 1
    assert got.value("requests_total", backend="openai", deployment="oa-mini",
                     outcome="succeeded") == 1
    assert got.value("requests_total", backend="ollama", deployment="home",
                     outcome="succeeded") == 2
    # A deployment's model is configured: it is a label although the table has no price.
    assert got.value("model_requests_total", backend="ollama", deployment="home",
                     model="llama3.2:latest", key="ollama-key-1", outcome="succeeded") == 2
    assert got.value("unpriced_model", backend="ollama", deployment="home",
                     model="llama3.2:latest") == 1
    info = got.matching("deployment_info")
    assert {dict(lab)["deployment"]: dict(lab) for lab in info}["home"] == {
        "deployment": "home", "group": "fast-chat", "backend": "ollama",
        "model": "llama3.2:latest"}
    assert got.matching("requests_total", deployment="") == {}  # no bare backend series


def test_time_to_first_token_through_the_hook(prom, make) -> None:
    from ipfs_accelerate_api.metrics import Collector

    collector = Collector()
    ai = make(on_request_end=collector.observe)
    collector.add(ai)
    for _ in range(2):
        assert "".join(c.text for c in ai.stream_chat(MSG, model="gpt-4o-mini"))
    ai.chat(MSG, model="gpt-4o-mini")  # not a stream: not counted
    got = Scrape(prom, collector)
    assert got.value("time_to_first_token_seconds_count", model="gpt-4o-mini") == 2
    assert got.value("time_to_first_token_seconds_bucket", model="gpt-4o-mini", le="+Inf") == 2
    assert got.value("time_to_first_token_seconds_sum", model="gpt-4o-mini") > 0
    assert got.value("request_latency_seconds_count") == 3
    assert got.matching("time_to_first_token_seconds_count", model="-") == {}  # not twice


def test_time_to_first_token_without_the_hook(prom, make) -> None:
    """Without ``observe`` the engine's own record of stream starts is exported (model "-"),
    equal to stats()["time_to_first_token"]."""
    ai = make()
    for _ in range(3):
        list(ai.stream_chat(MSG, model="gpt-4o-mini"))
    ai.chat(MSG, model="gpt-4o-mini")
    got = scrape(prom, ai)
    assert ai.stats()["time_to_first_token"]["count"] == 3
    assert got.value("time_to_first_token_seconds_count", model="-") == 3
    assert got.value("time_to_first_token_seconds_bucket", model="-", le="+Inf") == 3


def test_histogram_buckets_fold_into_the_bounds(prom) -> None:
    h = Histogram()
    values = [0.003, 0.02, 0.02, 0.2, 2.0, 700.0]
    for v in values:
        h.add(v)
    pairs = h.buckets()
    assert [n for _, n in pairs] == sorted(n for _, n in pairs) and pairs[-1][1] == len(values)
    assert all(upper >= v for (upper, _), v in zip(pairs, sorted(set(values))))

    class Fixed:
        def stats(self):
            return {"backend": "fixed", "latency": h.summary(), "latency_buckets": pairs}

    got = scrape(prom, Fixed())
    le = {b: got.value("request_latency_seconds_bucket", backend="fixed", le=b)
          for b in ("0.001", "0.005", "0.025", "0.25", "2.5", "300.0", "+Inf")}
    assert le == {"0.001": 0, "0.005": 1, "0.025": 3, "0.25": 4, "2.5": 5, "300.0": 5, "+Inf": 6}
    assert got.value("request_latency_seconds_sum", backend="fixed") == pytest.approx(sum(values))


def test_a_broken_object_does_not_break_the_scrape(prom, make) -> None:
    class Broken:
        def stats(self):
            raise RuntimeError("no")

    ai = make()
    ai.list_models()
    got = scrape(prom, Broken(), ai)
    assert got.value("requests_total", outcome="succeeded") == 1


def test_objects_without_stats_are_refused(prom) -> None:
    from ipfs_accelerate_api.metrics import Collector

    with pytest.raises(ConfigurationError):
        Collector(object())


def test_serve_answers_on_http(prom, make) -> None:
    from ipfs_accelerate_api.metrics import serve

    ai = make()
    ai.list_models()
    with serve(0, ai) as server:
        assert server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            body = r.read().decode()
    assert 'ipfs_accel_requests_total{backend="openai",deployment="",outcome="succeeded"} 1.0' \
        in body


def test_registering_twice_is_refused_without_a_scrape(prom) -> None:
    from ipfs_accelerate_api.metrics import Collector

    class Counting:
        calls = 0

        def stats(self):
            Counting.calls += 1
            return {}

    registry = prom.CollectorRegistry(auto_describe=True)
    registry.register(Collector(Counting()))
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(Collector(Counting()))
    assert Counting.calls == 0  # describe() names the families without reading stats()


# -- the optional dependency --------------------------------------------------------------------

def test_importing_the_package_never_imports_prometheus_client() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "import ipfs_accelerate_api as ia, ipfs_accelerate_api.backends as b\n"
        "import ipfs_accelerate_api.pricing, ipfs_accelerate_api.metrics\n"
        "for m in pkgutil.iter_modules(b.__path__):\n"
        "    importlib.import_module('ipfs_accelerate_api.backends.' + m.name)\n"
        "ia.backend('openai', api_key='sk-x', base_url='http://127.0.0.1:9').close()\n"
        "bad = [m for m in sys.modules if m.startswith('prometheus_client')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_prometheus_client_the_collector_names_the_extra(monkeypatch) -> None:
    from ipfs_accelerate_api import metrics

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"ipfs-accelerate-api\[metrics\]"):
        metrics.Collector()
    with pytest.raises(ConfigurationError, match=r"\[metrics\]"):
        metrics.serve(0)


# -- structured logs ----------------------------------------------------------------------------

def _events(caplog, event: str) -> list:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def test_a_retry_is_logged_with_its_fields(make, emu, caplog) -> None:
    emu.config("openai").faults = FaultPlan(script=["429"])
    ai = make(api_keys=[CANARY, "sk-other"])
    with caplog.at_level(logging.DEBUG, logger="ipfs_accelerate_api"):
        assert ai.list_models()
    (retry,) = _events(caplog, "retry")
    assert retry.levelno == logging.DEBUG and retry.name == "ipfs_accelerate_api.engine"
    assert len(retry.request_id) == 32 and retry.request_id in retry.getMessage()
    assert (retry.backend, retry.operation, retry.key, retry.attempt) == \
        ("openai", "list_models", "openai-key-1", 1)
    assert (retry.error, retry.status) == ("RateLimitError", 429)
    assert retry.delay == pytest.approx(0.05, abs=0.01)  # the emulator's Retry-After
    (cool,) = _events(caplog, "cooldown")
    assert (cool.request_id, cool.key, cool.status) == (retry.request_id, "openai-key-1", 429)
    assert cool.delay == retry.delay
    for r in caplog.records:
        assert CANARY not in r.getMessage() and CANARY not in repr(vars(r))


def test_breaker_transitions_key_disabling_and_giving_up_are_logged(make, emu, caplog) -> None:
    emu.config("openai").keys = ["sk-good"]
    ai = make(api_keys=[CANARY, "sk-good"])
    with caplog.at_level(logging.DEBUG, logger="ipfs_accelerate_api"):
        assert ai.list_models()
    (off,) = _events(caplog, "key_disabled")
    assert (off.key, off.status, off.error) == ("openai-key-1", 401, "AuthenticationError")

    emu.config("openai").keys = None
    emu.config("openai").faults = FaultPlan(rate=1.0, kinds=["503"])
    b = make(retry=RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.002),
             breaker=BreakerPolicy(failure_threshold=2, recovery_timeout=60))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="ipfs_accelerate_api"):
        with pytest.raises(ServerError):
            b.list_models()
        with pytest.raises(CircuitOpenError):
            b.list_models()
    (moved,) = _events(caplog, "breaker")
    assert (moved.backend, moved.old_state, moved.new_state) == ("openai", "CLOSED", "OPEN")
    gave_up = _events(caplog, "give_up")
    assert [(r.error, r.status, r.attempt) for r in gave_up] == \
        [("ServerError", 503, 2), ("CircuitOpenError", None, 0)]
    assert gave_up[1].delay > 0
    for r in caplog.records:
        assert CANARY not in r.getMessage() and CANARY not in repr(vars(r))


def test_a_real_router_and_its_costs(prom, emu) -> None:
    """The Router itself (not a stand-in): its calls and fallbacks, each deployment's
    series, and the deployment's own price in its cost."""
    import ipfs_accelerate_api as ia

    emu.config("openai").faults = FaultPlan(script=["500"])
    deps = [{"group": "g", "backend": "openai", "model": "gpt-4o-mini", "id": "oa",
             "options": {"base_url": emu.base_url("openai"), "api_key": "sk-metrics-oa",
                         "retry": RetryPolicy(max_retries=0)},
             "cost": {"input": 1.0, "output": 2.0}},
            {"group": "g", "backend": "groq", "model": "llama-3.1-8b-instant", "id": "gq",
             "options": {"base_url": emu.base_url("groq"), "api_key": "sk-metrics-gq"},
             "cost": {"input": 3.0, "output": 5.0}}]
    with ia.Router(deps, strategy="order") as router:
        router.chat(MSG, model="g")  # openai's 500: groq answers
        router.chat(MSG, model="g")  # openai again
        stats = router.stats()
        got = scrape(prom, router)
        assert got.value("router_calls_total", router="router") == stats["router"]["calls"] == 2
        assert got.value("router_fallbacks_total", router="router") == 1
        assert got.value("requests_total", backend="groq", deployment="gq",
                         outcome="succeeded") == 1
        assert got.value("requests_total", deployment="oa", outcome="failed") == 1
        usage = stats["deployments"]["gq"]["usage"]["llama-3.1-8b-instant"]["groq-key-1"]
        want = (usage["prompt_tokens"] * 3.0 + usage["completion_tokens"] * 5.0) / 1e6
        assert stats["deployments"]["gq"]["cost"]["total"] == pytest.approx(want)
        assert got.value("cost_usd_total", backend="groq", deployment="gq",
                         model="llama-3.1-8b-instant", key="groq-key-1") == pytest.approx(want)
