"""LLVM, emulated: the reference server of the generic model-server protocol (README, "LLVM
protocol"; no public server implements it, so this module defines it).

Routes below ``/llvm`` (the prefix is the base URL):

- ``GET /models`` -> ``{"models": [{"id", "type", "status"}]}``
- ``GET /models/{id}`` -> that object plus ``parameters`` (the model's limits and defaults,
  and the ``optimization`` it was last given, ``null`` at first)
- ``POST /models/{id}/infer`` ``{"input", "parameters"}`` -> ``{"model", "output", "usage":
  {"input_tokens", "output_tokens"}}``
- ``POST /models/{id}/batch_infer`` ``{"inputs", "parameters"}`` -> ``{"model", "results",
  "usage"}``: ``results[i]`` is ``{"index": i, "output", "usage"}``, or ``{"index": i,
  "error": {"message", "type", "param"}}`` for an input the model refuses (the others are
  still answered); ``usage`` sums the answered items.
- ``GET /models/{id}/statistics`` -> the counters (:data:`COUNTERS`)
- ``POST /models/{id}/optimize`` ``{"optimization_type": "speed"|"memory"|"balanced"}`` ->
  ``{"model", "optimization_type", "status": "optimized"}``

The model id is one path segment, percent-decoded (``org%2Fname`` is ``org/name``). Models
(:data:`MODELS`, plus ``ServiceConfig.models`` as text-generation models): two
text-generation ones (``output`` a string: deterministic words, ``max_tokens`` of them at
most), an embedding one (``output`` a unit vector of ``dimensions`` numbers) and a
classification one (``output`` ``{"label", "score"}``); every one takes text (``input`` a
string). Outputs depend on the input, the emulator's seed and ``parameters.seed`` only, so
an input gives the same output alone or in a batch.

Errors are ``{"error": {"message", "type", "param"}}``: 400 ``invalid_request`` (a body that
is not JSON or not an object), 401 ``unauthorized`` (only with ``ServiceConfig.keys``: then
``Authorization: Bearer``), 404 ``not_found`` (an unknown model or URL), 405
``method_not_allowed``, 422 ``validation_error`` (a field breaks the rules; ``param`` names
it), 429 ``rate_limited`` (``rpm``/``tpm``) or ``overloaded`` (more than ``capacity``
requests at once: refused at once, not queued), 500 ``server_error``, 503 ``unavailable``
(a model whose status is not ``ready``, see :meth:`LLVMService.set_status`; injected 503s).
Every 429 and 503 carries ``Retry-After`` (whole seconds) and ``retry-after-ms``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import unquote

from ._rules import AnyValue, Array, Body, Bool, Int, Num, Obj, OneOf, Str, Violation, json_type
from ._server import (
    FAULT_RETRY_AFTER,
    APIFailure,
    Reply,
    Request,
    Route,
    Service,
    ServiceConfig,
    count_tokens,
    embedding_for,
    reply_text,
)

__all__ = ["COUNTERS", "ERROR_TYPES", "LLVMService", "MODELS", "OPTIMIZATION_TYPES",
           "llvm_output"]

OPTIMIZATION_TYPES = ("speed", "memory", "balanced")
#: The counters of ``/statistics``, per model. ``requests``: infer and batch_infer requests
#: that reached the model (``infer_requests`` + ``batch_requests``); ``errors``: those of them
#: refused as a whole; ``inputs``: inputs answered; ``failed_inputs``: batch items refused;
#: ``input_tokens`` / ``output_tokens``: the answered inputs' usage; ``optimizations``.
COUNTERS = ("requests", "infer_requests", "batch_requests", "inputs", "failed_inputs",
            "input_tokens", "output_tokens", "errors", "optimizations")
#: Each status's error ``type`` (429 is also ``overloaded``, over capacity).
ERROR_TYPES = {400: "invalid_request", 401: "unauthorized", 404: "not_found",
               405: "method_not_allowed", 422: "validation_error", 429: "rate_limited",
               500: "server_error", 503: "unavailable"}
TEXT = {"max_tokens": 16, "max_output_tokens": 64, "max_input_tokens": 2048,
        "max_batch_size": 32}
MODELS: dict[str, dict[str, Any]] = {
    "llvm-text-small": {"type": "text-generation", "parameters": dict(TEXT)},
    "llvm-text-large": {"type": "text-generation",
                        "parameters": {**TEXT, "max_output_tokens": 256,
                                       "max_input_tokens": 8192, "max_batch_size": 8}},
    "llvm-embed": {"type": "embedding",
                   "parameters": {"dimensions": 32, "max_input_tokens": 512,
                                  "max_batch_size": 64}},
    "llvm-classify": {"type": "classification",
                      "parameters": {"labels": ["negative", "neutral", "positive"],
                                     "max_input_tokens": 512, "max_batch_size": 32}},
}
RETRY_AFTER_MS = int(FAULT_RETRY_AFTER * 1000)

PARAMETERS = Obj({
    "max_tokens": Int(min=1), "temperature": Num(min=0, max=2), "top_p": Num(min=0, max=1),
    "top_k": Int(min=1), "seed": Int(min=0), "stop": OneOf(Str(), Array(Str(), max_items=4)),
    "normalize": Bool(),
}, extra="allow")  # a model ignores the parameters it has no use for
INFER = Body(input=AnyValue(required=True), parameters=PARAMETERS)
BATCH = Body(inputs=Array(AnyValue(), required=True, min_items=1), parameters=PARAMETERS)
OPTIMIZE = Body(optimization_type=Str(required=True, enum=OPTIMIZATION_TYPES))


@dataclass(frozen=True)
class _Refusal:
    """Why the model refuses (part of) a request: the broken rule and its wording."""

    violation: Violation
    message: str

    @property
    def param(self) -> str | None:
        return self.violation.param


def _stop_at(text: str, stop: Any) -> str:
    for s in [stop] if isinstance(stop, str) else stop or ():
        at = text.find(s) if s else -1
        if at >= 0:
            text = text[:at].rstrip()
    return text


def llvm_output(kind: str, parameters: Mapping[str, Any], text: str,
                params: Mapping[str, Any], seed: int) -> tuple[Any, int]:
    """What a model of type ``kind`` (its ``parameters``) answers to ``text`` with the
    request's ``params``: ``(output, output_tokens)``."""
    if kind == "embedding":
        return embedding_for(text, parameters["dimensions"], seed).tolist(), 0
    if kind == "classification":
        digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
        labels = parameters["labels"]
        return {"label": labels[digest[0] % len(labels)],
                "score": round(0.5 + digest[1] / 510, 4)}, 0
    variant = params["seed"] + 1 if params.get("seed") is not None else 0
    out = reply_text(text, seed, params.get("max_tokens") or parameters["max_tokens"], variant)
    out = _stop_at(out, params.get("stop"))
    return out, len(out.split())


