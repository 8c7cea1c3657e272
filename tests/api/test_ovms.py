"""OpenVINO Model Server: the official KServe v2 client (``tritonclient.http``) against the
emulator (proof of the wire format, JSON and binary), and our backend end to end over real
HTTP: health, metadata, infer for every datatype both ways, dynamic shapes, a large tensor in
binary both ways, versions, typed errors, TF-Serving and the OpenAI-compatible ``/v3``."""

from __future__ import annotations

import numpy as np
import pytest

import ipfs_accelerate_api as ia
from ipfs_accelerate_api.backends.ovms import BINARY_THRESHOLD, DATATYPES
from ipfs_accelerate_api.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    ResponseFormatError,
)

from .conftest import concurrently

th = pytest.importorskip("tritonclient.http")


@pytest.fixture
def ovms(backends):
    return lambda **options: backends("ovms", **{"api_key": None, **options})


@pytest.fixture
def service(emu):
    return emu.services["ovms"]


@pytest.fixture
def triton(emu):
    client = th.InferenceServerClient(emu.base_url("ovms")[len("http://"):])
    yield client
    client.close()


def sample(datatype: str, n: int = 5) -> np.ndarray:
    """``n`` values of ``datatype`` that span its range (the extremes included)."""
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        return np.array([f"v{i}-é".encode() for i in range(n)], dtype=object)
    if datatype == "BOOL":
        return np.arange(n) % 2 == 0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([info.min, info.max, 0, 1, info.max // 3][:n], dtype=dtype)
    return np.array([-1.5, 0.0, 2.25, 1e4, -3e-3][:n], dtype=dtype)


# -- the official client ----------------------------------------------------------------------
def test_triton_client_health_and_metadata(triton, service) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("scale") and triton.is_model_ready("scale", "1")
    assert not triton.is_model_ready("no-such-model")
    meta = triton.get_model_metadata("mixed")
    assert meta["name"] == "mixed" and meta["platform"] == "OpenVINO"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("ids", "INT64", [-1]), ("text", "BYTES", [-1])]
    service.ready = False
    assert not triton.is_server_ready() and not triton.is_model_ready("scale")


@pytest.mark.parametrize("binary", [True, False])
def test_triton_client_infer(triton, service, binary: bool) -> None:
    x = th.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([[1, 2, 3, 4]], np.float32), binary_data=binary)
    res = triton.infer("scale", [x], model_version="1",
                       outputs=[th.InferRequestedOutput("y", binary_data=binary)])
    np.testing.assert_array_equal(res.as_numpy("y"), [[2, 4, 6, 8]])
    assert res.as_numpy("y").dtype == np.float32
    assert (service.binary_requests, service.binary_answers) == ((1, 1) if binary else (0, 0))


def test_triton_client_bytes_and_int64(triton) -> None:
    ids = th.InferInput("ids", [3], "INT64")
    ids.set_data_from_numpy(np.array([1, 2, 2 ** 40], np.int64), binary_data=True)
    text = th.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(np.array([b"ab", b"", b"xyz"], dtype=object), binary_data=False)
    res = triton.infer("mixed", [ids, text])
    np.testing.assert_array_equal(res.as_numpy("ids"), [2, 4, 2 ** 41])
    assert list(res.as_numpy("text")) == [b"AB", b"", b"XYZ"]
    np.testing.assert_array_equal(res.as_numpy("lengths"), [2, 0, 3])
    np.testing.assert_array_equal(res.as_numpy("even"), [False, True, True])


def test_triton_client_sees_errors(triton) -> None:
    from tritonclient.utils import InferenceServerException

    x = th.InferInput("x", [1, 3], "FP32")
    x.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="Invalid input shape"):
        triton.infer("scale", [x])
    with pytest.raises(InferenceServerException, match="not found"):
        triton.get_model_metadata("no-such-model")


