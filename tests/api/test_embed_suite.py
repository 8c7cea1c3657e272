"""One behaviour across every embed-capable backend, each against its own emulated service.

A backend joins by adding a row to ``EMBED_BACKENDS``: the name it is built by, the emulator
service it talks to, a model that service knows, the vectors' dimension, which requests are
embedding requests and where their texts sit in the body, and how its batch limit is set
small (on the server where the server reports it, else ``batch_size=``).

The oracle is the emulator's own :func:`embedding_for` (seed 1, the ``emu`` fixture's); what
each request carried is read off the wire by a tap on the service's ``record``.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate_api.emulator._server import embedding_for

from .conftest import backend_factory

SEED = 1  # the emu fixture's
SERVICES_OPEA = ("llm", "embedding", "retrieval", "reranking")
#: The backends' own item limit per request unless told (``batch_size``).
DEFAULT_BATCH = 256


def _openai_inputs(body: dict) -> list[str]:
    x = body["input"]
    return [x] if isinstance(x, str) else list(x)


def _tei_inputs(body: dict) -> list[str]:
    x = body["inputs"]
    return [x] if isinstance(x, str) else list(x)


def _gemini_inputs(body: dict) -> list[str]:
    if "requests" in body:  # :batchEmbedContents
        return [r["content"]["parts"][0]["text"] for r in body["requests"]]
    return [body["content"]["parts"][0]["text"]]  # :embedContent


def _limit_by_batch_size(emu: Any, n: int) -> dict:
    return {"batch_size": n}


def _limit_tei_server(emu: Any, n: int) -> dict:
    """TEI's ``max_client_batch_size`` (the backend reads it from ``/info``)."""
    emu.services["tei"].max_client_batch_size = n
    return {}


@dataclass(frozen=True)
class EmbedRow:
    id: str
    backend: str
    service: str
    model: str | None
    dim: int
    #: Path endings (below the service prefix) of the embedding requests.
    paths: tuple[str, ...]
    #: The texts an embedding request's JSON body carries, in order.
    inputs: Callable[[dict], list[str]]
    key: str | None = "sk-test"
    build: dict = field(default_factory=dict)  # options of the backend
    call: dict = field(default_factory=dict)  # options of every embed call
    #: Sets an item limit of ``n`` per request; returns the backend options it needs.
    limit: Callable[[Any, int], dict] = _limit_by_batch_size
    default_limit: int = DEFAULT_BATCH
    #: Options that make the server answer vectors that are not unit length, and the
    #: server-side switch that makes them unit again (None: it has none).
    loose: dict | None = None
    server_normalize: dict | None = None
    #: Why normalisation is not tested, when it is not.
    no_normalize: str = ""


EMBED_BACKENDS = [
    EmbedRow("openai", "openai", "openai", "text-embedding-3-small", 1536,
             ("/v1/embeddings",), _openai_inputs,
             no_normalize="openai: no normalize option (the API's vectors come unit length) "
                          "and no normalize_on_client"),
    EmbedRow("tei", "tei", "tei", None, 384, ("/embed",), _tei_inputs, key=None,
             limit=_limit_tei_server, default_limit=32,
             loose={"normalize": False}, server_normalize={"normalize": True}),
    # TEI's OpenAI-style route (``route="openai"``): the same limits, OpenAI's body.
    EmbedRow("tei-openai-route", "tei", "tei", None, 384, ("/v1/embeddings",), _openai_inputs,
             key=None, call={"route": "openai"}, limit=_limit_tei_server, default_limit=32,
             loose={"normalize": False}),
    EmbedRow("ollama", "ollama", "ollama", "nomic-embed-text", 768, ("/api/embed",),
             _openai_inputs, key=None,
             no_normalize="ollama: /api/embed has no normalize switch (its vectors come unit "
                          "length) and the backend has no normalize_on_client"),
    EmbedRow("ovms", "ovms", "ovms", "ovms-embed", 256, ("/v3/embeddings",), _openai_inputs,
             key=None,
             no_normalize="ovms: the /v3 embeddings route has no normalize option and the "
                          "backend has no normalize_on_client"),
    EmbedRow("opea", "opea", "opea", None, 256, ("/v1/embeddings",), _openai_inputs,
             build={"api_keys": ()},
             no_normalize="opea: the embedding microservice has no normalize option and the "
                          "backend has no normalize_on_client"),
    EmbedRow("gemini", "gemini", "gemini", "text-embedding-004", 768,
             (":embedContent", ":batchEmbedContents"), _gemini_inputs,
             default_limit=100,  # batchEmbedContents takes at most 100 requests
             no_normalize="gemini: embedContent has no normalize option and the backend has "
                          "no normalize_on_client"),
]


