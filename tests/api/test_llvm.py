"""LLVM (README, "LLVM protocol"): our backend end to end against the emulator's llvm service,
which is the protocol's reference server — every method's round trip, batches in order with
per-item errors, the counters, typed errors and retries, input checks before any request,
keys kept out of errors, and answers of the wrong shape."""

from __future__ import annotations

import asyncio
import json

import pytest
import urllib3

from ipfs_accelerate_api import RetryPolicy, backend
from ipfs_accelerate_api.backends.llvm import InferResult, model_path
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator._server import count_tokens
from ipfs_accelerate_api.emulator.llvm import COUNTERS, MODELS, llvm_output
from ipfs_accelerate_api.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    UnprocessableEntityError,
)
from ipfs_accelerate_api.types import Usage

from .conftest import concurrently
from .hostile import HostileServer

TEXT, EMBED, CLASSIFY = "llvm-text-small", "llvm-embed", "llvm-classify"


@pytest.fixture
def make(backends):
    """LLVM backends against the emulator, with no key (the protocol's default)."""
    return lambda **options: backends("llvm", **{"api_keys": (), **options})


@pytest.fixture
def service(emu):
    return emu.services["llvm"]


def _expected(model: str, text: str, params: dict | None = None) -> tuple:
    spec = MODELS[model]
    return llvm_output(spec["type"], spec["parameters"], text, params or {}, 1)


def _raw(emu, method: str, path: str, body: bytes | dict | None = None) -> urllib3.BaseHTTPResponse:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    return urllib3.request(method, emu.base_url("llvm") + path, body=data, retries=False,
                           headers={"content-type": "application/json"})


# -- round trips ------------------------------------------------------------------------------

def test_list_models_ids_and_details(make) -> None:
    ai = make()
    assert ai.list_models() == list(MODELS)
    cards = ai.list_models(details=True)
    assert [c["id"] for c in cards] == list(MODELS)
    assert {c["id"]: c["type"] for c in cards}[EMBED] == "embedding"
    assert all(c["status"] == "ready" for c in cards)


def test_model_info_has_the_parameters(make) -> None:
    info = make().model_info(EMBED)
    assert (info["id"], info["type"], info["status"]) == (EMBED, "embedding", "ready")
    assert info["parameters"]["dimensions"] == 32 and info["parameters"]["max_batch_size"] == 64
    assert info["parameters"]["optimization"] is None


def test_infer_text_generation(make, emu) -> None:
    r = make().infer(TEXT, "hello there", max_tokens=5)
    output, produced = _expected(TEXT, "hello there", {"max_tokens": 5})
    assert isinstance(r, InferResult) and r.output == output and r.model == TEXT
    assert r.usage == Usage(count_tokens("hello there"), produced, count_tokens("hello there") + produced)
    assert 1 <= r.usage.completion_tokens <= 5
    # the model's batch limit is read once (for combining concurrent calls), then one infer
    assert emu.stats("llvm")["by_path"] == {f"/models/{TEXT}": 1, f"/models/{TEXT}/infer": 1}


def test_parameters_reach_the_server(make, emu, service) -> None:
    ai = make()
    plain, seeded = ai.infer(TEXT, "hi"), ai.infer(TEXT, "hi", seed=7)
    assert seeded.output == _expected(TEXT, "hi", {"seed": 7})[0] != plain.output
    cut = plain.output.split()[1]
    stopped = ai.infer(TEXT, "hi", stop=cut)
    assert stopped.output == plain.output[:plain.output.index(cut)].rstrip()


def test_infer_embedding_and_classification(make) -> None:
    ai = make()
    vec = ai.infer(EMBED, "a text")
    assert isinstance(vec.output, list) and len(vec.output) == 32
    assert abs(sum(x * x for x in vec.output) - 1) < 1e-5 and vec.usage.completion_tokens == 0
    label = ai.infer(CLASSIFY, "a text").output
    assert label["label"] in MODELS[CLASSIFY]["parameters"]["labels"] and 0 < label["score"] <= 1


