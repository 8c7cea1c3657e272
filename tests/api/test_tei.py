"""Hugging Face TEI: the official client (``huggingface_hub.InferenceClient``) against the
emulator (proof of the wire format), and our backend end to end over real HTTP: every
operation, the ``/info`` batch limits, the old-server fallback, overload, normalisation."""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import urllib3

from ipfs_accelerate_api import RetryPolicy
from ipfs_accelerate_api.core import pack_batches
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator._server import embedding_for
from ipfs_accelerate_api.errors import (
    AuthenticationError,
    UnprocessableEntityError,
)

hf = pytest.importorskip("huggingface_hub")

SEED = 1  # the emu fixture's
DIM = 384
PATIENT = RetryPolicy(max_retries=30, base_delay=0.005, max_delay=0.02)


def vec(text: str) -> np.ndarray:
    return embedding_for(text, DIM, SEED)


def texts(n: int, prefix: str = "text") -> list[str]:
    return [f"{prefix} number {i}" for i in range(n)]


@pytest.fixture
def tei(backends):
    return lambda **options: backends("tei", **{"api_key": None, **options})


@pytest.fixture
def service(emu):
    return emu.services["tei"]


def sent(emu, path: str = "/embed") -> int:
    return emu.stats("tei")["by_path"].get(path, 0)


def raw(emu, path: str, body=None, headers=None, method: str = "POST"):
    data = None if body is None else json.dumps(body).encode()
    return urllib3.request(method, emu.base_url("tei") + path, body=data,
                           headers={"content-type": "application/json", **(headers or {})})


# -- the official client ----------------------------------------------------------------------

def test_inference_client_feature_extraction(emu):
    client = hf.InferenceClient(base_url=emu.base_url("tei"))
    out = client.feature_extraction("hello world")
    assert out.shape == (1, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], vec("hello world"), rtol=1e-6)
    loose = client.feature_extraction("hello world", normalize=False)
    assert not math.isclose(float(np.linalg.norm(loose)), 1.0)
    cut = client.feature_extraction("a " * 600, truncate=True, truncation_direction="Left")
    assert cut.shape == (1, DIM)


def test_inference_client_with_a_key(emu):
    emu.config("tei").keys = ("hf-secret",)
    ok = hf.InferenceClient(base_url=emu.base_url("tei"), token="hf-secret")
    assert ok.feature_extraction("x").shape == (1, DIM)
    with pytest.raises(hf.errors.HfHubHTTPError) as err:
        hf.InferenceClient(base_url=emu.base_url("tei"), token="wrong").feature_extraction("x")
    assert err.value.response.status_code == 401


# -- embed ------------------------------------------------------------------------------------

def test_one_string_is_one_row(tei):
    out = tei().embed("hello")
    assert out.shape == (1, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], vec("hello"), rtol=1e-6)


def test_no_model_needed_but_one_may_be_named(tei):
    ai = tei()
    assert ai.embed(["a"], model="BAAI/bge-small-en-v1.5").shape == (1, DIM)
    with pytest.raises(ValueError):
        ai.embed(["a"], model="")


def test_thousand_texts_in_the_fewest_requests_none_refused(emu, tei):
    items = texts(1000)
    out = tei().embed(items)
    assert out.shape == (1000, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.vstack([vec(t) for t in items]), rtol=1e-6)
    assert sent(emu) == math.ceil(1000 / 32)
    assert sent(emu, "/info") == 1
    assert emu.stats("tei")["refused"] == {}


def test_limits_are_read_once_across_threads(emu, tei):
    ai = tei()
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda i: ai.embed(texts(40, f"t{i}")), range(8)))
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out, np.vstack([vec(t) for t in texts(40, f"t{i}")]), rtol=1e-6)
    assert sent(emu, "/info") == 1
    assert emu.stats("tei")["refused"] == {}


