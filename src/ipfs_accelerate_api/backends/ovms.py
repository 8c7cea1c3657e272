"""OpenVINO Model Server (OVMS), PROTOCOLS.md §8.

- KServe v2 REST: ``server_live()``, ``server_ready()``, ``server_metadata()``,
  ``model_ready(model, version=None)`` (the status code is the answer: 200 True, 4xx False),
  ``model_metadata(model, version=None)`` (cached per model and version) and
  ``infer(model, inputs, *, outputs=None, version=None, binary_outputs=None)``. ``inputs`` is a
  dict name -> numpy array, or one array for a model with a single input (its name is read from
  the metadata). The answer is a dict name -> numpy array with the datatype and shape the
  server declared (BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64, BYTES; BYTES come back
  as an object array of ``bytes``). Tensors up to :data:`BINARY_THRESHOLD` bytes travel as JSON;
  larger ones with the binary-data extension (``Inference-Header-Content-Length``, raw
  little-endian bytes, BYTES elements each prefixed by a 4-byte length), and the outputs are
  then asked for in binary too (``binary_outputs=True/False`` decides it explicitly).
  Concurrent small ``infer`` calls on one model are combined into one request along the first
  dimension, when the model's metadata says every input and output has a dynamic (-1) first
  (batch) dimension and the calls agree on everything else (input names, datatypes, the other
  dimensions, ``outputs``, ``version``); each caller gets its own rows back. The first
  ``infer`` on a model reads its metadata once (cached) to know this.
- TensorFlow-Serving REST (servers before 2026.3): ``predict(model, instances=... | inputs=...,
  version=None)`` and ``model_status(model, version=None)``.
- OpenAI-compatible ``/v3`` (LLM and embedding graphs): ``chat``, ``stream_chat``,
  ``complete``, ``embed``, ``list_models``, by the OpenAI adapter with ``api_prefix = "/v3"``.
- Errors are ``{"error": "..."}``, mapped by status (404 unknown model or version:
  ``NotFoundError``; 400 a bad shape or datatype: ``BadRequestError``).
- No key by default; with ``--api_key_file`` the ``/v3`` routes want ``Authorization: Bearer``
  (``OVMS_API_KEY``). The base URL: ``base_url=``, else ``OVMS_API_URL``, else
  ``http://127.0.0.1:8000``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import numpy as np

from .._enums import Priority
from ..engine import OpResult, check_priority
from ..engine.batching import BatchKind
from ..errors import ResponseFormatError
from ..transport import Response
from ._shape import as_dict, as_list, as_str, field
from .base import OnceCache, Plan, check_model
from .openai import OpenAIBackend

__all__ = ["BINARY_THRESHOLD", "DATATYPES", "OVMSBackend", "decode_infer_response"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
URL_ENV = "OVMS_API_URL"
#: Tensors larger than this (bytes) are sent with the binary-data extension.
BINARY_THRESHOLD = 64 * 1024
#: KServe datatype -> numpy dtype (little-endian; BYTES is an object array of bytes).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}


def datatype_of(arr: np.ndarray) -> str:
    """The KServe datatype of a numpy array."""
    name = _DATATYPE_OF.get(arr.dtype)
    if name is None:
        name = _datatype(arr.dtype)
        if len(_DATATYPE_OF) < 256:
            _DATATYPE_OF[arr.dtype] = name
    return name


#: numpy dtype -> KServe datatype, as worked out once per dtype.
_DATATYPE_OF: dict[np.dtype, str] = {}


def _datatype(dtype: np.dtype) -> str:
    kind = dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{dtype.itemsize * 8}"
    if kind == "f" and dtype.itemsize in (2, 4, 8):
        return f"FP{dtype.itemsize * 8}"
    if kind in "OSU":
        return "BYTES"
    raise TypeError(f"no KServe datatype for numpy dtype {dtype}")


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"a BYTES tensor holds bytes or str, not {type(value).__name__}")


def _raw(arr: np.ndarray, datatype: str) -> bytes:
    """A tensor's binary-extension bytes (row-major, little-endian)."""
    if datatype == "BYTES":
        out = bytearray()
        for v in arr.reshape(-1):
            b = _as_bytes(v)
            out += len(b).to_bytes(4, "little") + b
        return bytes(out)
    return np.ascontiguousarray(arr, dtype=DATATYPES[datatype]).tobytes()