class LLVMService(Service):
    name = "llvm"
    models = tuple(MODELS)
    capacity_refuses = True
    routes = (
        Route("GET", r"/models", "list_models"),
        Route("GET", r"/models/(?P<model>[^/]+)", "model_info"),
        # The bodies are checked in the handlers, once the model is known (404 first).
        Route("POST", r"/models/(?P<model>[^/]+)/infer", "infer"),
        Route("POST", r"/models/(?P<model>[^/]+)/batch_infer", "batch_infer"),
        Route("GET", r"/models/(?P<model>[^/]+)/statistics", "statistics"),
        Route("POST", r"/models/(?P<model>[^/]+)/optimize", "optimize"),
    )

    def __init__(self, config: ServiceConfig, seed: int) -> None:
        if config.keys is None:  # a model server with no key configured: no auth
            config = dataclasses.replace(config, keys=())
        super().__init__(config, seed)
        self._state = threading.Lock()
        self._counters: dict[str, Counter[str]] = {}
        self._status: dict[str, str] = {}
        self._optimization: dict[str, str] = {}

    # -- conventions --------------------------------------------------------------------------
    def read_key(self, req: Request) -> str | None:
        auth = req.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        h = dict(headers or {})
        if status in (429, 503) and "retry-after" not in h:
            h["retry-after"] = str(max(1, -(-RETRY_AFTER_MS // 1000)))
            h["retry-after-ms"] = str(RETRY_AFTER_MS)
        kind = "overloaded" if kind == "overloaded" else ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request")
        return Reply(status, {"error": {"message": message, "type": kind, "param": param}}, h)

    def reject(self, violation: Violation) -> Reply:
        status = 400 if violation.kind == "json" or not violation.path else 422
        return self.error(status, violation.message, "", param=violation.param)

    def over_capacity(self) -> Reply:
        return self.error(429, "the model server is at capacity; try again shortly",
                          "overloaded")

    def knows_model(self, model: str) -> bool:
        return model in MODELS or model in self.config.models

    # -- state ----------------------------------------------------------------------------------
    def set_status(self, model: str, status: str) -> None:
        """A model's status (``ready`` by default); inference on one that is not ``ready``
        answers 503 ``unavailable`` (a model still ``loading``, say)."""
        with self._state:
            self._status[model] = status

    def status(self, model: str) -> str:
        with self._state:
            return self._status.get(model, "ready")

    def _tally(self, model: str, **amounts: int) -> None:
        with self._state:
            self._counters.setdefault(model, Counter()).update(amounts)

    def _spec(self, model: str) -> dict[str, Any]:
        return MODELS.get(model) or {"type": "text-generation", "parameters": TEXT}

    def _model(self, req: Request) -> str:
        """The path's model id, or the 404."""
        model = unquote(req.params["model"])
        if not self.knows_model(model):
            raise APIFailure(404, f"model {model!r} not found", kind="not_found",
                             param="model")
        return model

    def _card(self, model: str) -> dict[str, Any]:
        return {"id": model, "type": self._spec(model)["type"], "status": self.status(model)}

    # -- routes ---------------------------------------------------------------------------------
    def list_models(self, req: Request) -> Reply:
        names = list(MODELS) + [m for m in self.config.models if m not in MODELS]
        return Reply(200, {"models": [self._card(m) for m in names]})

    def model_info(self, req: Request) -> Reply:
        model = self._model(req)
        with self._state:
            optimization = self._optimization.get(model)
        return Reply(200, {**self._card(model), "parameters": {
            **self._spec(model)["parameters"], "input_type": "text",
            "optimization": optimization}})

    def statistics(self, req: Request) -> Reply:
        model = self._model(req)
        with self._state:
            counts = self._counters.get(model, Counter())
            return Reply(200, {"model": model, **{k: counts[k] for k in COUNTERS}})

    def optimize(self, req: Request) -> Reply:
        model = self._model(req)
        refusal = self.admit(OPTIMIZE, req)
        if refusal is not None:
            return refusal
        kind = req.data["optimization_type"]
        with self._state:
            self._optimization[model] = kind
        self._tally(model, optimizations=1)
        return Reply(200, {"model": model, "optimization_type": kind, "status": "optimized"})

    def infer(self, req: Request) -> Reply:
        return self._inference(req, batch=False)

    def batch_infer(self, req: Request) -> Reply:
        return self._inference(req, batch=True)

    def _inference(self, req: Request, *, batch: bool) -> Reply:
        model = self._model(req)
        self._tally(model, requests=1, **{"batch_requests" if batch else "infer_requests": 1})
        refusal = self.admit(BATCH if batch else INFER, req)
        if refusal is None:
            limit = self._limits(model, req.data, batch)
            refusal = self._refuse(limit) if limit is not None else None
        status = self.status(model)
        if refusal is None and status != "ready":
            refusal = self.error(503, f"model {model!r} is {status}; try again shortly",
                                 "unavailable")
        if refusal is not None:
            self._tally(model, errors=1)
            return refusal
        params = req.data.get("parameters") or {}
        if not batch:
            out = self._answer(model, req.data["input"], params, ("input",))
            if isinstance(out, _Refusal):
                self._tally(model, errors=1)
                return self._refuse(out)
            return Reply(200, {"model": model, **out})
        results: list[dict[str, Any]] = []
        used = Counter[str]()
        for i, value in enumerate(req.data["inputs"]):
            out = self._answer(model, value, params, ("inputs", i))
            if isinstance(out, _Refusal):
                self.record.rejected(out.violation)
                self._tally(model, failed_inputs=1)
                results.append({"index": i, "error": {"message": out.message,
                                                      "type": "validation_error",
                                                      "param": out.param}})
            else:
                used.update(out["usage"])
                results.append({"index": i, **out})
        return Reply(200, {"model": model, "results": results,
                           "usage": {"input_tokens": used["input_tokens"],
                                     "output_tokens": used["output_tokens"]}})

    def _refuse(self, refusal: _Refusal) -> Reply:
        """The 422 for a request the model's own limits refuse (counted in ``refused``)."""
        self.record.rejected(refusal.violation)
        return self.error(422, refusal.message, "validation_error", param=refusal.param)

    def _limits(self, model: str, data: dict[str, Any], batch: bool) -> _Refusal | None:
        """The model's own limits on a well-formed request (batch size, ``max_tokens``)."""
        limits = self._spec(model)["parameters"]
        if batch and len(data["inputs"]) > limits["max_batch_size"]:
            n = len(data["inputs"])
            return _Refusal(Violation(("inputs",), "too_long", "array", limits["max_batch_size"], n),
                            f"inputs: at most {limits['max_batch_size']} inputs per batch for "
                            f"{model}, got {n}")
        max_tokens = (data.get("parameters") or {}).get("max_tokens")
        ceiling = limits.get("max_output_tokens")
        if max_tokens is not None and ceiling is not None and max_tokens > ceiling:
            return _Refusal(Violation(("parameters", "max_tokens"), "above_max", "integer",
                                      ceiling, max_tokens),
                            f"parameters.max_tokens: at most {ceiling} for {model}, "
                            f"got {max_tokens}")
        return None

    def _answer(self, model: str, value: Any, params: Mapping[str, Any],
                path: tuple[Any, ...]) -> dict[str, Any] | _Refusal:
        """One input's ``{"output", "usage"}`` (counted), or why the model refuses it."""
        spec = self._spec(model)
        if not isinstance(value, str):
            bad = Violation(path, "type", "string", ("string",), json_type(value))
            return _Refusal(bad, f"{bad.param}: expected a string, got {json_type(value)}")
        tokens = count_tokens(value)
        limit = spec["parameters"]["max_input_tokens"]
        if tokens > limit:
            bad = Violation(path, "too_long", "string", limit, tokens)
            return _Refusal(bad, f"{bad.param}: at most {limit} tokens for {model}, got {tokens}")
        output, produced = llvm_output(spec["type"], spec["parameters"], value, params, self.seed)
        self._tally(model, inputs=1, input_tokens=tokens, output_tokens=produced)
        return {"output": output, "usage": {"input_tokens": tokens, "output_tokens": produced}}