def test_split_by_tokens_as_the_server_counts_them(emu, service, tei):
    service.max_batch_tokens = 200
    items = [f"some words in a longer text, number {i}" for i in range(100)]
    out = tei().embed(items)
    np.testing.assert_allclose(out, np.vstack([vec(t) for t in items]), rtol=1e-6)
    estimate = [len(t.encode()) + 2 for t in items]
    expected = len(pack_batches(estimate, 32, 200))
    assert expected > math.ceil(100 / 32)  # the token limit binds, not the count
    assert sent(emu) == expected
    assert emu.stats("tei")["refused"] == {}


def test_a_long_text_is_truncated_not_refused(emu, service, tei):
    service.max_batch_tokens = 600
    out = tei().embed(["word " * 2000, "short"])
    assert out.shape == (2, DIM)
    assert emu.stats("tei")["refused"] == {}


def test_without_truncation_a_long_text_is_the_servers_422(tei):
    with pytest.raises(UnprocessableEntityError) as err:
        tei().embed(["word " * 2000], truncate=False)
    assert err.value.code == "Validation" and "must have less than" in err.value.message


def test_old_server_batch_limit_learned_from_its_413(emu, service, tei):
    service.report_limits, service.batch_error_status = False, 413
    service.max_client_batch_size = 10
    ai = tei()
    items = texts(100)
    np.testing.assert_allclose(ai.embed(items), np.vstack([vec(t) for t in items]), rtol=1e-6)
    assert emu.stats("tei")["refused"] == {"batch": 1}
    assert sent(emu) == 1 + 10  # one refused, then the size it named
    again = texts(95, "again")
    np.testing.assert_allclose(ai.embed(again), np.vstack([vec(t) for t in again]), rtol=1e-6)
    assert sent(emu) == 11 + 10 and emu.stats("tei")["refused"] == {"batch": 1}


def test_old_server_token_refusal_halves_without_losing_a_row(emu, service, tei):
    service.report_limits, service.batch_error_status = False, 413
    service.max_client_batch_size = 1000
    service.max_batch_tokens = 100  # each text is 10 tokens as the server counts: 8 fit
    items = [f"w{i} a b c d e f g" for i in range(64)]
    out = tei().embed(items)
    assert out.shape == (64, DIM)
    np.testing.assert_allclose(out, np.vstack([vec(t) for t in items]), rtol=1e-6)
    assert sent(emu) == 1 + 2 + 4 + 8  # 64 -> 32 -> 16 -> 8, each refused size halved
    assert emu.stats("tei")["refused"] == {"batch": 7}


def test_current_server_422_batch_refusal_is_split_too(emu, service, tei):
    ai = tei()
    ai.embed("warm")  # limits read: 32
    service.max_client_batch_size = 8  # the server changed under us
    items = texts(32)
    np.testing.assert_allclose(ai.embed(items), np.vstack([vec(t) for t in items]), rtol=1e-6)
    assert emu.stats("tei")["refused"] == {"batch": 1}


def test_overloaded_429_is_retried(emu, tei):
    emu.config("tei").faults = FaultPlan(script=["429", "429"])
    out = tei().embed(["a", "b"])
    np.testing.assert_allclose(out, np.vstack([vec("a"), vec("b")]), rtol=1e-6)
    assert emu.stats("tei")["sent_429"] == 2


def test_capacity_answers_429_overloaded_at_once(emu):
    emu.config("tei").capacity, emu.config("tei").latency = 1, 0.2
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(raw, emu, "/embed", {"inputs": "slow"})
        while emu.stats("tei")["in_flight"] == 0:
            pass
        second = raw(emu, "/embed", {"inputs": "refused"})
        assert first.result().status == 200
    assert second.status == 429 and "retry-after" not in second.headers
    assert json.loads(second.data) == {"error": "Model is overloaded", "error_type": "Overloaded"}


def test_over_capacity_every_row_still_arrives(emu, tei):
    emu.config("tei").capacity, emu.config("tei").latency = 2, 0.01
    ai = tei(max_concurrency=8, retry=PATIENT)
    items = texts(320)
    np.testing.assert_allclose(ai.embed(items), np.vstack([vec(t) for t in items]), rtol=1e-6)
    assert emu.stats("tei")["refused"] == {}


