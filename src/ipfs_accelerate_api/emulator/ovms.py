"""OpenVINO Model Server, emulated (see shared PROTOCOLS.md section 8).

Routes below ``/ovms`` (the prefix is the base URL, as OVMS's ``--rest_port`` root):

- KServe v2: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/{m}[/versions/{v}]`` (metadata), ``.../ready``, ``POST .../infer`` (JSON, or the
  binary-data extension both ways: ``Inference-Header-Content-Length``, per-input
  ``binary_data_size``, per-output ``binary_data`` or request-level ``binary_data_output``).
- TensorFlow Serving: ``GET /v1/models/{m}[/versions/{v}]`` (status), ``POST ...:predict``
  (``instances`` or ``inputs``).
- OpenAI-compatible ``/v3/chat/completions``, ``/v3/completions``, ``/v3/embeddings``,
  ``/v3/models`` (the OpenAI service's, with OVMS's ``{"error": "..."}`` bodies); the model
  must be a served graph name (:data:`GRAPHS`).

Models (:data:`MODELS`; ``service.models_table`` may be changed by a test): ``scale`` (FP32
[1,4] ``x`` -> ``y`` = 2x), ``dynamic`` (FP32 [-1,64] ``x`` -> ``y`` = x + 1), ``mixed``
(INT64 [-1] ``ids`` and BYTES [-1] ``text`` -> ``ids`` doubled, ``text`` upper-cased,
``lengths`` INT32, ``even`` BOOL) and ``echo_<dtype>`` for every datatype ([-1] ``x`` -> ``y``
unchanged). Versions: each has version 1 (``scale`` has 1 and 2; 2 scales by 3).

Errors as OVMS answers them: ``{"error": "..."}``; 404 for an unknown model or version, 400
for a missing input, a wrong datatype or shape, data that does not match the shape, or a
malformed body. No key by default; with ``ServiceConfig(keys=...)`` only ``/v3`` wants
``Authorization: Bearer`` (as ``--api_key_file``). ``ready = False`` makes
``/v2/health/ready`` and every model's ``/ready`` answer 503. ``binary_requests`` and
``binary_answers`` count the infer exchanges that used the binary extension.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import numpy as np

from ._rules import Violation
from ._server import Reply, Request, Route, ServiceConfig
from .openai import OpenAIService

__all__ = ["GRAPHS", "MODELS", "OVMSService"]

GRAPHS = ("ovms-llm", "ovms-embed")
DTYPES = {"BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
          "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2",
          "FP32": "<f4", "FP64": "<f8", "BYTES": "O"}


def _t(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def _mixed(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    text = x["text"]
    return {"ids": x["ids"] * 2,
            "text": np.array([bytes(v).upper() for v in text.reshape(-1)] or [],
                             dtype=object).reshape(text.shape),
            "lengths": np.array([len(v) for v in text.reshape(-1)], dtype="<i4").reshape(text.shape),
            "even": (x["ids"] % 2 == 0)}


MODELS: dict[str, dict[str, Any]] = {
    "scale": {"versions": {"1": lambda x: {"y": x["x"] * np.float32(2)},
                           "2": lambda x: {"y": x["x"] * np.float32(3)}},
              "inputs": [_t("x", "FP32", [1, 4])], "outputs": [_t("y", "FP32", [1, 4])]},
    "dynamic": {"versions": {"1": lambda x: {"y": x["x"] + np.float32(1)}},
                "inputs": [_t("x", "FP32", [-1, 64])], "outputs": [_t("y", "FP32", [-1, 64])]},
    "mixed": {"versions": {"1": _mixed},
              "inputs": [_t("ids", "INT64", [-1]), _t("text", "BYTES", [-1])],
              "outputs": [_t("ids", "INT64", [-1]), _t("text", "BYTES", [-1]),
                          _t("lengths", "INT32", [-1]), _t("even", "BOOL", [-1])]},
    **{f"echo_{d.lower()}": {"versions": {"1": lambda x: {"y": x["x"]}},
                             "inputs": [_t("x", d, [-1])], "outputs": [_t("y", d, [-1])]}
       for d in DTYPES},
}


class _Bad(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _shape_text(shape: Any) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def _decode_tensor(t: dict[str, Any], spec: dict[str, Any], blob: bytes | None) -> np.ndarray:
    name, datatype, shape = spec["name"], spec["datatype"], spec["shape"]
    if t.get("datatype") != datatype:
        raise _Bad(400, f"Invalid input precision - Expected: {datatype}; "
                        f"Actual: {t.get('datatype')}; input name: {name}")
    got = t.get("shape")
    if (not isinstance(got, list) or len(got) != len(shape)
            or any(type(g) is not int or g < 0 or (s != -1 and g != s) for g, s in zip(got, shape))):
        raise _Bad(400, f"Invalid input shape - Expected: {_shape_text(shape)}; "
                        f"Actual: {_shape_text(got if isinstance(got, list) else [])}; "
                        f"input name: {name}")
    count = int(np.prod(got)) if got else 1
    if blob is not None:
        if datatype == "BYTES":
            items, i = [], 0
            while i + 4 <= len(blob):
                n = int.from_bytes(blob[i:i + 4], "little")
                items.append(blob[i + 4:i + 4 + n])
                i += 4 + n
            if i != len(blob) or len(items) != count:
                raise _Bad(400, f"Invalid number of elements in BYTES input {name}")
            arr = np.empty(count, dtype=object)
            arr[:] = items
            return arr.reshape(got)
        dt = np.dtype(DTYPES[datatype])
        if len(blob) != count * dt.itemsize:
            raise _Bad(400, f"Invalid content size of tensor proto - Expected: "
                            f"{count * dt.itemsize} bytes; Actual: {len(blob)} bytes; "
                            f"input name: {name}")
        return np.frombuffer(blob, dtype=dt).reshape(got).copy()
    flat: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                walk(x)
        else:
            flat.append(v)

    if "data" not in t:
        raise _Bad(400, f"Missing data for input: {name}")
    walk(t["data"])
    if len(flat) != count:
        raise _Bad(400, f"Invalid number of elements in input {name} - Expected: {count}; "
                        f"Actual: {len(flat)}")
    try:
        if datatype == "BYTES":
            if not all(isinstance(v, str) for v in flat):
                raise TypeError
            arr = np.empty(count, dtype=object)
            arr[:] = [v.encode() for v in flat]
            return arr.reshape(got)
        if datatype == "BOOL" and not all(type(v) is bool for v in flat):
            raise TypeError
        if datatype[0] in "IU" and not all(type(v) is int for v in flat):
            raise TypeError
        if datatype.startswith("FP") and not all(type(v) in (int, float) for v in flat):
            raise TypeError
        return np.array(flat, dtype=DTYPES[datatype]).reshape(got)
    except (TypeError, ValueError, OverflowError):
        raise _Bad(400, f"Invalid data for input {name} of datatype {datatype}") from None


def _encode_tensor(name: str, datatype: str, arr: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes]:
    out: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
    if binary:
        if datatype == "BYTES":
            raw = b"".join(len(v).to_bytes(4, "little") + bytes(v) for v in arr.reshape(-1))
        else:
            raw = np.ascontiguousarray(arr, dtype=DTYPES[datatype]).tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        return out, raw
    flat = arr.reshape(-1)
    out["data"] = ([bytes(v).decode() for v in flat] if datatype == "BYTES" else flat.tolist())
    return out, b""


class OVMSService(OpenAIService):
    name = "ovms"
    models = list(GRAPHS)
    _MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
    _TFS = r"/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
    routes = (
        Route("GET", r"/v2", "server_metadata"),
        Route("GET", r"/v2/health/live", "live"),
        Route("GET", r"/v2/health/ready", "ready_server"),
        Route("GET", _MODEL, "metadata"),
        Route("GET", _MODEL + r"/ready", "model_ready"),
        Route("POST", _MODEL + r"/infer", "infer"),
        Route("GET", _TFS, "tfs_status"),
        Route("POST", _TFS + r":predict", "tfs_predict"),
        *(Route(r.method, "/v3" + r.pattern[3:], r.handler, r.rules)
          for r in OpenAIService.routes
          if r.pattern in (r"/v1/chat/completions", r"/v1/completions", r"/v1/embeddings",
                           r"/v1/models")),
    )

    def __init__(self, config: ServiceConfig, seed: int) -> None:
        if config.keys is None:  # OVMS without --api_key_file: open
            config = dataclasses.replace(config, keys=())
        super().__init__(config, seed)
        self.models_table = dict(MODELS)
        self.ready = True
        #: Infer requests that came / answers that went with the binary-data extension.
        self.binary_requests = 0
        self.binary_answers = 0

    # -- conventions ------------------------------------------------------------------------
    def read_key(self, req: Request) -> str | None:
        if not req.path.startswith("/v3"):  # the key guards only the generative API
            return self.config.keys[0] if self.config.keys else ""
        return super().read_key(req)

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        return Reply(status, {"error": message}, dict(headers or {}))

    def reject(self, violation: Violation) -> Reply:
        return self.error(400, violation.message, "invalid_request_error")

    def unknown_model(self, model: str) -> Reply:
        return self.error(404, "Mediapipe graph definition with requested name is not found",
                          "not_found")

    def internal_error(self) -> Reply:
        return self.error(500, "Internal server error", "server_error")

    def ratelimit_headers(self, rpm: Any, tpm: Any) -> dict[str, str]:
        return {}

    def stream_error_chunk(self) -> bytes:
        return b'{"error": "Response generation failed"}\n\n'

    def _headers(self) -> dict[str, str]:
        return {}

    def _model(self, req: Request) -> tuple[str, dict[str, Any], str]:
        name, version = req.params["model"], req.params.get("version")
        spec = self.models_table.get(name)
        if spec is None:
            raise _Bad(404, "Model with requested name is not found")
        versions = spec["versions"]
        if version is None:
            version = max(versions, key=int)
        elif version not in versions:
            raise _Bad(404, "Model with requested version is not found")
        return name, spec, version

    def _guarded(self, fn: Callable[[Request], Reply], req: Request) -> Reply:
        try:
            return fn(req)
        except _Bad as exc:
            return self.error(exc.status, exc.message, "error")

    # -- KServe v2 ----------------------------------------------------------------------------
    def server_metadata(self, req: Request) -> Reply:
        return Reply(200, {"name": "OpenVINO Model Server", "version": "2026.2.0.emulator"})

    def live(self, req: Request) -> Reply:
        return Reply(200, {})

    def ready_server(self, req: Request) -> Reply:
        return Reply(200 if self.ready else 503, {})

    def metadata(self, req: Request) -> Reply:
        def answer(req: Request) -> Reply:
            name, spec, _ = self._model(req)
            return Reply(200, {"name": name, "versions": sorted(spec["versions"], key=int),
                               "platform": "OpenVINO", "inputs": spec["inputs"],
                               "outputs": spec["outputs"], "rt_info": {}})
        return self._guarded(answer, req)

    def model_ready(self, req: Request) -> Reply:
        def answer(req: Request) -> Reply:
            self._model(req)
            return Reply(200 if self.ready else 503, {})
        return self._guarded(answer, req)

    def infer(self, req: Request) -> Reply:
        return self._guarded(self._infer, req)

    def _infer(self, req: Request) -> Reply:
        name, spec, version = self._model(req)
        body, rest = req.body, b""
        length = req.headers.get("inference-header-content-length")
        if length is not None:
            if not length.strip().isdigit() or int(length) > len(body):
                raise _Bad(400, "Inference-Header-Content-Length is invalid")
            body, rest = body[:int(length)], body[int(length):]
            with self._lock:
                self.binary_requests += 1
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Bad(400, "JSON parse error: the request is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
            raise _Bad(400, "Invalid request: no inputs")
        given, offset = {}, 0
        for t in data["inputs"]:
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise _Bad(400, "Invalid request: an input has no name")
            given[t["name"]] = t
        arrays = {}
        for ispec in spec["inputs"]:
            t = given.pop(ispec["name"], None)
            if t is None:
                raise _Bad(400, f"Missing input with specific name - Required input: "
                                f"{ispec['name']}")
            size = (t.get("parameters") or {}).get("binary_data_size")
            blob = None
            if size is not None:
                if type(size) is not int or size < 0 or offset + size > len(rest):
                    raise _Bad(400, f"Invalid binary_data_size for input {ispec['name']}")
                blob, offset = rest[offset:offset + size], offset + size
            arrays[ispec["name"]] = _decode_tensor(t, ispec, blob)
        if given:
            raise _Bad(400, f"Unexpected input name: {next(iter(given))}")
        if offset != len(rest):
            raise _Bad(400, "Binary data left over after all inputs")
        results = spec["versions"][version](arrays)
        params = data.get("parameters") or {}
        all_binary = bool(params.get("binary_data_output"))
        wanted = data.get("outputs")
        declared = {o["name"]: o["datatype"] for o in spec["outputs"]}
        if wanted is None:
            chosen = [(o, all_binary) for o in declared]
        else:
            chosen = []
            for o in wanted:
                oname = o.get("name") if isinstance(o, dict) else None
                if oname not in declared:
                    raise _Bad(404, f"Output with requested name is not found: {oname}")
                chosen.append((oname, bool((o.get("parameters") or {}).get("binary_data",
                                                                           all_binary))))
        outs, blobs = [], []
        for oname, binary in chosen:
            t, raw = _encode_tensor(oname, declared[oname], results[oname], binary)
            outs.append(t)
            blobs.append(raw)
        answer: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outs}
        if "id" in data:
            answer["id"] = data["id"]
        head = json.dumps(answer).encode()
        if not any(blobs):
            return Reply(200, head)
        with self._lock:
            self.binary_answers += 1
        return Reply(200, head + b"".join(blobs),
                     {"Inference-Header-Content-Length": str(len(head))},
                     content_type="application/octet-stream")

    # -- TensorFlow Serving -------------------------------------------------------------------
    def tfs_status(self, req: Request) -> Reply:
        def answer(req: Request) -> Reply:
            _, spec, version = self._model(req)
            versions = [version] if req.params.get("version") else sorted(spec["versions"], key=int)
            return Reply(200, {"model_version_status": [
                {"version": v, "state": "AVAILABLE",
                 "status": {"error_code": "OK", "error_message": ""}} for v in versions]})
        return self._guarded(answer, req)

    def tfs_predict(self, req: Request) -> Reply:
        return self._guarded(self._predict, req)

    def _predict(self, req: Request) -> Reply:
        _, spec, version = self._model(req)
        try:
            data = json.loads(req.body)
        except (ValueError, UnicodeDecodeError):
            raise _Bad(400, "JSON Parse error: the request is not valid JSON") from None
        if not isinstance(data, dict) or ("instances" in data) == ("inputs" in data):
            raise _Bad(400, "Missing 'inputs' or 'instances' key")
        names = [s["name"] for s in spec["inputs"]]
        row = "instances" in data
        value = data["instances"] if row else data["inputs"]
        if row:
            if not isinstance(value, list):
                raise _Bad(400, "'instances' must be a list")
            cols = ({n: [inst[n] for inst in value] for n in names}
                    if value and all(isinstance(i, dict) for i in value) else {names[0]: value})
        else:
            cols = value if isinstance(value, dict) else {names[0]: value}
        arrays = {}
        for ispec in spec["inputs"]:
            if ispec["name"] not in cols:
                raise _Bad(400, f"Missing input with specific name - Required input: "
                                f"{ispec['name']}")
            try:
                arr = np.array(cols[ispec["name"]])
            except ValueError:
                raise _Bad(400, f"Invalid input shape for {ispec['name']}") from None
            if ispec["datatype"] == "BYTES" or arr.dtype.kind not in "biuf":
                raise _Bad(400, "Only numeric data is supported")
            t = {"datatype": ispec["datatype"], "shape": list(arr.shape), "data": arr.tolist()}
            arrays[ispec["name"]] = _decode_tensor(t, ispec, None)
        results = spec["versions"][version](arrays)
        if row:
            n = len(next(iter(results.values())))
            if len(results) == 1:
                preds: Any = next(iter(results.values())).tolist()
            else:
                preds = [{k: v[i].tolist() for k, v in results.items()} for i in range(n)]
            return Reply(200, {"predictions": preds})
        outs = {k: v.tolist() for k, v in results.items()}
        return Reply(200, {"outputs": next(iter(outs.values())) if len(outs) == 1 else outs})