@pytest.fixture(params=EMBED_BACKENDS, ids=lambda r: r.id)
def row(request) -> EmbedRow:
    return request.param


@pytest.fixture
def build(emu, row):
    """``build(**options)``: a backend of the row against the emulator (closed after)."""
    options = dict(row.build)
    if row.backend == "opea":  # every microservice at the emulator's OPEA service
        options["services"] = {s: emu.base_url("opea") for s in SERVICES_OPEA}
    factory = backend_factory(emu, row.backend, key=row.key, service=row.service)
    make = next(factory)  # the shared builder; resuming it closes what it made
    yield lambda **more: make(**{**options, **more})
    next(factory, None)


@pytest.fixture
def wire(emu, row, monkeypatch) -> list[list[str]]:
    """The texts of each embedding request the row's service received, as they arrive."""
    record = emu.record(row.service)
    seen: list[list[str]] = []
    lock = threading.Lock()
    begin = record.begin

    def tap(req) -> None:
        if req.method == "POST" and req.path.endswith(row.paths):
            texts = row.inputs(json.loads(req.body))
            with lock:
                seen.append(texts)
        begin(req)

    monkeypatch.setattr(record, "begin", tap)
    return seen


def expected(row: EmbedRow, texts: list[str]) -> np.ndarray:
    return np.vstack([embedding_for(t, row.dim, SEED) for t in texts])


def embed(ai, row: EmbedRow, texts: Any, **options: Any) -> np.ndarray:
    return ai.embed(texts, model=row.model, **{**row.call, **options})


def check_rows(row: EmbedRow, out: np.ndarray, texts: list[str]) -> None:
    """float32, (n, d), C-contiguous, row i the emulator's vector of text i."""
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == (len(texts), row.dim)
    assert out.flags.c_contiguous
    # Gemini and Ollama write 7 decimals; any misplaced row is off by far more.
    np.testing.assert_allclose(out, expected(row, texts), rtol=0, atol=1e-6)


def in_order(seen: list[list[str]], texts: list[str]) -> list[str]:
    """The requests' texts, each request placed where its first text stands in ``texts``
    (requests may run concurrently, so they arrive in any order)."""
    return [t for batch in sorted(seen, key=lambda b: texts.index(b[0])) for t in batch]


def texts_for(prefix: str, n: int) -> list[str]:
    return [f"{prefix} text number {i}" for i in range(n)]


# -- order, dtype, shape ------------------------------------------------------------------------

def test_rows_are_the_servers_vectors_in_input_order(build, row, wire) -> None:
    texts = ["the first one", "naïve 日本 🚀", "a", "the first one", "zebra crossing"]
    out = embed(build(), row, texts)
    check_rows(row, out, texts)
    assert wire == [texts]  # one request, the texts as given


def test_one_string_is_one_row(build, row, wire) -> None:
    ai = build()
    out = embed(ai, row, "just one")
    check_rows(row, out, ["just one"])
    check_rows(row, embed(ai, row, ["just one"]), ["just one"])
    assert wire == [["just one"], ["just one"]]


@pytest.mark.parametrize("bad, error", [
    ([], ValueError),
    ((), ValueError),
    ([1], TypeError),
    (["fine", None], TypeError),
    (["fine", b"bytes"], TypeError),
    (b"bytes", TypeError),
    (42, TypeError),
    ({"a": "b"}, TypeError),
], ids=["empty-list", "empty-tuple", "int-item", "none-item", "bytes-item", "bytes", "int",
        "dict"])
def test_bad_texts_raise_before_any_request(build, emu, row, bad, error) -> None:
    ai = build()
    with pytest.raises(error):
        embed(ai, row, bad)
    assert emu.stats(row.service)["requests"] == 0  # not even TEI's /info