def test_batch_infer_keeps_input_order_and_equals_single_calls(make, emu) -> None:
    ai = make()
    texts = [f"text number {i}" for i in range(12)]
    batch = ai.batch_infer(TEXT, texts, max_tokens=6)
    assert [r.output for r in batch] == [ai.infer(TEXT, t, max_tokens=6).output for t in texts]
    assert [r.output for r in batch] == [_expected(TEXT, t, {"max_tokens": 6})[0] for t in texts]
    assert all(r.model == TEXT and r.usage.prompt_tokens == count_tokens(t)
               for r, t in zip(batch, texts))
    assert emu.stats("llvm")["by_path"][f"/models/{TEXT}/batch_infer"] == 1
    vectors = ai.batch_infer(EMBED, ["b", "a"])
    assert [v.output for v in vectors] == [ai.infer(EMBED, "b").output, ai.infer(EMBED, "a").output]


def test_a_refused_item_raises_or_takes_its_place(make, emu) -> None:
    ai = make()
    with pytest.raises(UnprocessableEntityError, match=r"inputs\[1\]: expected a string") as info:
        ai.batch_infer(TEXT, ["fine", 3, "also fine"])
    assert info.value.code == "validation_error" and info.value.status == 422
    assert ai.stats()["retried"] == 0
    mixed = ai.batch_infer(TEXT, ["fine", 3, "also fine"], return_exceptions=True)
    assert isinstance(mixed[1], UnprocessableEntityError) and mixed[1].body["param"] == "inputs[1]"
    assert [m.output for m in (mixed[0], mixed[2])] == [ai.infer(TEXT, t).output
                                                          for t in ("fine", "also fine")]
    assert emu.stats("llvm")["refused"] == {"inputs[1]": 2}


def test_statistics_count_what_the_model_did(make) -> None:
    ai = make()
    texts = ["one", "two two", "three three three"]
    for t in texts:
        ai.infer(TEXT, t)
    ai.batch_infer(TEXT, texts + [5], return_exceptions=True)
    with pytest.raises(UnprocessableEntityError):
        ai.infer(TEXT, ["not", "text"])
    ai.optimize(TEXT, "memory")
    stats = ai.model_statistics(TEXT)
    produced = sum(_expected(TEXT, t)[1] for t in texts) * 2
    assert stats == {"model": TEXT, "requests": 5, "infer_requests": 4, "batch_requests": 1,
                     "inputs": 6, "failed_inputs": 1,
                     "input_tokens": 2 * sum(count_tokens(t) for t in texts),
                     "output_tokens": produced, "errors": 1, "optimizations": 1}
    assert set(stats) == {"model", *COUNTERS}
    assert ai.model_statistics(EMBED)["requests"] == 0  # per model


@pytest.mark.parametrize("kind", ["speed", "memory", "balanced"])
def test_optimize(make, kind) -> None:
    ai = make()
    assert ai.optimize(CLASSIFY, kind) == {"model": CLASSIFY, "optimization_type": kind,
                                          "status": "optimized"}
    assert ai.model_info(CLASSIFY)["parameters"]["optimization"] == kind


def test_optimize_defaults_to_balanced(make) -> None:
    assert make().optimize(TEXT)["optimization_type"] == "balanced"


@pytest.mark.parametrize("bad", ["fast", "", "SPEED", None, 1, ["speed"]])
def test_other_optimization_types_are_refused_before_any_request(make, emu, bad) -> None:
    ai = make()
    with pytest.raises(ValueError, match="optimization_type"):
        ai.optimize(TEXT, bad)
    with pytest.raises(ValueError, match="optimization_type"):
        asyncio.run(ai.aoptimize(TEXT, bad))
    with pytest.raises(ValueError, match="optimization_type"):
        ai.submit("optimize", model=TEXT, optimization_type=bad)
    assert emu.stats("llvm")["requests"] == 0