# -- our backend: KServe v2 ---------------------------------------------------------------------
def test_health_metadata_and_readiness(ovms, service) -> None:
    b = ovms()
    assert b.server_live() and b.server_ready()
    assert b.server_metadata()["name"] == "OpenVINO Model Server"
    assert b.model_ready("scale") and b.model_ready("scale", version=2)
    assert not b.model_ready("no-such-model") and not b.model_ready("scale", version=9)
    meta = b.model_metadata("dynamic")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    service.ready = False
    assert not b.server_ready() and b.server_live()


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
@pytest.mark.parametrize("binary", [False, True])
def test_infer_every_datatype(ovms, service, datatype: str, binary: bool) -> None:
    b = ovms()
    if binary:
        b.binary_threshold = 0  # every tensor goes binary
    x = sample(datatype)
    out = b.infer(f"echo_{datatype.lower()}", {"x": x})
    assert set(out) == {"y"}
    assert out["y"].dtype == DATATYPES[datatype] and out["y"].shape == x.shape
    assert list(out["y"]) == list(x)
    assert (service.binary_requests, service.binary_answers) == ((1, 1) if binary else (0, 0))


def test_infer_mixed_multi_input_and_chosen_outputs(ovms) -> None:
    b = ovms()
    ids = np.array([[1, 2], [3, 4]], np.int64)  # [-1] takes any length, not any rank
    with pytest.raises(BadRequestError, match="Invalid input shape"):
        b.infer("mixed", {"ids": ids, "text": np.array([b"a"] * 4, dtype=object)})
    out = b.infer("mixed", {"ids": np.array([5, 6]), "text": np.array(["ä", "bc"], dtype=object)},
                  outputs=["text", "even"])
    assert set(out) == {"text", "even"}
    assert list(out["text"]) == ["ä".encode(), b"BC"]  # bytes.upper: ASCII only, as the model
    assert out["even"].dtype == bool and list(out["even"]) == [False, True]


def test_large_tensor_goes_binary_both_ways(ovms, service) -> None:
    b = ovms()
    big = np.random.default_rng(0).standard_normal((1024, 64)).astype(np.float32)
    assert big.nbytes > BINARY_THRESHOLD
    out = b.infer("dynamic", big)  # a single array: the input's name comes from the metadata
    np.testing.assert_array_equal(out["y"], big + 1)
    assert out["y"].shape == (1024, 64) and out["y"].dtype == np.float32
    assert (service.binary_requests, service.binary_answers) == (1, 1)
    small = big[:2]
    np.testing.assert_array_equal(b.infer("dynamic", small)["y"], small + 1)
    assert (service.binary_requests, service.binary_answers) == (1, 1)  # JSON both ways
    b.infer("dynamic", small, binary_outputs=True)
    assert (service.binary_requests, service.binary_answers) == (1, 2)


