"""Hugging Face Text Embeddings Inference (TEI), emulated (see shared PROTOCOLS.md section 7).

Routes below ``/tei`` (the prefix is the base URL): ``POST /embed`` (and ``/``, as TEI routes
its model's task there), ``/embed_sparse``, ``/rerank``, ``/predict``, ``/tokenize``,
``/v1/embeddings`` and ``/embeddings`` (OpenAI-style, float or base64), ``GET /info``,
``GET /health``.

- Auth as TEI's ``--api-key``: none unless ``ServiceConfig(keys=...)`` names keys (so the
  default here is keyless, unlike the other services); then an exact ``Authorization:
  Bearer`` match or a bare 401 with no body; ``/health`` needs no key, ``/info`` does.
- Errors are ``{"error", "error_type"}`` with the PascalCase types: a refused body or batch is
  422 ``Validation`` (``batch_error_status = 413`` for a server before v1.9), an empty batch
  400 ``Empty``, past ``capacity`` (``max_concurrent_requests``) 429 ``Overloaded`` at once,
  not a wait, and no ``Retry-After``; an unhealthy server (``healthy = False``) 503
  ``Unhealthy``. The OpenAI route writes ``{"message", "code", "error_type"}``.
- Limits, as attributes of the service: ``max_client_batch_size`` (32), ``max_batch_tokens``
  (16384), ``max_input_length`` (512), ``auto_truncate`` (True), ``model_id``, ``dim`` (384);
  ``report_limits = False`` leaves the limit fields out of ``/info``, like an old server.
  A batch over ``max_client_batch_size`` gets TEI's wording ``batch size 40 > maximum
  allowed batch size 32``. A request whose tokens sum past ``max_batch_tokens`` is refused
  the same way (``batch tokens ... > maximum allowed batch tokens ...``): stricter than TEI,
  which queues it (unverified), so clients that split by tokens can be tested.
- Tokens: ``[CLS]``, each word or punctuation mark, ``[SEP]`` (each at least one character, so
  a count of UTF-8 bytes + 2 is always an upper bound); an input longer than
  ``max_input_length`` is truncated (``truncation_direction`` left or right) when
  ``truncate`` is true, or null and ``auto_truncate``; otherwise 422.
- Vectors: :func:`embedding_for` of the (truncated, prompted) text, unit length when
  ``normalize`` (the default), else scaled by 1 to 5; ``dimensions`` keeps the first ones.
  Rerank scores grow with the words a text shares with the query (sigmoid unless
  ``raw_scores``), sorted best first; ``/predict`` labels ``positive``, ``neutral``,
  ``negative``; sparse vectors hold one positive weight per distinct word.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ._rules import Array, Body, Bool, Int, OneOf, Str, Violation, parse_json
from ._server import Reply, Request, Route, Service, ServiceConfig, embedding_for

__all__ = ["TEIService"]

MODEL_ID = "BAAI/bge-small-en-v1.5"
DIM = 384
VOCAB = 30522
ANONYMOUS = "(no key)"  # the key of a keyless request, when no keys are configured
PROMPTS = {"query": "query: ", "passage": "passage: "}
LABELS = ("positive", "neutral", "negative")
_TOKEN = re.compile(r"\w+|[^\w\s]")

TOKEN_IDS = Array(Int(min=0), min_items=1)
INPUTS = OneOf(Str(), Array(OneOf(Str(), TOKEN_IDS, Int(min=0))), required=True)
DIRECTION = Str(enum=("left", "right", "Left", "Right"))
EMBED = Body(inputs=INPUTS, normalize=Bool(), truncate=Bool(), truncation_direction=DIRECTION,
             prompt_name=Str(), dimensions=Int(min=1), extra="allow")
SPARSE = Body(inputs=INPUTS, truncate=Bool(), truncation_direction=DIRECTION, prompt_name=Str(),
              extra="allow")
RERANK = Body(query=Str(required=True), texts=Array(Str(), required=True), raw_scores=Bool(),
              return_text=Bool(), truncate=Bool(), truncation_direction=DIRECTION, extra="allow")
SEQUENCE = OneOf(Str(), Array(Str(), min_items=1, max_items=2))
PREDICT = Body(inputs=OneOf(Str(), Array(SEQUENCE), required=True), raw_scores=Bool(),
               truncate=Bool(), truncation_direction=DIRECTION, extra="allow")
TOKENIZE = Body(inputs=OneOf(Str(), Array(Str()), required=True), add_special_tokens=Bool(),
                prompt_name=Str(), extra="allow")
OPENAI_EMBED = Body(input=INPUTS, model=Str(), encoding_format=Str(enum=("float", "base64")),
                    dimensions=Int(min=1), user=Str(), extra="allow")
_OPENAI_PATHS = ("/v1/embeddings", "/embeddings")
_TYPES = {400: "Empty", 413: "Validation", 422: "Validation", 424: "Backend", 429: "Overloaded",
          503: "Unhealthy"}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _word_id(word: str) -> int:
    return 1000 + int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:4], "little") % (VOCAB - 1000)


class TEIService(Service):
    name = "tei"
    capacity_refuses = True
    routes = (
        Route("POST", r"/embed", "embed", EMBED),
        Route("POST", r"/", "embed", EMBED),
        Route("POST", r"/embed_sparse", "embed_sparse", SPARSE),
        Route("POST", r"/rerank", "rerank", RERANK),
        Route("POST", r"/predict", "predict", PREDICT),
        Route("POST", r"/tokenize", "tokenize", TOKENIZE),
        Route("POST", r"/v1/embeddings", "openai_embed"),  # checked in the handler: its own errors
        Route("POST", r"/embeddings", "openai_embed"),
        Route("GET", r"/info", "info"),
        Route("GET", r"/health", "health", auth=False),
    )

    def __init__(self, config: ServiceConfig, seed: int) -> None:
        super().__init__(config, seed)
        self.model_id = MODEL_ID
        self.dim = DIM
        self.max_client_batch_size = 32
        self.max_batch_tokens = 16384
        self.max_input_length = 512
        self.max_concurrent_requests = 512
        self.auto_truncate = True
        self.report_limits = True
        self.batch_error_status = 422
        self.healthy = True
        self.cache_rows = 16384
        self._cache: dict[tuple[Any, ...], tuple[np.ndarray, bytes]] = {}

    # -- conventions ------------------------------------------------------------------------
    def read_key(self, req: Request) -> str | None:
        auth = req.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:]
        # TEI without --api-key takes any request: only configured keys make one required.
        return ANONYMOUS if self.config.keys is None else None

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        h = dict(headers or {})
        if status == 401:
            return Reply(401, b"", h, "text/plain")  # TEI's auth layer: a bare 401
        if status == 429:  # TEI sends no Retry-After
            h.pop("retry-after", None)
            h.pop("retry-after-ms", None)
        if status in (404, 405):
            return Reply(status, b"", h, "text/plain")
        return Reply(status, {"error": message, "error_type": _TYPES.get(status, "Backend")}, h)

    def reject(self, violation: Violation) -> Reply:
        return self.error(422, f"Failed to deserialize the JSON body: {violation.message}",
                          "validation")

    def internal_error(self) -> Reply:
        return self.error(500, "emulator handler failed", "backend")

    # -- tokens and limits -------------------------------------------------------------------
    def _truncating(self, data: dict[str, Any]) -> bool:
        t = data.get("truncate")
        return self.auto_truncate if t is None else bool(t)

    def _tokens(self, item: Any, data: dict[str, Any]) -> list[str]:
        """The item's tokens, specials included, truncated (or refused) to max_input_length."""
        if isinstance(item, list):
            words = [str(i) for i in item]
        else:
            words = _TOKEN.findall(PROMPTS.get(data.get("prompt_name") or "", "") + item)
        limit = self.max_input_length
        if len(words) + 2 > limit:
            if not self._truncating(data):
                raise _Refused(422, f"`inputs` must have less than {limit} tokens. "
                                    f"Given: {len(words) + 2}")
            keep = limit - 2
            left = str(data.get("truncation_direction") or "right").lower() == "left"
            words = words[-keep:] if left else words[:keep]
        return ["[CLS]", *words, "[SEP]"]

    def _batch(self, req: Request, key: str) -> tuple[list[Any], list[list[str]]]:
        """The request's inputs as a list and their tokens, with TEI's batch checks."""
        data = req.data
        raw = data[key]
        items = [raw] if isinstance(raw, str) or (
            isinstance(raw, list) and raw and all(type(x) is int for x in raw)) else list(raw)
        if not items:
            raise _Refused(400, "Batch is empty")
        if any(type(x) is int for x in items):
            raise _Refused(422, f"`{key}` must be a string, a list of strings, a list of token "
                                "ids or a list of those lists")
        if len(items) > self.max_client_batch_size:
            raise _Refused(self.batch_error_status, f"batch size {len(items)} > maximum allowed "
                                                    f"batch size {self.max_client_batch_size}")
        prompt = data.get("prompt_name")
        if prompt is not None and prompt not in PROMPTS:
            raise _Refused(422, f"Prompt name `{prompt}` not found in the model config")
        tokens = [self._tokens(x, data) for x in items]
        total = sum(len(t) for t in tokens)
        if total > self.max_batch_tokens:
            raise _Refused(self.batch_error_status, f"batch tokens {total} > maximum allowed "
                                                    f"batch tokens {self.max_batch_tokens}")
        return items, tokens

    def _text(self, item: Any, toks: list[str], data: dict[str, Any]) -> str:
        """What a vector is made from: the (prompted) text as sent when nothing was cut,
        else its tokens joined."""
        if isinstance(item, str):
            text = PROMPTS.get(data.get("prompt_name") or "", "") + item
            if len(_TOKEN.findall(text)) + 2 == len(toks):
                return text
        return " ".join(toks[1:-1])

    def _row(self, text: str, loose: bool, dims: int | None) -> tuple[np.ndarray, bytes]:
        """One vector and its JSON, kept (up to ``cache_rows`` of them): the emulator's own
        work must stay small next to the latency it models, whichever client is measured."""
        key = (text, loose, dims, self.dim)
        hit = self._cache.get(key)
        if hit is None:
            v = embedding_for(text, self.dim, self.seed)
            if loose:
                v = v * np.float32(1 + len(text) % 5)
            if dims is not None:
                v = v[:dims]
            if len(self._cache) >= self.cache_rows:
                self._cache.clear()
            hit = self._cache[key] = (v, json.dumps(v.tolist()).encode())
        return hit

    def _rows(self, items: list[Any], tokens: list[list[str]],
              data: dict[str, Any]) -> list[tuple[np.ndarray, bytes]]:
        dims = data.get("dimensions")
        if dims is not None and dims > self.dim:
            raise _Refused(422, f"`dimensions` must be at most {self.dim}")
        loose = data.get("normalize") is False
        return [self._row(self._text(item, toks, data), loose, dims)
                for item, toks in zip(items, tokens)]

    def _answer(self, req: Request, make: Callable[[], Reply]) -> Reply:
        try:
            return make()
        except _Refused as exc:
            self.record.rejected(Violation(("batch" if exc.status in (413, 422) else "inputs",),
                                           "too_long"))
            if req.path in _OPENAI_PATHS:
                return Reply(exc.status, {"message": exc.message, "code": exc.status,
                                          "error_type": _TYPES.get(exc.status, "Backend")})
            return self.error(exc.status, exc.message, "validation")

    # -- routes ------------------------------------------------------------------------------
    def embed(self, req: Request) -> Reply:
        def make() -> Reply:
            items, tokens = self._batch(req, "inputs")
            rows = self._rows(items, tokens, req.data)
            return Reply(200, b"[" + b",".join(js for _, js in rows) + b"]")

        return self._answer(req, make)

    def openai_embed(self, req: Request) -> Reply:
        data, bad = parse_json(req.body)
        bad = bad or OPENAI_EMBED.validate(data)
        if bad is not None:
            self.record.rejected(bad)
            return Reply(422, {"message": f"Failed to deserialize the JSON body: {bad.message}",
                               "code": 422, "error_type": "Validation"})
        req.data = data

        def make() -> Reply:
            items, tokens = self._batch(req, "input")
            vectors = [v for v, _ in self._rows(items, tokens, data)]
            b64 = data.get("encoding_format") == "base64"
            items = [{"object": "embedding", "index": i,
                      "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if b64
                      else v.tolist()} for i, v in enumerate(vectors)]
            used = sum(len(t) for t in tokens)
            return Reply(200, {"object": "list", "data": items, "model": self.model_id,
                               "usage": {"prompt_tokens": used, "total_tokens": used}})

        return self._answer(req, make)

    def embed_sparse(self, req: Request) -> Reply:
        def make() -> Reply:
            _, tokens = self._batch(req, "inputs")
            out = []
            for toks in tokens:
                weights: dict[int, float] = {}
                for w in toks[1:-1]:
                    i = _word_id(w)
                    weights[i] = weights.get(i, 0.0) + 0.25 + (i % 97) / 100
                out.append([{"index": i, "value": round(v, 4)} for i, v in sorted(weights.items())])
            return Reply(200, out)

        return self._answer(req, make)

    def rerank(self, req: Request) -> Reply:
        def make() -> Reply:
            data = req.data
            texts = data["texts"]
            if not texts:
                raise _Refused(400, "Batch is empty")
            if len(texts) > self.max_client_batch_size:
                raise _Refused(self.batch_error_status, f"batch size {len(texts)} > maximum "
                               f"allowed batch size {self.max_client_batch_size}")
            query = {w.lower() for w in _TOKEN.findall(data["query"])}
            out = []
            for i, text in enumerate(texts):
                words = {w.lower() for w in _TOKEN.findall(text)}
                overlap = len(query & words) / max(1, len(query | words))
                raw = 8 * overlap - 4 + (_word_id(text) % 100) / 1000
                score = raw if data.get("raw_scores") else 1 / (1 + math.exp(-raw))
                item: dict[str, Any] = {"index": i, "score": score}
                if data.get("return_text"):
                    item["text"] = text
                out.append(item)
            out.sort(key=lambda it: -it["score"])
            return Reply(200, out)

        return self._answer(req, make)

    def predict(self, req: Request) -> Reply:
        def scores(seq: Any, raw: bool) -> list[dict[str, Any]]:
            text = seq if isinstance(seq, str) else " [SEP] ".join(seq)
            digest = hashlib.sha256(f"{self.seed}:{text}".encode()).digest()
            logits = [(digest[i] - 128) / 32 for i in range(len(LABELS))]
            if not raw:
                top = max(logits)
                exp = [math.exp(x - top) for x in logits]
                logits = [e / sum(exp) for e in exp]
            return sorted(({"label": lab, "score": s} for lab, s in zip(LABELS, logits)),
                          key=lambda d: -d["score"])

        def make() -> Reply:
            inputs, raw = req.data["inputs"], bool(req.data.get("raw_scores"))
            # One string, or a list of exactly two strings (a pair), is one input; anything
            # else is a batch (TEI's untagged union reads ["a", "b"] as a pair).
            if isinstance(inputs, str) or (len(inputs) == 2 and all(isinstance(x, str) for x in inputs)):
                return Reply(200, scores(inputs, raw))
            if not inputs:
                raise _Refused(400, "Batch is empty")
            if len(inputs) > self.max_client_batch_size:
                raise _Refused(self.batch_error_status, f"batch size {len(inputs)} > maximum "
                               f"allowed batch size {self.max_client_batch_size}")
            return Reply(200, [scores(x, raw) for x in inputs])

        return self._answer(req, make)

    def tokenize(self, req: Request) -> Reply:
        def make() -> Reply:
            data = req.data
            inputs = [data["inputs"]] if isinstance(data["inputs"], str) else data["inputs"]
            if not inputs:
                raise _Refused(400, "Batch is empty")
            special = data.get("add_special_tokens", True) is not False
            out = []
            for text in inputs:
                toks: list[dict[str, Any]] = []
                if special:
                    toks.append({"id": 101, "text": "[CLS]", "special": True, "start": None,
                                 "stop": None})
                for m in _TOKEN.finditer(text):
                    toks.append({"id": _word_id(m.group()), "text": m.group(), "special": False,
                                 "start": m.start(), "stop": m.end()})
                if special:
                    toks.append({"id": 102, "text": "[SEP]", "special": True, "start": None,
                                 "stop": None})
                out.append(toks)
            return Reply(200, out)

        return self._answer(req, make)

    def info(self, req: Request) -> Reply:
        body: dict[str, Any] = {
            "model_id": self.model_id, "model_sha": None, "model_dtype": "float16",
            "model_type": {"embedding": {"pooling": "cls"}},
            "max_concurrent_requests": self.config.capacity or self.max_concurrent_requests,
            "max_input_length": self.max_input_length, "max_batch_tokens": self.max_batch_tokens,
            "max_batch_requests": None, "max_client_batch_size": self.max_client_batch_size,
            "auto_truncate": self.auto_truncate, "tokenization_workers": 4,
            "version": "1.9.0", "sha": None, "docker_label": None,
        }
        if not self.report_limits:
            for k in ("max_input_length", "max_batch_tokens", "max_client_batch_size",
                      "auto_truncate"):
                del body[k]
            body["version"] = "0.6.0"
        return Reply(200, body)

    def health(self, req: Request) -> Reply:
        if not self.healthy:
            return self.error(503, "unhealthy", "unhealthy")
        return Reply(200, b"", content_type="text/plain")