def test_async_and_submit_forms(make) -> None:
    ai = make()

    async def main() -> list:
        return await asyncio.gather(
            ai.ainfer(TEXT, "hi", max_tokens=3), ai.abatch_infer(TEXT, ["a", "b"]),
            ai.amodel_info(TEXT), ai.amodel_statistics(TEXT), ai.aoptimize(TEXT, "speed"),
            ai.alist_models(details=True))

    one, batch, info, stats, opt, cards = asyncio.run(main())
    assert one.output == ai.infer(TEXT, "hi", max_tokens=3).output
    assert [r.output for r in batch] == [ai.infer(TEXT, t).output for t in "ab"]
    assert info["id"] == TEXT and "requests" in stats and opt["status"] == "optimized"
    assert [c["id"] for c in cards] == list(MODELS)
    fut = ai.submit("infer", model=TEXT, input="hi", max_tokens=3)
    assert fut.result().output == one.output
    assert [r.output for r in ai.submit("batch_infer", model=TEXT, inputs=["a", "b"]).result()] \
        == [r.output for r in batch]


# -- model ids in the path ---------------------------------------------------------------------

def test_model_ids_are_one_percent_encoded_segment(make, emu) -> None:
    odd = ["org/my model", "..", "a?b#c", "ünï"]
    emu.config("llvm").models = odd
    ai = make()
    for name in odd:
        assert ai.infer(name, "hi").model == name
        assert ai.model_info(name)["id"] == name
    paths = emu.stats("llvm")["by_path"]
    assert "/models/org%2Fmy%20model/infer" in paths and "/models/%2E%2E/infer" in paths
    assert model_path(".") == "/models/%2E"
    assert ai.list_models()[-len(odd):] == odd


@pytest.mark.parametrize("model", ["", "   ", None, 3, "bad\nname"])
def test_bad_model_ids_are_refused_before_any_request(make, emu, model) -> None:
    ai = make()
    for call in (lambda: ai.infer(model, "hi"), lambda: ai.batch_infer(model, ["hi"]),
                 lambda: ai.model_info(model), lambda: ai.model_statistics(model),
                 lambda: ai.optimize(model)):
        with pytest.raises(ValueError, match="model"):
            call()
    assert emu.stats("llvm")["requests"] == 0


@pytest.mark.parametrize("call,error", [
    (lambda ai: ai.infer(TEXT, None), ValueError),
    (lambda ai: ai.batch_infer(TEXT, "one string"), TypeError),
    (lambda ai: ai.batch_infer(TEXT, {"a": 1}), TypeError),
    (lambda ai: ai.batch_infer(TEXT, 7), TypeError),
    (lambda ai: ai.batch_infer(TEXT, []), ValueError),
    (lambda ai: ai.batch_infer(TEXT, ["a", None]), ValueError),
    (lambda ai: ai.infer(TEXT, "hi", temperature=float("nan")), ValueError),
    (lambda ai: ai.infer(TEXT, "hi", temperature=object()), TypeError),
    (lambda ai: ai.infer(TEXT, {1, 2}), TypeError),
])
def test_inputs_are_checked_before_any_request(make, emu, call, error) -> None:
    with pytest.raises(error):
        call(make())
    assert emu.stats("llvm")["requests"] == 0


# -- errors ------------------------------------------------------------------------------------

def test_unknown_model_is_not_found_and_not_retried(make, emu) -> None:
    ai = make()
    for call in (lambda: ai.infer("nope", "hi"), lambda: ai.batch_infer("nope", ["hi"]),
                 lambda: ai.model_info("nope"), lambda: ai.model_statistics("nope"),
                 lambda: ai.optimize("nope", "speed")):
        with pytest.raises(NotFoundError, match="'nope' not found") as info:
            call()
        assert info.value.code == "not_found" and info.value.status == 404
    assert emu.stats("llvm")["requests"] == 5 and ai.stats()["retried"] == 0