def test_single_array_input_reads_metadata_once(ovms, emu) -> None:
    b = ovms()
    x = np.ones((1, 4), np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(b.infer("scale", x)["y"], x * 3)  # latest version: 2
    assert emu.stats("ovms")["by_path"]["/v2/models/scale"] == 1
    with pytest.raises(ValueError, match="2 inputs"):
        b.infer("mixed", np.array([1]))


def test_versions(ovms) -> None:
    b = ovms()
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(b.infer("scale", {"x": x}, version=1)["y"], x * 2)
    np.testing.assert_array_equal(b.infer("scale", {"x": x}, version="2")["y"], x * 3)
    with pytest.raises(NotFoundError, match="version"):
        b.infer("scale", {"x": x}, version=7)


def test_errors_are_typed(ovms, emu) -> None:
    b = ovms()
    with pytest.raises(NotFoundError, match="Model with requested name is not found") as e:
        b.infer("no-such-model", {"x": np.zeros((1, 4), np.float32)})
    assert e.value.status == 404
    with pytest.raises(NotFoundError):
        b.model_metadata("no-such-model")
    with pytest.raises(BadRequestError, match="Invalid input shape") as e:
        b.infer("scale", {"x": np.zeros((1, 3), np.float32)})
    assert e.value.status == 400
    with pytest.raises(BadRequestError, match="Invalid input precision"):
        b.infer("scale", {"x": np.zeros((1, 4), np.float64)})
    with pytest.raises(BadRequestError, match="Missing input"):
        b.infer("scale", {"y": np.zeros((1, 4), np.float32)})
    with pytest.raises(BadRequestError, match="Invalid input shape"):  # binary too
        b.binary_threshold = 0
        b.infer("scale", {"x": np.zeros((1, 5), np.float32)})
    with pytest.raises(TypeError):
        b.infer("scale", {"x": np.zeros((1, 4), np.complex64)})
    with pytest.raises(ValueError):
        b.infer("", {"x": np.zeros((1, 4), np.float32)})
    # every refusal came from the server (none invented here), the last two never left
    assert emu.stats("ovms")["by_path"]["/v2/models/scale/infer"] == 4


def test_async_and_submit_forms(ovms) -> None:
    b = ovms()
    fut = b.submit("infer", model="scale", inputs={"x": np.ones((1, 4), np.float32)}, version=1)
    np.testing.assert_array_equal(fut.result()["y"], [[2, 2, 2, 2]])


# -- TF Serving --------------------------------------------------------------------------------
def test_tfs_predict_and_status(ovms) -> None:
    b = ovms()
    assert b.predict("scale", instances=[[1, 2, 3, 4]], version=1) == [[2, 4, 6, 8]]
    assert b.predict("scale", inputs=np.array([[1, 1, 1, 1]], np.float32)) == [[3, 3, 3, 3]]
    rows = b.predict("echo_int32", instances=[{"x": 1}, {"x": 2}])
    assert rows == [1, 2]
    status = b.model_status("scale")
    assert [s["version"] for s in status] == ["1", "2"]
    assert all(s["state"] == "AVAILABLE" for s in status)
    assert [s["version"] for s in b.model_status("scale", version=1)] == ["1"]
    with pytest.raises(NotFoundError):
        b.model_status("no-such-model")
    with pytest.raises(ValueError):
        b.predict("scale", instances=[[1]], inputs=[[1]])


# -- the OpenAI-compatible /v3 ----------------------------------------------------------------
def test_v3_routes_by_the_openai_adapter(ovms, emu) -> None:
    b = ovms()
    msgs = [{"role": "user", "content": "hello"}]
    reply = b.chat(msgs, model="ovms-llm")
    assert reply.text
    streamed = "".join(c.text for c in b.stream_chat(msgs, model="ovms-llm"))
    assert streamed == reply.text
    assert b.complete("once upon", model="ovms-llm").text
    vectors = b.embed(["a", "b", "c"], model="ovms-embed")
    assert vectors.shape[0] == 3 and vectors.dtype == np.float32
    assert set(b.list_models()) >= {"ovms-llm", "ovms-embed"}
    paths = emu.stats("ovms")["by_path"]
    assert {"/v3/chat/completions", "/v3/completions", "/v3/embeddings", "/v3/models"} <= set(paths)
    with pytest.raises(NotFoundError, match="graph"):
        b.chat(msgs, model="not-a-graph")


def test_key_guards_only_v3(ovms, service) -> None:
    service.config.keys = ("ovms-key",)
    anon, keyed = ovms(), ovms(api_key="ovms-key")
    x = {"x": np.ones((1, 4), np.float32)}
    assert anon.server_live()
    np.testing.assert_array_equal(anon.infer("scale", x, version=1)["y"], x["x"] * 2)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(AuthenticationError):
        anon.chat(msgs, model="ovms-llm")
    assert keyed.chat(msgs, model="ovms-llm").text


def test_base_url_from_environment(monkeypatch, emu) -> None:
    monkeypatch.setenv("OVMS_API_URL", emu.base_url("ovms"))
    with ia.backend("ovms") as b:
        assert b.base_url == emu.base_url("ovms") and b.server_live()
    monkeypatch.delenv("OVMS_API_URL")
    monkeypatch.delenv("OVMS_API_KEY", raising=False)
    with ia.backend("ovms") as b:
        assert b.base_url == "http://127.0.0.1:8000"


# -- concurrent small infers combined by the engine's batcher ----------------------------------
def _infer_all(b, model: str, calls: list, **kw) -> list:
    return concurrently(lambda inputs: b.infer(model, inputs, **kw), calls)


def test_concurrent_infers_are_combined_along_the_batch_dimension(ovms, emu) -> None:
    emu.config("ovms").latency = 0.02  # answers overlap, so calls queue behind one in flight
    b = ovms()
    rng = np.random.default_rng(3)
    calls = [{"x": rng.standard_normal((1 + i % 3, 64)).astype(np.float32)} for i in range(48)]
    outs = _infer_all(b, "dynamic", calls)
    for inputs, out in zip(calls, outs):  # each caller gets exactly its own rows
        assert set(out) == {"y"} and out["y"].dtype == np.float32
        np.testing.assert_array_equal(out["y"], inputs["x"] + np.float32(1))
    sent = emu.stats("ovms")["by_path"]["/v2/models/dynamic/infer"]
    assert sent < len(calls)
    assert emu.stats("ovms")["by_path"]["/v2/models/dynamic"] == 1  # metadata read once


def test_multi_input_models_combine_every_input_and_output(ovms, emu) -> None:
    emu.config("ovms").latency = 0.02
    b = ovms()
    calls = [{"ids": np.array([i, i + 1], np.int64),
              "text": np.array([f"t{i}".encode(), b"x"], dtype=object)} for i in range(32)]
    outs = _infer_all(b, "mixed", calls)
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out["ids"], [2 * i, 2 * i + 2])
        assert out["text"].tolist() == [f"T{i}".encode(), b"X"]
        np.testing.assert_array_equal(out["lengths"], [len(f"t{i}"), 1])
    assert emu.stats("ovms")["by_path"]["/v2/models/mixed/infer"] < len(calls)