def _json_data(arr: np.ndarray, datatype: str) -> list[Any]:
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        return [_as_bytes(v).decode("utf-8") for v in flat]
    return flat.tolist()


def _shape(value: Any, where: str) -> tuple[int, ...]:
    dims = as_list(value, where)
    for d in dims:
        if type(d) is not int or d < 0:
            raise ResponseFormatError(f"{where} should be a list of sizes, got {value!r:.80}")
    return tuple(dims)


def _flatten(value: Any, out: list[Any], depth: int = 0) -> None:
    if depth > 64:
        raise ResponseFormatError("tensor data nested too deeply")
    if isinstance(value, list):
        for v in value:
            _flatten(v, out, depth + 1)
    else:
        out.append(value)


_BOOL, _INT, _NUMBER = frozenset({bool}), frozenset({int}), frozenset({int, float})
#: Tensors up to this many elements are checked for values beyond their type's range (a
#: check that costs less than numpy's error-state switch); larger ones go under the switch.
_SMALL = 64
#: The largest finite FP16 / FP32 value: a JSON number beyond it becomes infinity.
_FLOAT_MAX = {"FP16": float(np.finfo(np.float16).max), "FP32": float(np.finfo(np.float32).max)}


def _from_json(data: Any, datatype: str, count: int, where: str) -> np.ndarray:
    flat = as_list(data, where)
    kinds = set(map(type, flat))  # one pass in C: nested lists, and the element types
    if list in kinds:
        nested, flat = flat, []
        _flatten(nested, flat)
        kinds = set(map(type, flat))
    if len(flat) != count:
        raise ResponseFormatError(f"{where} has {len(flat)} elements, its shape says {count}")
    if datatype == "BYTES":
        return np.array([as_str(v, where).encode() for v in flat] or [], dtype=object)
    if datatype == "BOOL":
        if not kinds <= _BOOL:
            raise ResponseFormatError(f"{where} should hold booleans")
        return np.array(flat, dtype=bool)
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu":
        if not kinds <= _INT:
            raise ResponseFormatError(f"{where} should hold integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise ResponseFormatError(f"{where} holds a value out of range for {datatype}")
        return np.array(flat, dtype=dtype)
    if not kinds <= _NUMBER:
        raise ResponseFormatError(f"{where} should hold numbers")
    limit = _FLOAT_MAX.get(datatype)
    if limit is None or (len(flat) <= _SMALL and all(-limit <= v <= limit for v in flat)):
        return np.array(flat, dtype=dtype)  # nothing can overflow
    with np.errstate(over="ignore"):  # beyond the type's range: infinity, without a warning
        return np.array(flat, dtype=dtype)


def _from_binary(raw: bytes, datatype: str, count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        items, i = [], 0
        while i < len(raw):
            if i + 4 > len(raw):
                raise ResponseFormatError(f"{where}: a BYTES element's length is cut off")
            n = int.from_bytes(raw[i:i + 4], "little")
            if i + 4 + n > len(raw):
                raise ResponseFormatError(f"{where}: a BYTES element is cut off")
            items.append(raw[i + 4:i + 4 + n])
            i += 4 + n
        if len(items) != count:
            raise ResponseFormatError(f"{where} has {len(items)} elements, its shape says {count}")
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr
    dtype = DATATYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise ResponseFormatError(f"{where}: {len(raw)} bytes for {count} {datatype} elements")
    out = np.frombuffer(raw, dtype=dtype).copy()
    if datatype == "BOOL" and (out.view(np.uint8) > 1).any():
        raise ResponseFormatError(f"{where}: a BOOL byte other than 0 or 1")
    return out


def _output_head(out: Any, where: str) -> tuple[str, str, tuple[int, ...]]:
    """An output's name, datatype and shape, checked: at once when all is well (the usual
    case), field by field to say what is wrong otherwise."""
    if type(out) is dict:
        name, datatype, shape = out.get("name"), out.get("datatype"), out.get("shape")
        if (type(name) is str and type(datatype) is str and datatype in DATATYPES
                and type(shape) is list and all(type(d) is int and d >= 0 for d in shape)):
            return name, datatype, tuple(shape)
    out = as_dict(out, where)
    name = as_str(field(out, "name", where), f"{where}.name")
    datatype = as_str(field(out, "datatype", where), f"{where}.datatype")
    if datatype not in DATATYPES:
        raise ResponseFormatError(f"{where}.datatype {datatype!r:.40} is not a KServe datatype")
    return name, datatype, _shape(field(out, "shape", where), f"{where}.shape")


def decode_infer_response(data: bytes, header_length: str | None) -> dict[str, Any]:
    """A KServe v2 infer answer (JSON, or JSON followed by binary outputs) as
    ``{"model_name", "model_version", "id", "outputs": {name: ndarray}}``."""
    if header_length is not None:
        n = int(header_length.strip()) if header_length.strip().isdigit() else -1
        if n < 0 or n > len(data):
            raise ResponseFormatError(f"Inference-Header-Content-Length {header_length!r:.40} "
                                      f"does not fit a body of {len(data)} bytes")
        head, rest = data[:n], data[n:]
    else:
        head, rest = data, b""
    try:
        body = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResponseFormatError(f"infer answer is not JSON: {head[:100]!r}") from exc
    body = as_dict(body, "response")
    outputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, out in enumerate(as_list(field(body, "outputs", "response"), "outputs")):
        where = f"outputs[{i}]"
        name, datatype, shape = _output_head(out, where)
        count = math.prod(shape)
        params = out.get("parameters")
        size = as_dict(params, f"{where}.parameters").get("binary_data_size") if params else None
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(rest):
                raise ResponseFormatError(f"{where}.parameters.binary_data_size {size!r:.40} "
                                          "does not fit the binary data")
            arr = _from_binary(rest[offset:offset + size], datatype, count, where)
            offset += size
        else:
            arr = _from_json(field(out, "data", where), datatype, count, f"{where}.data")
        if name in outputs:
            raise ResponseFormatError(f"output {name!r:.40} appears twice")
        outputs[name] = arr.reshape(shape)
    if offset != len(rest):
        raise ResponseFormatError(f"{len(rest) - offset} bytes of binary data belong to no output")
    return {"model_name": body.get("model_name"), "model_version": body.get("model_version"),
            "id": body.get("id"), "outputs": outputs}


def _model_path(model: str, version: Any) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{quote(_version(version), safe='')}"
    return path


def _version(version: Any) -> str:
    if isinstance(version, bool) or not isinstance(version, (int, str)) or not str(version).strip():
        raise ValueError(f"version must be an integer or a non-empty string, got {version!r}")
    return str(version)


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(inputs.values())))