def test_validation_errors_are_unprocessable_and_not_retried(make, emu) -> None:
    ai = make()
    with pytest.raises(UnprocessableEntityError, match="input: expected a string") as info:
        ai.infer(TEXT, 42)
    assert info.value.body == {"error": {"message": "input: expected a string, got integer",
                                         "type": "validation_error", "param": "input"}}
    with pytest.raises(UnprocessableEntityError, match="max_tokens"):
        ai.infer(TEXT, "hi", max_tokens=0)
    with pytest.raises(UnprocessableEntityError, match="at most 64"):
        ai.infer(TEXT, "hi", max_tokens=65)
    with pytest.raises(UnprocessableEntityError, match="at most 8 inputs"):
        ai.batch_infer("llvm-text-large", ["x"] * 9)
    with pytest.raises(UnprocessableEntityError, match="at most 512 tokens"):
        ai.infer(EMBED, "x" * 4000)
    # five refusals, and each model's batch limit read once before its first infer
    assert ai.stats()["retried"] == 0 and emu.stats("llvm")["requests"] == 5 + 2


@pytest.mark.parametrize("path,body,status,param", [
    (f"/models/{TEXT}/infer", {"parameters": {}}, 422, "input"),
    (f"/models/{TEXT}/infer", {"input": "x", "parameters": "hot"}, 422, "parameters"),
    (f"/models/{TEXT}/infer", {"input": "x", "parameters": {"temperature": 3}}, 422,
     "parameters.temperature"),
    (f"/models/{TEXT}/infer", {"input": "x", "colour": 1}, 422, "colour"),
    (f"/models/{TEXT}/batch_infer", {"inputs": "x"}, 422, "inputs"),
    (f"/models/{TEXT}/batch_infer", {"inputs": []}, 422, "inputs"),
    (f"/models/{TEXT}/batch_infer", {"input": "x"}, 422, "inputs"),
    (f"/models/{TEXT}/optimize", {"optimization_type": "fast"}, 422, "optimization_type"),
    (f"/models/{TEXT}/optimize", {}, 422, "optimization_type"),
    (f"/models/{TEXT}/infer", b"{not json", 400, None),
    (f"/models/{TEXT}/infer", b"[1, 2]", 400, None),
    ("/models/nope/infer", b"{not json", 404, "model"),  # the model first
])
def test_emulator_refusals_in_the_protocols_shape(emu, path, body, status, param) -> None:
    r = _raw(emu, "POST", path, body)
    assert r.status == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param"} and err["param"] == param
    assert err["type"] == {400: "invalid_request", 404: "not_found", 422: "validation_error"}[status]


def test_emulator_unknown_routes_and_methods(emu) -> None:
    r = _raw(emu, "GET", "/nowhere")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found"
    r = _raw(emu, "POST", "/models", {})
    assert r.status == 405 and r.json()["error"]["type"] == "method_not_allowed"
    r = _raw(emu, "GET", f"/models/{TEXT}/infer")
    assert r.status == 405


def test_bad_request_is_typed(make) -> None:
    with HostileServer() as server:
        server.status = 400
        server.body = json.dumps({"error": {"message": "no", "type": "invalid_request"}}).encode()
        ai = make(base_url=server.url + "/json")
        with pytest.raises(BadRequestError, match="no") as info:
            ai.infer(TEXT, "hi")
        assert info.value.code == "invalid_request" and len(server.requests) == 1


def test_429_is_retried_after_the_servers_retry_after(make, emu, caplog) -> None:
    emu.config("llvm").faults = FaultPlan(script=["429", "429"])
    ai = make(retry=RetryPolicy(max_retries=3, base_delay=5, max_delay=5))
    with caplog.at_level("DEBUG", logger="ipfs_accelerate_api"):
        assert ai.infer(TEXT, "hi").output == _expected(TEXT, "hi")[0]
    assert "retry in 0.051s (server hint)" in caplog.text  # not the 5 s backoff
    assert ai.stats()["retried"] == 2 and emu.stats("llvm")["sent_429"] == 2


