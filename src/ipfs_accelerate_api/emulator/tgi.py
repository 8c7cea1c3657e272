"""Hugging Face Text Generation Inference, emulated (see shared PROTOCOLS.md section 6).

Routes below ``/tgi`` (the base URL is the prefix itself): ``/generate``,
``/generate_stream``, ``/`` (either, by ``"stream"``; a plain answer is a one-item list, as
the compat route sends), ``/v1/chat/completions`` (the OpenAI service's, with TGI's errors),
``/v1/models``, ``/info``, ``/health``, ``/tokenize``.

- Streams are ``data:{json}`` events (no space after the colon), one token each; the last has
  ``generated_text`` and, if asked, ``details``; no ``[DONE]``. An end-of-sequence finish
  ends with a special token of no text.
- ``details`` only when asked (``parameters.details``); ``/generate`` answers carry
  ``x-prompt-tokens``, ``x-generated-tokens`` and the ``x-*-time`` headers.
- Errors are ``{"error": ..., "error_type": ...}``: a request that breaks the rules gets a
  422 ``validation`` (on ``/generate_stream``: an error event on a 200, as TGI sends it).
  More requests at once than ``max_concurrent_requests`` (``ServiceConfig.capacity``, else
  128) get a 429 ``{"error": "Model is overloaded", "error_type": "overloaded"}`` instead of
  waiting (in-band on a stream), without ``retry-after`` (TGI sends none). The FaultPlan's
  ``"424"`` is a ``generation`` failure, ``"stream_error"`` an in-stream ``generation`` error
  event, ``"429"`` an overload.
- No key by default (``ServiceConfig.keys=None`` means none here, as TGI without
  ``--api-key``); with keys, inference routes want ``Authorization: Bearer`` and answer a
  bare 401; ``/health``, ``/info`` and ``/v1/models`` stay open.
- ``healthy = False`` on the service makes ``/health`` answer 503.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

from ._rules import AnyValue, Array, Body, Bool, Int, Model, Num, Obj, OneOf, Str, Violation
from ._server import (
    APIFailure,
    Record,
    Reply,
    Request,
    Route,
    ServiceConfig,
    Stream,
    reply_text,
)
from .openai import CHAT, FREE, OpenAIService

__all__ = ["TGIService", "tgi_tokens"]

MODEL_ID = "emulator/tgi-tiny-chat"
MAX_CONCURRENT_REQUESTS = 128
MAX_INPUT_TOKENS = 1024
MAX_TOTAL_TOKENS = 2048
MAX_STOP_SEQUENCES = 4
MAX_BEST_OF = 2
EOS = {"id": 2, "text": "", "logprob": -0.1, "special": True}
#: The status of each error type (TGI's ``error_type`` by the status it answers with).
ERROR_TYPES = {422: "validation", 424: "generation", 429: "overloaded",
               500: "incomplete_generation"}


class Positive(Num):
    """A number that must be strictly positive (TGI's ``temperature``, ``top_p``...)."""

    def __init__(self, *, below: float | None = None, **kw: Any) -> None:
        super().__init__(max=below, **kw)
        self.below = below

    def _check(self, value: float, path: Any) -> Violation | None:
        if value <= 0:
            return Violation(path, "below_min", self.name, 0, value)
        if self.below is not None and value >= self.below:
            return Violation(path, "above_max", self.name, self.below, value)
        return None


PARAMETERS = Obj({
    "adapter_id": Str(), "best_of": Int(min=1, max=MAX_BEST_OF),
    "decoder_input_details": Bool(), "details": Bool(), "do_sample": Bool(),
    "frequency_penalty": Num(min=-2, max=2), "grammar": FREE,
    "max_new_tokens": Int(min=1), "repetition_penalty": Positive(),
    "return_full_text": Bool(), "seed": Int(min=0),
    "stop": Array(Str(), max_items=MAX_STOP_SEQUENCES), "temperature": Positive(),
    "top_k": Int(min=1), "top_n_tokens": Int(min=0, max=5), "top_p": Positive(below=1),
    "truncate": Int(min=0), "typical_p": Positive(below=1), "watermark": Bool(),
}, extra="allow")  # serde ignores unknown fields
GENERATE = Body(inputs=Str(required=True), parameters=PARAMETERS, stream=Bool(), extra="allow")
TOKENIZE = Body(inputs=Str(required=True), parameters=PARAMETERS, extra="allow")
#: The Messages API: OpenAI's chat body; ``model`` optional and unknown fields ignored.
TGI_CHAT = Body({**CHAT.fields, "model": Model(), "top_k": Int(min=1),
                 "tool_prompt": Str(), "repetition_penalty": Positive(), "extra_body": AnyValue(),
                 "stop": OneOf(Str(), Array(Str(), max_items=MAX_STOP_SEQUENCES))},
                extra="allow")

_PIECE = re.compile(r"\s*\S+")


def tgi_tokens(text: str) -> list[dict[str, Any]]:
    """The emulator's tokenizer: each word with the spaces before it."""
    return [{"id": _token_id(m.group()), "text": m.group(), "start": m.start(), "stop": m.end()}
            for m in _PIECE.finditer(text)]


def _token_id(text: str) -> int:
    return 3 + int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") % 32_000


def _event(obj: Any) -> bytes:
    """One SSE event as TGI (axum) writes it: ``data:`` without a space."""
    return b"data:" + json.dumps(obj).encode() + b"\n\n"


class _Record(Record):
    """Also counts the POST requests in flight (``generating``), TGI's concurrency."""

    def __init__(self) -> None:
        super().__init__()
        self.generating = 0
        self._mine = threading.local()  # one request at a time per server thread

    def begin(self, req: Request) -> None:
        super().begin(req)
        counted = req.method == "POST"
        self._mine.counted = counted
        if counted:
            with self._lock:
                self.generating += 1

    def end(self) -> None:
        if getattr(self._mine, "counted", False):
            self._mine.counted = False
            with self._lock:
                self.generating -= 1
        super().end()


def _wording(v: Violation) -> str:
    p = v.param or "body"
    name = p.rsplit(".", 1)[-1]
    if v.kind == "json":
        return "Failed to parse the request body as JSON"
    if v.kind == "missing":
        return f"Failed to deserialize the JSON body into the target type: missing field `{name}`"
    if v.kind == "type":
        return (f"Failed to deserialize the JSON body into the target type: {p}: invalid type: "
                f"{v.got}, expected {' or '.join(v.expected)}")
    if v.kind == "below_min" and v.expected == 0:
        return f"Input validation error: `{name}` must be strictly positive"
    if name == "stop" and v.kind == "too_long":
        return (f"Input validation error: `stop` supports up to {v.expected} stop sequences. "
                f"Given: {v.got}")
    if name in ("top_p", "typical_p"):
        return f"Input validation error: `{name}` must be > 0.0 and < 1.0"
    return f"Input validation error: {v.message}"


class TGIService(OpenAIService):
    name = "tgi"
    models = ()  # the Messages API ignores ``model`` (another name would be a LoRA adapter)
    model_id = MODEL_ID
    max_input_tokens = MAX_INPUT_TOKENS
    max_total_tokens = MAX_TOTAL_TOKENS
    routes = (
        Route("POST", r"/", "compat"),  # rules checked in the handler (in-band when streaming)
        Route("POST", r"/generate", "generate", GENERATE),
        Route("POST", r"/generate_stream", "generate_stream"),
        Route("POST", r"/v1/chat/completions", "chat", TGI_CHAT),
        Route("GET", r"/v1/models", "list_models", auth=False),
        Route("GET", r"/info", "info", auth=False),
        Route("GET", r"/health", "health", auth=False),
        Route("POST", r"/tokenize", "tokenize", TOKENIZE),
    )

    def __init__(self, config: ServiceConfig, seed: int) -> None:
        if config.keys is None:  # TGI without --api-key: no auth
            config = dataclasses.replace(config, keys=())
        super().__init__(config, seed)
        self.record = _Record()
        self.healthy = True

    # -- conventions --------------------------------------------------------------------------
    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        if status == 401:  # TGI's auth layer answers with no body
            return Reply(401, b"", dict(headers or {}), content_type="text/plain")
        body = {"error": message, "error_type": ERROR_TYPES.get(status, kind)}
        return Reply(status, body, dict(headers or {}))

    def reject(self, violation: Violation) -> Reply:
        return self.error(422, _wording(violation), "validation")

    def knows_model(self, model: str) -> bool:
        return True

    def internal_error(self) -> Reply:
        return self.error(500, "Request failed during generation: emulator error",
                          "incomplete_generation")

    def capacity(self) -> None:  # type: ignore[override]
        """Never waits: above ``max_concurrent_requests`` TGI answers 429 (see ``_overloaded``)."""
        return

    def max_concurrent_requests(self) -> int:
        return self.config.capacity or MAX_CONCURRENT_REQUESTS

    def _overloaded(self) -> bool:
        assert isinstance(self.record, _Record)
        if self.record.generating > self.max_concurrent_requests():
            self.record.throttled()
            return True
        return False

    def throttled(self, which: str, wait: float, rl_headers: Any) -> Reply:
        self.record.throttled()
        return self.error(429, "Model is overloaded", "overloaded")

    def ratelimit_headers(self, rpm: Any, tpm: Any) -> dict[str, str]:
        return {}

    def stream_error_chunk(self) -> bytes:
        return _event({"error": "Request failed during generation: CUDA out of memory "
                                "(emulated)", "error_type": "generation"})

    def _headers(self) -> dict[str, str]:
        return {"x-compute-type": "1-nvidia-emulator", "x-compute-characters": "0"}

    # -- generate -----------------------------------------------------------------------------
    def _generation(self, data: dict[str, Any]) -> dict[str, Any]:
        """What the model generates for a checked body: tokens, finish, details."""
        inputs, p = data["inputs"], data.get("parameters") or {}
        n_in = len(tgi_tokens(inputs))
        if n_in > self.max_input_tokens:
            raise APIFailure(422, f"Input validation error: `inputs` must have less than "
                             f"{self.max_input_tokens} tokens. Given: {n_in}", kind="validation")
        max_new = p.get("max_new_tokens") or self.max_total_tokens - n_in
        if n_in + max_new > self.max_total_tokens:
            raise APIFailure(422, f"Input validation error: `inputs` tokens + `max_new_tokens` "
                             f"must be <= {self.max_total_tokens}. Given: {n_in} `inputs` tokens "
                             f"and {max_new} `max_new_tokens`", kind="validation")
        words = reply_text(inputs, self.seed, min(max_new, 64)).split(" ")
        texts = [" " + w for w in words]
        finish = "length" if len(texts) >= max_new else "eos_token"
        so_far = ""
        for i, t in enumerate(texts):
            so_far += t
            if any(s and s in so_far for s in p.get("stop") or ()):
                texts, finish = texts[:i + 1], "stop_sequence"
                break
        tokens = [{"id": _token_id(t), "text": t, "logprob": -0.25, "special": False}
                  for t in texts]
        generated = "".join(texts)
        if p.get("return_full_text"):
            generated = inputs + generated
        seed = p.get("seed") if p.get("do_sample") else None
        return {"tokens": tokens, "finish": finish, "text": generated, "input_length": n_in,
                "generated_tokens": len(tokens) + (finish == "eos_token"), "seed": seed,
                "details": bool(p.get("details"))}

    def generate(self, req: Request) -> Reply:
        if self._overloaded():
            return self.error(429, "Model is overloaded", "overloaded")
        g = self._generation(req.data)
        out: dict[str, Any] = {"generated_text": g["text"]}
        if g["details"]:
            tokens = g["tokens"] + ([EOS] if g["finish"] == "eos_token" else [])
            out["details"] = {"finish_reason": g["finish"],
                              "generated_tokens": g["generated_tokens"], "seed": g["seed"],
                              "prefill": [], "tokens": tokens, "top_tokens": None,
                              "best_of_sequences": None}
        headers = {**self._headers(), "x-prompt-tokens": str(g["input_length"]),
                   "x-generated-tokens": str(g["generated_tokens"]), "x-total-time": "1",
                   "x-validation-time": "0", "x-queue-time": "0", "x-inference-time": "1",
                   "x-time-per-token": "0"}
        return Reply(200, out, headers)

    def generate_stream(self, req: Request) -> Stream:
        return Stream(self._stream_events(req), headers=self._headers())

    def _stream_events(self, req: Request) -> Iterator[bytes]:
        """A stream's events; errors (the rules, the limits) in-band, on the 200."""
        data, failure = self._checked(req)
        if failure is not None:
            yield _event(failure)
            return
        if self._overloaded():
            yield _event({"error": "Model is overloaded", "error_type": "overloaded"})
            return
        try:
            g = self._generation(data)
        except APIFailure as exc:
            yield _event({"error": exc.message, "error_type": "validation"})
            return
        tokens = g["tokens"] + ([EOS] if g["finish"] == "eos_token" else [])
        for i, token in enumerate(tokens):
            last = i == len(tokens) - 1
            details = ({"finish_reason": g["finish"], "generated_tokens": g["generated_tokens"],
                        "seed": g["seed"], "input_length": g["input_length"]}
                       if last and g["details"] else None)
            yield _event({"index": i + 1, "token": token, "top_tokens": None,
                          "generated_text": g["text"] if last else None, "details": details})

    def _checked(self, req: Request) -> tuple[Any, dict[str, str] | None]:
        """The body checked against the rules, or the error event to send instead."""
        try:
            data = json.loads(req.body)
        except ValueError:
            data = None
        bad = GENERATE.validate(data) if data is not None else Violation((), "json")
        if bad is None:
            return data, None
        self.record.rejected(bad)
        return None, {"error": _wording(bad), "error_type": "validation"}

    def compat(self, req: Request) -> Reply | Stream:
        data, failure = self._checked(req)
        if failure is None and data.get("stream"):
            return self.generate_stream(req)
        if failure is not None:
            return Reply(422, failure)
        req.data = data
        answer = self.generate(req)
        if answer.status == 200:
            answer.body = [answer.body]  # the compat route answers a list
        return answer

    # -- the Messages API: OpenAI's, answered with the served model ----------------------------
    def chat(self, req: Request) -> Reply | Stream:
        if self._overloaded():
            return self.error(429, "Model is overloaded", "overloaded")
        req.data = {**req.data, "model": self.model_id}
        answer = super().chat(req)
        answer.headers = self._headers()
        return answer

    def list_models(self, req: Request) -> Reply:
        return Reply(200, {"object": "list", "data": [
            {"id": self.model_id, "object": "model", "created": 0, "owned_by": self.model_id}]})

    # -- the server ---------------------------------------------------------------------------
    def info(self, req: Request) -> Reply:
        return Reply(200, {
            "model_id": self.model_id, "model_sha": None, "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": self.max_concurrent_requests(),
            "max_best_of": MAX_BEST_OF, "max_stop_sequences": MAX_STOP_SEQUENCES,
            "max_input_tokens": self.max_input_tokens, "max_total_tokens": self.max_total_tokens,
            "validation_workers": 2, "max_client_batch_size": 4,
            "router": "text-generation-router", "version": "3.3.0-emulator", "sha": None,
            "docker_label": None})

    def health(self, req: Request) -> Reply:
        if not self.healthy:
            return Reply(503, {"error": "unhealthy", "error_type": "healthcheck"})
        return Reply(200, b"", content_type="text/plain")

    def tokenize(self, req: Request) -> Reply:
        return Reply(200, tgi_tokens(req.data["inputs"]))