def test_concurrent_small_calls_are_combined_within_the_limit(emu, tei):
    ai = tei()
    items = texts(200, "small")
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda t: ai.embed(t), items))
    for t, out in zip(items, outs):
        assert out.shape == (1, DIM)
        np.testing.assert_allclose(out[0], vec(t), rtol=1e-6)
    assert emu.stats("tei")["refused"] == {}  # no combined batch went over 32
    assert sent(emu) < 200


def test_normalisation_on_server_and_client(tei):
    ai = tei()
    loose = ai.embed(["abc", "de"], normalize=False)
    norms = np.linalg.norm(loose, axis=1)
    assert not np.allclose(norms, 1.0)
    client = ai.embed(["abc", "de"], normalize_on_client=True)
    np.testing.assert_allclose(np.linalg.norm(client, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(client, ai.embed(["abc", "de"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(client, loose / norms[:, None], rtol=1e-5, atol=1e-7)


def test_prompt_name_and_dimensions(tei):
    ai = tei()
    q = ai.embed("what", prompt_name="query")
    np.testing.assert_allclose(q[0], vec("query: what"), rtol=1e-6)
    assert ai.embed("what", dimensions=64).shape == (1, 64)
    with pytest.raises(UnprocessableEntityError):
        ai.embed("what", prompt_name="nope")


def test_openai_route(emu, tei):
    ai = tei()
    items = texts(40)
    native = ai.embed(items)
    np.testing.assert_allclose(ai.embed(items, route="openai"), native, rtol=1e-6)
    np.testing.assert_allclose(ai.embed(items, route="openai", encoding_format="float"), native,
                               rtol=1e-6)
    assert sent(emu, "/v1/embeddings") == 2 * math.ceil(40 / 32)
    client = ai.embed(["x"], route="openai", normalize_on_client=True)
    np.testing.assert_allclose(np.linalg.norm(client), 1.0, rtol=1e-6)
    with pytest.raises(ValueError):
        ai.embed("x", route="grpc")


def test_openai_route_errors_in_its_own_shape(emu):
    resp = raw(emu, "/v1/embeddings", {"input": "x", "encoding_format": "hex"})
    body = json.loads(resp.data)
    assert resp.status == 422 and body["code"] == 422 and body["error_type"] == "Validation"
    assert "error" not in body


def test_async_embed(tei):
    out = asyncio.run(tei().aembed(["a", "b"]))
    assert out.shape == (2, DIM)


# -- the other routes -------------------------------------------------------------------------

def test_rerank_best_first(tei):
    ai = tei()
    docs = ["cats sleep", "what is deep learning", "deep sea fish", "learning to cook"]
    ranked = ai.rerank("what is deep learning", docs)
    assert ranked[0][0] == 1 and sorted(i for i, _ in ranked) == [0, 1, 2, 3]
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert ai.rerank("what is deep learning", docs, top_n=2) == ranked[:2]
    logits = ai.rerank("what is deep learning", docs, raw_scores=True)
    assert [i for i, _ in logits] == [i for i, _ in ranked] and min(s for _, s in logits) < 0
    assert asyncio.run(ai.arerank("what is deep learning", docs)) == ranked
    with pytest.raises(ValueError):
        ai.rerank("q", docs, top_n=0)


def test_embed_sparse(tei):
    out = tei().embed_sparse(["alpha beta", "gamma"])
    assert len(out) == 2 and len(out[0]) == 2 and len(out[1]) == 1
    assert all(type(k) is int and isinstance(v, float) and v > 0
               for row in out for k, v in row.items())


def test_predict_a_list_of_two_is_a_batch_not_a_pair(tei):
    ai = tei()
    two = ai.predict(["good", "bad"])
    assert len(two) == 2 and two[0] == ai.predict("good") and two[1] == ai.predict("bad")
    pair = ai.predict([("premise", "hypothesis")])
    assert len(pair) == 1 and len(pair[0]) == 3
    labels = ai.predict("good")
    assert {label for label, _ in labels} == {"positive", "neutral", "negative"}
    assert math.isclose(sum(s for _, s in labels), 1.0, rel_tol=1e-6)
    with pytest.raises(TypeError):
        ai.predict([1, 2])


def test_tokenize(tei):
    out = tei().tokenize(["hi there", "x"])
    assert [t["text"] for t in out[0]] == ["[CLS]", "hi", "there", "[SEP]"]
    assert out[0][1]["start"] == 0 and out[0][1]["stop"] == 2 and out[0][0]["special"] is True
    bare = tei().tokenize("hi", add_special_tokens=False)
    assert [t["text"] for t in bare[0]] == ["hi"]


def test_info_health_and_models(service, tei):
    ai = tei()
    info = ai.info()
    assert info["max_client_batch_size"] == 32 and info["model_id"] == service.model_id
    assert ai.list_models() == [service.model_id]
    assert ai.health() is True
    service.healthy = False
    assert tei(retry=RetryPolicy(max_retries=0)).health() is False


def test_key_as_bearer_health_without_one(emu, tei):
    emu.config("tei").keys = ("tei-key",)
    assert tei(api_key="tei-key").embed("x").shape == (1, DIM)
    assert emu.record("tei").auth_headers_seen[-1] == {"authorization": "Bearer tei-key"}
    with pytest.raises(AuthenticationError):
        tei(api_key="wrong").embed("x")
    assert tei().health() is True  # /health needs no key
    assert raw(emu, "/info", method="GET").status == 401  # /info does
    assert raw(emu, "/info", method="GET").data == b""  # a bare 401


def test_base_url_from_the_environment(monkeypatch, emu):
    from ipfs_accelerate_api import backend

    monkeypatch.setenv("HF_TEI_API_URL", emu.base_url("tei"))
    with backend("hf_tei") as ai:
        assert ai.base_url == emu.base_url("tei") and ai.embed("x").shape == (1, DIM)
    monkeypatch.delenv("HF_TEI_API_URL")
    with backend("tei") as ai:
        assert ai.base_url == "http://127.0.0.1:8080"


# -- the emulator's own rules ---------------------------------------------------------------

@pytest.mark.parametrize("body, status, kind", [
    ({"inputs": []}, 400, "Empty"),
    ({"inputs": ["x"] * 33}, 422, "Validation"),
    ({"inputs": "x", "truncation_direction": "up"}, 422, "Validation"),
    ({"inputs": "x", "normalize": "yes"}, 422, "Validation"),
    ({"inputs": [1, "x"]}, 422, "Validation"),
    ({}, 422, "Validation"),
])
def test_emulator_refusals(emu, body, status, kind):
    resp = raw(emu, "/embed", body)
    assert resp.status == status and json.loads(resp.data)["error_type"] == kind


def test_emulator_batch_wording_and_legacy_status(emu, service):
    resp = raw(emu, "/embed", {"inputs": ["x"] * 40})
    assert json.loads(resp.data) == {
        "error": "batch size 40 > maximum allowed batch size 32", "error_type": "Validation"}
    service.batch_error_status = 413
    assert raw(emu, "/embed", {"inputs": ["x"] * 40}).status == 413


def test_emulator_token_ids_and_unknown_fields(emu):
    one = raw(emu, "/embed", {"inputs": [101, 2023], "future_field": 1})
    many = raw(emu, "/embed", {"inputs": [[101, 2023], [7]]})
    assert one.status == 200 and len(json.loads(one.data)) == 1
    assert many.status == 200 and len(json.loads(many.data)) == 2
    assert raw(emu, "/", {"inputs": "x"}).status == 200


def test_old_info_has_no_limits(emu, service):
    service.report_limits = False
    info = json.loads(raw(emu, "/info", method="GET").data)
    assert "max_client_batch_size" not in info and "max_batch_tokens" not in info