def test_a_real_rate_limit_carries_retry_after_and_a_long_one_is_not_waited(make, emu) -> None:
    emu.config("llvm").rpm = 1
    ai = make(retry=RetryPolicy(max_retries=3, base_delay=0.001, max_server_delay=5))
    ai.list_models()
    with pytest.raises(RateLimitError) as info:
        ai.list_models()
    err = info.value
    assert err.code == "rate_limited" and int(err.headers["retry-after"]) > 5
    assert int(err.headers["retry-after-ms"]) > 5000
    assert emu.stats("llvm")["requests"] == 2


def test_over_capacity_is_429_overloaded_with_retry_after(make, emu, service) -> None:
    emu.config("llvm").capacity = 1
    sem = service.capacity()
    sem.acquire()  # one request "in flight"
    try:
        with pytest.raises(RateLimitError, match="capacity") as info:
            make(retry=RetryPolicy(max_retries=0)).infer(TEXT, "hi")
        assert info.value.code == "overloaded" and info.value.headers["retry-after-ms"] == "50"
        raw = _raw(emu, "GET", "/models")
        assert raw.status == 429 and raw.headers["retry-after"] == "1"
    finally:
        sem.release()
    assert make().infer(TEXT, "hi").output


@pytest.mark.parametrize("fault", ["500", "503", "reset", "malformed", "wrong_shape", "truncate"])
def test_server_failures_and_garbage_are_retried(make, emu, fault) -> None:
    emu.config("llvm").faults = FaultPlan(script=[fault])
    ai = make()
    assert [r.output for r in ai.batch_infer(TEXT, ["a", "b"])] == \
        [_expected(TEXT, t)[0] for t in "ab"]
    assert ai.stats()["retried"] == 1 and emu.stats("llvm")["faults"] == {fault: 1}


def test_5xx_gives_up_typed_after_the_retries(make, emu) -> None:
    emu.config("llvm").faults = FaultPlan(script=["500", "503"])
    with pytest.raises(ServerError) as info:
        make(retry=RetryPolicy(max_retries=1, base_delay=0.001)).infer(TEXT, "hi")
    assert info.value.status == 503 and info.value.code == "unavailable"
    assert info.value.headers["retry-after"] == "1"


def test_a_model_that_is_not_ready_answers_503_unavailable(make, emu, service) -> None:
    service.set_status(TEXT, "loading")
    ai = make(retry=RetryPolicy(max_retries=0))
    assert {c["id"]: c["status"] for c in ai.list_models(details=True)}[TEXT] == "loading"
    with pytest.raises(ServerError, match="loading") as info:
        ai.infer(TEXT, "hi")
    assert info.value.status == 503 and info.value.code == "unavailable"
    assert ai.model_statistics(TEXT)["errors"] == 1
    service.set_status(TEXT, "ready")
    assert ai.infer(TEXT, "hi").output


# -- keys and the base URL ---------------------------------------------------------------------

def test_no_key_by_default_and_a_key_as_bearer(make, emu) -> None:
    make().infer(TEXT, "hi")  # the model's batch limit, then the infer
    assert emu.record("llvm").auth_headers_seen == [{}, {}]
    emu.config("llvm").keys = ["llvm-secret-key"]
    with pytest.raises(AuthenticationError) as info:
        make(retry=RetryPolicy(max_retries=0)).infer(TEXT, "hi")
    assert info.value.code == "unauthorized"
    assert make(api_key="llvm-secret-key", api_keys=None).infer(TEXT, "hi").output
    assert emu.stats("llvm")["by_key"] == {"": 3, "llvm-secret-key": 2}
    assert emu.record("llvm").auth_headers_seen[-1] == {"authorization": "Bearer llvm-secret-key"}


