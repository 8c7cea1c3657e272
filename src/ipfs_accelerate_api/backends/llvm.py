"""LLVM: the generic model-server protocol of the original framework (README, "LLVM protocol").

No public server implements it; the emulator's ``llvm`` service is its reference server.

- ``list_models()`` (``GET /models``) -> the model ids; ``list_models(details=True)`` -> the
  ``{"id", "type", "status"}`` objects. ``model_info(model)`` (``GET /models/{id}``) -> that
  object plus ``parameters``.
- ``infer(model, input, **parameters)`` (``POST /models/{id}/infer``) -> an
  :class:`InferResult` (``output``, ``usage``, ``model``). ``batch_infer(model, inputs,
  **parameters)`` (``POST /models/{id}/batch_infer``) -> one :class:`InferResult` per input,
  in input order. An input the server refuses inside a batch (a per-item ``error``) raises
  that item's error, unless ``return_exceptions=True``: then the error takes the item's
  place in the list. ``_plan_batch_infer`` is the one batch request: with
  ``return_exceptions=True`` its value is one outcome per input, in order, so the engine's
  batcher can send merged ``infer`` calls through it and cut the list back per caller.
- ``model_statistics(model)`` (``GET /models/{id}/statistics``) -> the counters.
- ``optimize(model, optimization_type="balanced")`` (``POST /models/{id}/optimize``);
  ``optimization_type`` other than ``speed``, ``memory`` or ``balanced`` is a ``ValueError``,
  raised before anything is sent.
- Model ids are one path segment, percent-encoded (``/`` included); an empty one is a
  ``ValueError``. Errors are ``{"error": {"message", "type"}}``, mapped by status (400
  ``BadRequestError``, 404 ``NotFoundError``, 422 ``UnprocessableEntityError``, 429
  ``RateLimitError`` after the retries honouring ``Retry-After``, 5xx ``ServerError``); the
  ``type`` is the error's ``code``.
- No key by default (``requires_key = False``); one given (``LLVM_API_KEY``) is sent as
  ``Authorization: Bearer``. The base URL: ``base_url=``, else ``LLVM_API_URL``, else
  ``http://127.0.0.1:8090``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field as dc_field
from typing import Any, Sequence
from urllib.parse import quote

from .._enums import Priority
from ..config import Secret
from ..engine import OpResult
from ..engine.batching import BatchKind, split_sequence
from ..errors import APIStatusError, ResponseFormatError, status_error_class
from ..transport import Response
from ..types import Usage
from ._shape import as_count, as_dict, as_list, as_str, field
from .base import Backend, OnceCache, Plan, check_list, check_model

__all__ = ["ITEM_ERROR_STATUS", "OPTIMIZATION_TYPES", "InferResult", "LLVMBackend",
           "STATISTICS_COUNTERS", "model_path"]

DEFAULT_BASE_URL = "http://127.0.0.1:8090"
URL_ENV = "LLVM_API_URL"
OPTIMIZATION_TYPES = ("speed", "memory", "balanced")
#: The counters every ``/statistics`` answer has (the server may add more).
STATISTICS_COUNTERS = ("requests", "inputs", "input_tokens", "output_tokens", "errors")
#: A batch item's error ``type`` -> the status its exception stands for.
ITEM_ERROR_STATUS = {"invalid_request": 400, "not_found": 404, "validation_error": 422,
                     "overloaded": 429, "rate_limited": 429, "server_error": 500,
                     "unavailable": 503}


@dataclass
class InferResult:
    """One input's answer: the model's ``output`` (a JSON value: text for a text-generation
    model, a list of numbers for an embedding model...), its ``usage`` (``prompt_tokens`` is
    the protocol's ``input_tokens``, ``completion_tokens`` its ``output_tokens``) and the
    model that answered."""

    output: Any
    usage: Usage
    model: str | None
    raw: Any = dc_field(repr=False, default=None)


def model_path(model: str) -> str:
    """``/models/{id}`` with the id as one percent-encoded path segment (``.`` and ``..``
    encoded too, so that no URL normalisation can turn them into a step up)."""
    segment = quote(model, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"/models/{segment}"


def _encode(body: dict[str, Any]) -> bytes:
    """JSON of the request body; a value JSON cannot hold (NaN, an object) is refused here."""
    try:
        return json.dumps(body, allow_nan=False).encode()
    except ValueError as exc:
        raise ValueError(f"llvm: parameters must be finite JSON values ({exc})") from None
    except TypeError as exc:
        raise TypeError(f"llvm: inputs and parameters must be JSON values ({exc})") from None


def _usage(value: Any, where: str) -> Usage:
    u = as_dict(value if value is not None else {}, where)
    prompt = as_count(u.get("input_tokens"), f"{where}.input_tokens")
    completion = as_count(u.get("output_tokens"), f"{where}.output_tokens")
    return Usage(prompt, completion, prompt + completion)


def _result(item: dict[str, Any], model: str | None, where: str) -> InferResult:
    return InferResult(field(item, "output", where), _usage(item.get("usage"), f"{where}.usage"),
                       model, item)


def _item_error(err: Any, where: str) -> APIStatusError:
    """A batch item's ``{"message", "type"}`` as the exception its type stands for."""
    err = as_dict(err, f"{where}.error")
    message = as_str(field(err, "message", f"{where}.error"), f"{where}.error.message")
    kind = as_str(err.get("type"), f"{where}.error.type", optional=True)
    status = ITEM_ERROR_STATUS.get(kind or "")
    cls = status_error_class(status) if status is not None else APIStatusError
    return cls(message[:500], status=status, code=kind, body=err, backend="llvm")


def _check_input(value: Any, where: str) -> Any:
    if value is None:
        raise ValueError(f"llvm: {where} is required (None is not an input)")
    return value


def _check_inputs(inputs: Any) -> list[Any]:
    out = check_list(inputs, op="llvm: batch_infer", plural="a list of inputs", singular="input")
    for i, value in enumerate(out):
        _check_input(value, f"inputs[{i}]")
    return out


def _estimate(encoded: bytes, parameters: Mapping[str, Any], items: int) -> float:
    out = parameters.get("max_tokens")
    out = out if type(out) is int and out > 0 else 0
    return float(len(encoded) // 4 + 1 + out * items)


#: Single ``infer`` inputs combined into one ``batch_infer``: each caller gets its own
#: outcome (an item the server refused is raised to that caller alone).
ONE_INPUT_EACH = BatchKind(size=len, merge=lambda parts: [p[0] for p in parts],
                           split=lambda outcomes, sizes: [o[0] for o in split_sequence(outcomes, sizes)])


class LLVMBackend(Backend):
    name = "llvm"
    env_prefix = "LLVM"
    default_base_url = DEFAULT_BASE_URL
    requires_key = False
    batched_methods = Backend.batched_methods | {"infer"}

    def __init__(self, *, base_url: str | None = None, **options: Any) -> None:
        super().__init__(base_url=base_url or os.environ.get(URL_ENV) or None, **options)
        self._batch_limits = OnceCache()  # model -> inputs per batch_infer

    # -- conventions ----------------------------------------------------------------------
    def _auth_headers(self, key: Secret | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.reveal()}"} if key is not None else {}

    def _error_message(self, body: Any) -> tuple[str, str | None]:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            kind = err.get("type")
            return str(err.get("message") or "error"), kind if isinstance(kind, str) else None
        return str(body)[:500], None

    # -- models -----------------------------------------------------------------------------
    def list_models(self, *, details: bool = False,  # type: ignore[override]
                    priority: int = Priority.NORMAL) -> list[Any]:
        """The served models' ids; with ``details=True`` their ``{"id", "type", "status"}``."""
        return self._run("list_models", details=details, priority=priority)  # type: ignore[no-any-return]

    def _plan_list_models(self, *, details: bool = False) -> Plan:
        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            models = [self._model_card(m, f"models[{i}]") for i, m in
                      enumerate(as_list(field(data, "models", "response"), "models"))]
            return OpResult(models if details else [m["id"] for m in models],
                            headers=resp.headers)

        return Plan(self._http("GET", "/models", parse))

    @staticmethod
    def _model_card(value: Any, where: str) -> dict[str, Any]:
        card = as_dict(value, where)
        for key in ("id", "type", "status"):
            as_str(field(card, key, where), f"{where}.{key}")
        return card

    def model_info(self, model: str, *, priority: int = Priority.NORMAL) -> dict[str, Any]:
        """``{"id", "type", "status", "parameters": {...}}`` of ``model``."""
        return self._run("model_info", model=model, priority=priority)  # type: ignore[no-any-return]

    def _plan_model_info(self, *, model: str) -> Plan:
        def parse(resp: Response) -> OpResult:
            card = self._model_card(resp.json(), "response")
            as_dict(field(card, "parameters", "response"), "parameters")
            return OpResult(card, headers=resp.headers)

        return Plan(self._http("GET", model_path(model), parse))

    def model_statistics(self, model: str, *, priority: int = Priority.NORMAL) -> dict[str, Any]:
        """The server's counters for ``model`` (:data:`STATISTICS_COUNTERS` and any others)."""
        return self._run("model_statistics", model=model, priority=priority)  # type: ignore[no-any-return]

    def _plan_model_statistics(self, *, model: str) -> Plan:
        def parse(resp: Response) -> OpResult:
            stats = as_dict(resp.json(), "response")
            for name in STATISTICS_COUNTERS:
                stats[name] = as_count(field(stats, name, "response"), name)
            return OpResult(stats, headers=resp.headers)

        return Plan(self._http("GET", model_path(model) + "/statistics", parse))

    def optimize(self, model: str, optimization_type: str = "balanced", *,
                 priority: int = Priority.NORMAL) -> dict[str, Any]:
        """Ask the server to optimise ``model`` for ``speed``, ``memory`` or ``balanced``:
        ``{"model", "optimization_type", "status"}``."""
        return self._run("optimize", model=model, optimization_type=optimization_type,  # type: ignore[no-any-return]
                         priority=priority)

    def _plan_optimize(self, *, model: str, optimization_type: str) -> Plan:
        if not isinstance(optimization_type, str) or optimization_type not in OPTIMIZATION_TYPES:
            raise ValueError(f"llvm: optimization_type must be one of "
                             f"{', '.join(OPTIMIZATION_TYPES)}; got {optimization_type!r}")

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            for key in ("model", "optimization_type", "status"):
                as_str(field(data, key, "response"), key)
            return OpResult(data, headers=resp.headers)

        return Plan(self._http("POST", model_path(model) + "/optimize", parse,
                               body=_encode({"optimization_type": optimization_type})))

    # -- inference --------------------------------------------------------------------------
    def infer(self, model: str, input: Any, *, priority: int = Priority.NORMAL,
              **parameters: Any) -> InferResult:
        """Run ``model`` on one ``input`` (any JSON value the model takes); ``parameters``
        (``max_tokens``, ``temperature``, ``seed``, ``stop``...) go to the server as they are."""
        return self._run("infer", model=model, input=input, priority=priority, **parameters)  # type: ignore[no-any-return]

    def _submit_infer(self, *, model: str, input: Any, priority: int = Priority.NORMAL,
                      sync: bool = False, **parameters: Any) -> Future:
        """Concurrent ``infer`` calls on one model with equal parameters go out as one
        ``batch_infer`` (up to the model's ``max_batch_size``, read once from
        :meth:`model_info`); a call that finds none in flight goes out alone, as ``infer``."""
        check_model(model)
        _check_input(input, "input")
        _encode({"input": input, "parameters": parameters})  # refused here, for this caller

        def direct(inputs: list[Any]) -> Plan:
            return self._plan_infer(model=model, input=inputs[0], **parameters)

        def merged(inputs: list[Any]) -> Plan:
            return self._plan_batch_infer(model=model, inputs=inputs, return_exceptions=True,
                                          **parameters)

        if self._batch_timeout <= 0:
            return self._send_plan("infer", direct([input]), priority, sync)
        group = (model, json.dumps(parameters, sort_keys=True))
        return self._batched("infer", group, [input], merged, kind=ONE_INPUT_EACH,
                             direct=direct, priority=priority, sync=sync,
                             limit=self._batch_limit(model))

    def _batch_limit(self, model: str) -> int:
        """How many inputs one ``batch_infer`` of ``model`` may carry: the server's
        ``max_batch_size`` (read once per model), at most ``batch_size``."""
        def read() -> int:
            server = (self.model_info(model).get("parameters") or {}).get("max_batch_size")
            return min(self._batch_size, server) if type(server) is int and server > 0 \
                else self._batch_size

        return self._batch_limits.get(model, read)  # type: ignore[no-any-return]

    def _plan_infer(self, *, model: str, input: Any, **parameters: Any) -> Plan:
        encoded = _encode({"input": _check_input(input, "input"), "parameters": parameters})

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            result = _result(data, as_str(data.get("model"), "model", optional=True), "response")
            return OpResult(result, result.usage.prompt_tokens, result.usage.completion_tokens,
                            resp.headers)

        return Plan(self._http("POST", model_path(model) + "/infer", parse, body=encoded),
                    _estimate(encoded, parameters, 1))

    def batch_infer(self, model: str, inputs: Sequence[Any], *, return_exceptions: bool = False,
                    priority: int = Priority.NORMAL, **parameters: Any) -> list[Any]:
        """Run ``model`` on each of ``inputs`` in one request: one :class:`InferResult` per
        input, in input order. An item the server refused raises its error
        (``UnprocessableEntityError`` for a ``validation_error``); with
        ``return_exceptions=True`` the error stands in the item's place instead."""
        return self._run("batch_infer", model=model, inputs=inputs,  # type: ignore[no-any-return]
                         return_exceptions=return_exceptions, priority=priority, **parameters)

    def _plan_batch_infer(self, *, model: str, inputs: Sequence[Any],
                          return_exceptions: bool = False, **parameters: Any) -> Plan:
        """One ``batch_infer`` request; its value is the per-item outcomes in input order
        (with ``return_exceptions=True`` an item's error is in the list, not raised), so a
        merged batch of several callers' inputs can be cut back per caller."""
        items = _check_inputs(inputs)
        encoded = _encode({"inputs": items, "parameters": parameters})
        count = len(items)

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            name = as_str(data.get("model"), "model", optional=True)
            results = as_list(field(data, "results", "response"), "results")
            if len(results) != count:
                raise ResponseFormatError(f"llvm: {count} inputs sent, {len(results)} results")
            out: list[Any] = []
            prompt = completion = 0
            for i, item in enumerate(results):
                where = f"results[{i}]"
                item = as_dict(item, where)
                index = item.get("index", i)
                if type(index) is not int or index != i:
                    raise ResponseFormatError(f"llvm: {where}.index is {index!r:.40}, not {i}")
                if item.get("error") is not None:
                    out.append(self._scrub(_item_error(item["error"], f"inputs[{i}]")))
                    continue
                result = _result(item, name, where)
                prompt += result.usage.prompt_tokens
                completion += result.usage.completion_tokens
                out.append(result)
            if not return_exceptions:
                failed = next((r for r in out if isinstance(r, Exception)), None)
                if failed is not None:
                    raise failed
            return OpResult(out, prompt, completion, resp.headers)

        return Plan(self._http("POST", model_path(model) + "/batch_infer", parse, body=encoded),
                    _estimate(encoded, parameters, count))

    # -- async forms --------------------------------------------------------------------------
    async def ainfer(self, model: str, input: Any, **kw: Any) -> InferResult:
        return await self._arun("infer", model=model, input=input, **kw)  # type: ignore[no-any-return]

    async def abatch_infer(self, model: str, inputs: Sequence[Any], **kw: Any) -> list[Any]:
        return await self._arun("batch_infer", model=model, inputs=inputs, **kw)  # type: ignore[no-any-return]

    async def amodel_info(self, model: str, **kw: Any) -> dict[str, Any]:
        return await self._arun("model_info", model=model, **kw)  # type: ignore[no-any-return]

    async def amodel_statistics(self, model: str, **kw: Any) -> dict[str, Any]:
        return await self._arun("model_statistics", model=model, **kw)  # type: ignore[no-any-return]

    async def aoptimize(self, model: str, optimization_type: str = "balanced",
                        **kw: Any) -> dict[str, Any]:
        return await self._arun("optimize", model=model,  # type: ignore[no-any-return]
                                optimization_type=optimization_type, **kw)