def _stack(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _unstack(outputs: Mapping[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    total = sum(sizes)
    for name, arr in outputs.items():
        if arr.ndim == 0 or len(arr) != total:
            raise ResponseFormatError(f"output {name!r} of a batch of {total} rows has shape "
                                      f"{arr.shape}")
    bounds = np.cumsum([0, *sizes]).tolist()
    return [{name: arr[a:b] for name, arr in outputs.items()}
            for a, b in zip(bounds, bounds[1:])]


#: KServe tensors, combined along the first (batch) dimension.
TENSOR_ROWS = BatchKind(size=_rows, merge=_stack, split=_unstack)


class OVMSBackend(OpenAIBackend):
    name = "ovms"
    env_prefix = "OVMS"
    default_base_url = DEFAULT_BASE_URL
    requires_key = False
    api_prefix = "/v3"
    binary_threshold = BINARY_THRESHOLD
    batched_methods = OpenAIBackend.batched_methods | {"infer"}

    # What the OpenAI adapter has and OVMS does not serve this way.
    _plan_generate_image = None  # type: ignore[assignment]
    _plan_transcribe = None  # type: ignore[assignment]
    _plan_speech = None  # type: ignore[assignment]

    def __init__(self, *, base_url: str | None = None, **options: Any) -> None:
        super().__init__(base_url=base_url or os.environ.get(URL_ENV) or None, **options)
        self._metadata = OnceCache()  # (model, version) -> metadata
        self._infer_paths: dict[Any, str] = {}
        # (model, version) -> (metadata, input names, names of the inputs when calls may be
        # combined, else None): what infer needs from the metadata, worked out once per read.
        self._infer_facts: dict[Any, tuple[Any, list[str], frozenset[str] | None]] = {}

    # -- conventions ----------------------------------------------------------------------
    def _error_message(self, body: Any) -> tuple[str, str | None]:
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"], None
        return super()._error_message(body)

    def _ratelimit_info(self, headers: Mapping[str, str]) -> Any:
        return None

    # -- KServe v2: health and metadata --------------------------------------------------------
    def server_live(self) -> bool:
        return self._probe("/v2/health/live", unreachable=None)

    def server_ready(self) -> bool:
        return self._probe("/v2/health/ready", unreachable=None)

    def model_ready(self, model: str, version: Any = None) -> bool:
        return self._probe(_model_path(check_model(model), version) + "/ready", unreachable=None)

    def server_metadata(self, *, priority: int = Priority.NORMAL) -> dict[str, Any]:
        return self._run("server_metadata", priority=priority)

    def _plan_server_metadata(self) -> Plan:
        return Plan(self._http("GET", "/v2", lambda resp: OpResult(
            as_dict(resp.json(), "server metadata"), headers=resp.headers)))

    def model_metadata(self, model: str, version: Any = None, *,
                       priority: int = Priority.NORMAL) -> dict[str, Any]:
        """``{"name", "versions", "platform", "inputs": [{"name", "datatype", "shape"}],
        "outputs": [...]}`` (shapes may hold -1 for a dynamic dimension)."""
        meta = self._run("model_metadata", model=model, version=version, priority=priority)
        self._metadata.set((model, None if version is None else str(version)), meta)
        return meta

    def _plan_model_metadata(self, *, model: str, version: Any = None) -> Plan:
        def parse(resp: Response) -> OpResult:
            meta = as_dict(resp.json(), "model metadata")
            for side in ("inputs", "outputs"):
                for i, t in enumerate(as_list(meta.get(side, []), side)):
                    t = as_dict(t, f"{side}[{i}]")
                    as_str(field(t, "name", f"{side}[{i}]"), f"{side}[{i}].name")
                    as_str(field(t, "datatype", f"{side}[{i}]"), f"{side}[{i}].datatype")
                    for d in as_list(field(t, "shape", f"{side}[{i}]"), f"{side}[{i}].shape"):
                        if type(d) is not int or d < -1:
                            raise ResponseFormatError(f"{side}[{i}].shape holds {d!r:.40}")
            return OpResult(meta, headers=resp.headers)

        return Plan(self._http("GET", _model_path(model, version), parse))

    def _cached_metadata(self, model: str, version: Any) -> dict[str, Any]:
        """The model's metadata, read once: concurrent first calls wait for one request."""
        return self._metadata.get((model, None if version is None else str(version)),  # type: ignore[no-any-return]
                                  lambda: self.model_metadata(model, version))

    def _facts(self, model: str, version: Any) -> tuple[Any, list[str], frozenset[str] | None]:
        """What ``infer`` needs from the model's metadata (see ``_infer_facts``); worked out
        again only when the metadata is read again."""
        meta = self._cached_metadata(model, version)
        key = (model, None if version is None else str(version))
        facts = self._infer_facts.get(key)
        if facts is None or facts[0] is not meta:
            inputs = meta.get("inputs", [])
            outs = meta.get("outputs") or []
            batchable = bool(outs) \
                and all(t["shape"] and t["shape"][0] == -1 for t in outs) \
                and all(t["shape"] and t["shape"][0] == -1 for t in inputs)
            names = [t["name"] for t in inputs]
            facts = (meta, names, frozenset(names) if batchable else None)
            self._infer_facts[key] = facts
        return facts

    def _input_names(self, model: str, version: Any) -> list[str]:
        return self._facts(model, version)[1]

    def _batch_group(self, model: str, version: Any, arrays: dict[str, np.ndarray],
                     outputs: Any, binary_outputs: Any) -> Any:
        """What calls must share to be combined with this one, or None when they may not:
        the model does not declare a dynamic first dimension on every input and output, the
        arrays are not exactly its inputs, or they do not have one common number of rows."""
        batchable = self._facts(model, version)[2]
        if batchable is None or batchable != arrays.keys():
            return None
        rows = {a.shape[0] if a.ndim else None for a in arrays.values()}
        if len(rows) != 1 or None in rows:
            return None
        outs_key = None if outputs is None else tuple(outputs)
        return (model, None if version is None else str(version), outs_key, binary_outputs,
                tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in arrays.items())))

    # -- KServe v2: infer -----------------------------------------------------------------------
    def infer(self, model: str, inputs: Any, *, outputs: list[str] | None = None,
              version: Any = None, binary_outputs: bool | None = None,
              priority: int = Priority.NORMAL) -> dict[str, np.ndarray]:
        """Run ``model`` on ``inputs`` (a dict name -> array, or one array for a
        single-input model); the outputs, name -> array (only ``outputs`` if given)."""
        check_priority(priority)
        arrays, plan, group = self._infer_call(model, inputs, outputs, version, binary_outputs)
        if group is None:  # alone: in this thread when the engine is idle, no future needed
            p = plan(arrays)
            return self._engine.call(p.operation, op_name="infer",  # type: ignore[no-any-return]
                                     priority=priority, est_tokens=p.est_tokens)
        return self._batched("infer", group, arrays, plan, kind=TENSOR_ROWS,  # type: ignore[no-any-return]
                             priority=priority, sync=True).result()

    def _submit_infer(self, model: str, inputs: Any, *, outputs: list[str] | None = None,
                      version: Any = None, binary_outputs: bool | None = None,
                      priority: int = Priority.NORMAL, sync: bool = False) -> Any:
        arrays, plan, group = self._infer_call(model, inputs, outputs, version, binary_outputs)
        if group is None:
            return self._send_plan("infer", plan(arrays), priority, sync)
        return self._batched("infer", group, arrays, plan, kind=TENSOR_ROWS, priority=priority,
                             sync=sync)

    def _infer_call(self, model: str, inputs: Any, outputs: list[str] | None, version: Any,
                    binary_outputs: bool | None) -> tuple[dict[str, np.ndarray], Any, Any]:
        """An ``infer`` call checked: its arrays by input name, the plan of a request for
        them (or for a batch of calls), and what calls must share to be combined with it
        (None: it is sent alone)."""
        check_model(model)
        if not isinstance(inputs, Mapping):
            names = self._input_names(model, version)
            if len(names) != 1:
                raise ValueError(f"{model} has {len(names)} inputs ({', '.join(names)}): "
                                 "pass a dict name -> array")
            inputs = {names[0]: inputs}
        if not inputs:
            raise ValueError("infer needs at least one input")
        arrays = {}
        for name, value in inputs.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"input names must be non-empty strings, got {name!r}")
            arrays[name] = value if isinstance(value, np.ndarray) else np.asarray(value)
        if outputs is not None and (isinstance(outputs, str)
                                    or not all(isinstance(o, str) for o in outputs)):
            raise TypeError("outputs must be a list of output names")

        def plan(batch: dict[str, np.ndarray]) -> Plan:
            return self._plan_infer(model=model, inputs=batch, outputs=outputs, version=version,
                                    binary_outputs=binary_outputs)

        group = None
        if self._batch_timeout > 0:
            group = self._batch_group(model, version, arrays, outputs, binary_outputs)
        return arrays, plan, group

    def _plan_infer(self, *, model: str, inputs: Mapping[str, Any], outputs: Any = None,
                    version: Any = None, binary_outputs: bool | None = None) -> Plan:
        if not inputs:
            raise ValueError("infer needs at least one input")
        tensors, blobs = [], []
        for name, value in inputs.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"input names must be non-empty strings, got {name!r}")
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
            datatype = datatype_of(arr)
            t: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
            # Its size on the wire: a fixed-size type's is its bytes' (no need to build them).
            raw = _raw(arr, datatype) if datatype == "BYTES" else None
            if (len(raw) if raw is not None else arr.nbytes) > self.binary_threshold:
                raw = raw if raw is not None else _raw(arr, datatype)
                t["parameters"] = {"binary_data_size": len(raw)}
                blobs.append(raw)
            else:
                t["data"] = _json_data(arr, datatype)
            tensors.append(t)
        binary_out = bool(blobs) if binary_outputs is None else bool(binary_outputs)
        body: dict[str, Any] = {"inputs": tensors}
        if outputs is not None:
            if isinstance(outputs, str) or not all(isinstance(o, str) for o in outputs):
                raise TypeError("outputs must be a list of output names")
            body["outputs"] = [{"name": o, "parameters": {"binary_data": binary_out}}
                               for o in outputs]
        elif binary_out:
            body["parameters"] = {"binary_data_output": True}
        head = json.dumps(body).encode()
        extra: dict[str, str] = {}
        ctype = None
        if blobs:
            extra["Inference-Header-Content-Length"] = str(len(head))
            ctype = "application/octet-stream"
        encoded = head + b"".join(blobs)

        def parse(resp: Response) -> OpResult:
            out = decode_infer_response(resp.data, resp.headers.get("inference-header-content-length"))
            return OpResult(out["outputs"], headers=resp.headers)

        return Plan(self._http("POST", self._infer_path(model, version), parse,
                               body=encoded, content_type=ctype, headers=extra))

    def _infer_path(self, model: str, version: Any) -> str:
        """``/v2/models/{model}[/versions/{version}]/infer``, quoted once per model."""
        key = (model, version)
        path = self._infer_paths.get(key) if type(version) in (str, int, type(None)) else None
        if path is None:
            path = _model_path(model, version) + "/infer"
            if len(self._infer_paths) < 1024 and type(version) in (str, int, type(None)):
                self._infer_paths[key] = path
        return path

    # -- TensorFlow Serving REST ------------------------------------------------------------
    def predict(self, model: str, *, instances: Any = None, inputs: Any = None,
                version: Any = None, signature_name: str | None = None,
                priority: int = Priority.NORMAL) -> Any:
        """TFS ``:predict``: row format (``instances``) answers ``predictions``, columnar
        (``inputs``) answers ``outputs``. Arrays may be numpy arrays."""
        return self._run("predict", model=model, instances=instances, inputs=inputs,
                         version=version, signature_name=signature_name, priority=priority)

    def _plan_predict(self, *, model: str, instances: Any = None, inputs: Any = None,
                      version: Any = None, signature_name: str | None = None) -> Plan:
        if (instances is None) == (inputs is None):
            raise ValueError("pass instances= (row format) or inputs= (columnar), not both")

        def plain(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, Mapping):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v

        key = "instances" if instances is not None else "inputs"
        body: dict[str, Any] = {key: plain(instances if instances is not None else inputs)}
        if signature_name is not None:
            body["signature_name"] = signature_name
        answer = "predictions" if key == "instances" else "outputs"

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            return OpResult(field(data, answer, "response"), headers=resp.headers)

        return Plan(self._http("POST", self._tfs_path(model, version) + ":predict", parse,
                               json_body=body))

    def model_status(self, model: str, version: Any = None, *,
                     priority: int = Priority.NORMAL) -> list[dict[str, Any]]:
        """TFS model status: ``[{"version", "state", "status": {...}}, ...]``."""
        return self._run("model_status", model=model, version=version, priority=priority)

    def _plan_model_status(self, *, model: str, version: Any = None) -> Plan:
        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            items = as_list(field(data, "model_version_status", "response"), "model_version_status")
            for i, s in enumerate(items):
                s = as_dict(s, f"model_version_status[{i}]")
                as_str(field(s, "state", f"model_version_status[{i}]"),
                       f"model_version_status[{i}].state")
            return OpResult(items, headers=resp.headers)

        return Plan(self._http("GET", self._tfs_path(model, version), parse))

    @staticmethod
    def _tfs_path(model: str, version: Any) -> str:
        from urllib.parse import quote

        path = f"/v1/models/{quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{quote(_version(version), safe='')}"
        return path