def test_the_key_never_leaks_into_errors(make) -> None:
    key = "llvm-very-secret-0123456789"
    with HostileServer() as server:
        ai = make(base_url=server.url + "/echo-key", api_key=key, api_keys=None,
                  retry=RetryPolicy(max_retries=0))
        with pytest.raises(AuthenticationError) as info:
            ai.infer(TEXT, "hi")
    err = info.value
    seen = " ".join([str(err), repr(err), err.message, json.dumps(err.body),
                     json.dumps(err.headers), repr(ai), json.dumps(ai.stats(), default=str)])
    assert key not in seen and "[redacted]" in err.message


def test_base_url_and_key_from_the_environment(emu, monkeypatch) -> None:
    monkeypatch.delenv("LLVM_API_URL", raising=False)
    monkeypatch.delenv("LLVM_API_KEY", raising=False)
    with backend("llvm") as ai:
        assert ai.base_url == "http://127.0.0.1:8090"
    emu.config("llvm").keys = ["env-key"]
    monkeypatch.setenv("LLVM_API_URL", emu.base_url("llvm"))
    monkeypatch.setenv("LLVM_API_KEY", "env-key")
    with backend("llvm") as ai:
        assert ai.base_url == emu.base_url("llvm") and ai.infer(TEXT, "hi").output
    with backend("llvm", base_url=emu.base_url("llvm") + "/") as ai:  # the argument wins
        assert ai.list_models()
    assert emu.stats("llvm")["by_key"] == {"env-key": 3}  # model_info, infer, list_models


# -- answers of the wrong shape ----------------------------------------------------------------

GOOD_BATCH = {"model": TEXT, "results": [
    {"index": 0, "output": "x", "usage": {"input_tokens": 1, "output_tokens": 1}},
    {"index": 1, "output": "y", "usage": {"input_tokens": 1, "output_tokens": 1}}]}


@pytest.mark.parametrize("answer", [
    b"not json",
    b"[]",
    json.dumps({"model": TEXT}).encode(),  # no results
    json.dumps({**GOOD_BATCH, "results": GOOD_BATCH["results"][:1]}).encode(),  # one short
    json.dumps({**GOOD_BATCH, "results": GOOD_BATCH["results"][::-1]}).encode(),  # out of order
    json.dumps({**GOOD_BATCH, "results": [{"index": 0, "usage": {}},
                                          GOOD_BATCH["results"][1]]}).encode(),  # no output
    json.dumps({**GOOD_BATCH, "results": [
        {"index": 0, "output": "x", "usage": {"input_tokens": -1}},
        GOOD_BATCH["results"][1]]}).encode(),
    json.dumps({**GOOD_BATCH, "results": [{"index": 0, "error": {"type": "validation_error"}},
                                          GOOD_BATCH["results"][1]]}).encode(),  # no message
    json.dumps({**GOOD_BATCH, "model": 3}).encode(),
])
def test_garbage_batch_answers_are_format_errors(make, answer) -> None:
    with HostileServer() as server:
        server.body = answer
        ai = make(base_url=server.url + "/json", retry=RetryPolicy(max_retries=0))
        with pytest.raises(ResponseFormatError):
            ai.batch_infer(TEXT, ["a", "b"])
        server.body = json.dumps(GOOD_BATCH).encode()
        assert [r.output for r in ai.batch_infer(TEXT, ["a", "b"])] == ["x", "y"]