# -- splitting to the server's limits ---------------------------------------------------------------

@pytest.mark.parametrize("n", [5, 6, 23])
def test_a_large_call_is_split_to_the_limit_in_the_fewest_requests(build, emu, row, wire,
                                                                   n) -> None:
    limit = 5
    ai = build(**row.limit(emu, limit))
    texts = texts_for("split", n)
    out = embed(ai, row, texts)
    check_rows(row, out, texts)
    assert len(wire) == math.ceil(n / limit)  # the packer's minimum: only the count limits
    assert all(0 < len(b) <= limit for b in wire)
    assert in_order(wire, texts) == texts  # every text sent once, each request a run of them
    assert emu.stats(row.service)["refused"] == {}  # nothing was sent over the limit


# -- concurrent small calls are combined ------------------------------------------------------------

@pytest.mark.parametrize("limit", [None, 5], ids=["default-limit", "limit-5"])
def test_concurrent_small_calls_are_combined_and_split_back(build, emu, row, wire,
                                                            limit) -> None:
    ai = build(batch_timeout=0.05, **(row.limit(emu, limit) if limit else {}))
    embed(ai, row, "warm")  # TEI's /info read, a connection open
    wire.clear()
    emu.config(row.service).latency = 0.1  # the first call is in flight while the rest arrive
    sizes = [1, 2, 3, 1, 2, 3, 1, 2]
    calls = [texts_for(f"caller {i}", k) for i, k in enumerate(sizes)]
    start = threading.Barrier(len(calls))

    def caller(texts: list[str]) -> np.ndarray:
        start.wait()
        return embed(ai, row, texts)

    with ThreadPoolExecutor(len(calls)) as pool:
        results = [f.result(30) for f in [pool.submit(caller, c) for c in calls]]
    for texts, out in zip(calls, results):
        check_rows(row, out, texts)  # each caller exactly its own rows
    assert len(wire) < len(calls)  # combined
    assert all(len(b) <= (limit or row.default_limit) for b in wire)
    assert emu.stats(row.service)["refused"] == {}
    assert Counter(t for b in wire for t in b) == Counter(t for c in calls for t in c)
    for batch in wire:  # a caller's texts travel together, in its order
        for texts in calls:
            if texts[0] in batch:
                i = batch.index(texts[0])
                assert batch[i:i + len(texts)] == texts


# -- normalisation ----------------------------------------------------------------------------------

def test_normalised_rows_have_unit_norm(build, row) -> None:
    if row.no_normalize:
        pytest.skip(row.no_normalize)
    assert row.loose is not None
    ai = build()
    texts = ["abc", "de", "a longer text here", "x"]
    loose = embed(ai, row, texts, **row.loose)
    norms = np.linalg.norm(loose, axis=1)
    assert not np.allclose(norms, 1.0)  # the server's own vectors are not unit length here
    client = embed(ai, row, texts, **row.loose, normalize_on_client=True)
    assert client.dtype == np.float32 and client.shape == loose.shape
    np.testing.assert_allclose(np.linalg.norm(client, axis=1), 1.0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(client, loose / norms[:, None], rtol=0, atol=1e-6)
    if row.server_normalize is not None:
        server = embed(ai, row, texts, **row.server_normalize)
        np.testing.assert_allclose(np.linalg.norm(server, axis=1), 1.0, rtol=0, atol=1e-5)
        check_rows(row, server, texts)


# -- large input ------------------------------------------------------------------------------------

def test_a_large_input_equals_the_small_calls_results(build, emu, row, wire) -> None:
    ai = build()
    texts = texts_for("large", 600)
    whole = embed(ai, row, texts)
    check_rows(row, whole, texts)
    limit = min(row.default_limit, DEFAULT_BATCH)
    assert len(wire) == math.ceil(len(texts) / limit)
    assert in_order(wire, texts) == texts
    wire.clear()
    parts = [embed(ai, row, texts[i:i + 50]) for i in range(0, len(texts), 50)]
    assert np.array_equal(whole, np.vstack(parts))
    assert Counter(t for b in wire for t in b) == Counter(texts)