def test_a_fixed_batch_dimension_is_never_combined(ovms, emu) -> None:
    emu.config("ovms").latency = 0.01
    b = ovms()
    calls = [{"x": np.full((1, 4), i, np.float32)} for i in range(24)]
    outs = _infer_all(b, "scale", calls, version=1)
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out["y"], np.full((1, 4), 2 * i, np.float32))
    assert emu.stats("ovms")["by_path"]["/v2/models/scale/versions/1/infer"] == len(calls)


def test_calls_that_differ_are_not_combined(ovms, emu, service) -> None:
    """Different inner shapes (or outputs asked for) cannot share a tensor: each group is
    combined only with itself, and everyone still gets the right answer."""
    t = {"name": "x", "datatype": "INT64", "shape": [-1, -1]}
    service.models_table["wide"] = {"versions": {"1": lambda x: {"y": x["x"]}},
                                    "inputs": [t], "outputs": [{**t, "name": "y"}]}
    emu.config("ovms").latency = 0.02
    b = ovms()
    calls = [np.full((1, 1 + i % 2), i, np.int64) for i in range(24)]  # (1,1) and (1,2) rows
    outs = _infer_all(b, "wide", [{"x": c} for c in calls])
    for c, out in zip(calls, outs):
        np.testing.assert_array_equal(out["y"], c)
    assert emu.stats("ovms")["by_path"]["/v2/models/wide/infer"] < len(calls)
    outs = _infer_all(b, "mixed", [{"ids": np.array([i], np.int64),
                                    "text": np.array([b"a"], dtype=object)} for i in range(8)],
                      outputs=["ids"])
    assert all(set(o) == {"ids"} for o in outs)
    assert [int(o["ids"][0]) for o in outs] == [2 * i for i in range(8)]


def test_a_batch_answer_with_the_wrong_rows_fails_its_callers(ovms, emu, service) -> None:
    """A model that drops rows cannot be split back per caller: those callers get a
    ResponseFormatError, never another caller's rows."""
    service.models_table["lossy"] = {"versions": {"1": lambda x: {"y": x["x"][:1]}},
                                     "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
                                     "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]}
    emu.config("ovms").latency = 0.02
    b = ovms()
    calls = [{"x": np.full((1, 2), i, np.float32)} for i in range(32)]
    outs = _infer_all(b, "lossy", calls)
    failed = [o for o in outs if isinstance(o, Exception)]
    assert failed and all(isinstance(o, ResponseFormatError) for o in failed)
    for i, out in enumerate(outs):
        if not isinstance(out, Exception):
            np.testing.assert_array_equal(out["y"], calls[i]["x"])


def test_batching_off_sends_each_call_alone(ovms, emu) -> None:
    emu.config("ovms").latency = 0.01
    b = ovms(batch_timeout=0)
    outs = _infer_all(b, "dynamic", [{"x": np.zeros((1, 64), np.float32)}] * 12)
    assert all(np.all(o["y"] == 1) for o in outs)
    assert emu.stats("ovms")["by_path"]["/v2/models/dynamic/infer"] == 12