@pytest.mark.parametrize("call,answer", [
    (lambda ai: ai.infer(TEXT, "a"), {"model": TEXT, "usage": {}}),
    (lambda ai: ai.infer(TEXT, "a"), {"model": TEXT, "output": "x", "usage": {"input_tokens": 1.5}}),
    (lambda ai: ai.infer(TEXT, "a"), {"model": TEXT, "output": "x", "usage": []}),
    (lambda ai: ai.list_models(), {"models": [{"id": "a", "type": "t"}]}),
    (lambda ai: ai.list_models(), {"data": []}),
    (lambda ai: ai.model_info(TEXT), {"id": TEXT, "type": "t", "status": "ready"}),
    (lambda ai: ai.model_statistics(TEXT), {"requests": 1, "inputs": 1, "input_tokens": 1,
                                            "output_tokens": 1}),
    (lambda ai: ai.model_statistics(TEXT), {"requests": -1, "inputs": 1, "input_tokens": 1,
                                            "output_tokens": 1, "errors": 0}),
    (lambda ai: ai.optimize(TEXT), {"model": TEXT, "optimization_type": "balanced"}),
])
def test_garbage_answers_are_format_errors(make, call, answer) -> None:
    with HostileServer() as server:
        server.body = json.dumps(answer).encode()
        with pytest.raises(ResponseFormatError):
            call(make(base_url=server.url + "/json", retry=RetryPolicy(max_retries=0)))


# -- concurrent infers combined into one batch_infer by the engine's batcher ------------------
def _infer_all(ai, model: str, inputs: list, **params) -> list:
    return concurrently(lambda value: ai.infer(model, value, **params), inputs)


def test_concurrent_infers_go_out_as_batch_infer(make, emu) -> None:
    emu.config("llvm").latency = 0.02  # answers overlap, so calls wait behind one in flight
    ai = make()
    texts = [f"text number {i}" for i in range(48)]
    outs = _infer_all(ai, TEXT, texts, max_tokens=4)
    for text, out in zip(texts, outs):  # each caller gets exactly its own answer
        assert isinstance(out, InferResult)
        assert out.output == _expected(TEXT, text, {"max_tokens": 4})[0]
    paths = emu.stats("llvm")["by_path"]
    assert paths.get(f"/models/{TEXT}/batch_infer", 0) >= 1
    assert paths.get(f"/models/{TEXT}/infer", 0) + paths[f"/models/{TEXT}/batch_infer"] < len(texts)
    assert paths[f"/models/{TEXT}"] == 1  # the batch limit read once


def test_combined_batches_stay_within_the_models_limit(make, emu) -> None:
    emu.config("llvm").latency = 0.02
    ai = make()
    outs = _infer_all(ai, "llvm-text-large", [f"t{i}" for i in range(40)])  # max_batch_size 8
    assert all(isinstance(o, InferResult) for o in outs)
    assert emu.stats("llvm")["refused"] == {}
    assert emu.stats("llvm")["by_path"].get("/models/llvm-text-large/batch_infer", 0) >= 1


def test_a_refused_item_fails_its_own_caller_only(make, emu) -> None:
    emu.config("llvm").latency = 0.02
    ai = make()
    inputs = [42 if i % 5 == 0 else f"fine {i}" for i in range(30)]  # 42: not a string
    outs = _infer_all(ai, TEXT, inputs)
    for value, out in zip(inputs, outs):
        if value == 42:
            assert isinstance(out, UnprocessableEntityError) and "expected a string" in str(out)
        else:
            assert isinstance(out, InferResult) and out.output == _expected(TEXT, value)[0]
    assert ai.stats()["retried"] == 0


def test_calls_with_other_parameters_are_not_combined(make, emu) -> None:
    emu.config("llvm").latency = 0.02
    ai = make()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        futs = [pool.submit(ai.infer, TEXT, f"x{i}", max_tokens=1 + i % 3) for i in range(30)]
        outs = [f.result() for f in futs]
    for i, out in enumerate(outs):
        assert out.output == _expected(TEXT, f"x{i}", {"max_tokens": 1 + i % 3})[0]
        assert out.usage.completion_tokens <= 1 + i % 3


def test_batching_off_sends_every_infer_alone(make, emu) -> None:
    emu.config("llvm").latency = 0.01
    ai = make(batch_timeout=0)
    assert all(isinstance(o, InferResult) for o in _infer_all(ai, TEXT, ["a"] * 10))
    assert emu.stats("llvm")["by_path"] == {f"/models/{TEXT}/infer": 10}
