"""Hugging Face Text Embeddings Inference (TEI; see shared PROTOCOLS.md section 7).

Thin: ``/embed`` (a bare list of vectors), ``/embed_sparse``, ``/rerank``, ``/predict``,
``/tokenize``, ``/info``, ``/health`` and, with ``route="openai"``, the OpenAI-style
``/v1/embeddings`` (parsed by the OpenAI adapter's own parser). TEI serves one model, so no
``model`` is needed. The key, when the server has one, is a ``Bearer`` token.

Batch limits come from ``/info`` (``max_client_batch_size``, ``max_batch_tokens``,
``max_input_length``), read once and cached; the base splits a large ``embed`` with the C
packer by both, and combines concurrent small calls up to the server's batch size. A server
whose ``/info`` has no limits (older TEI) is found out by its answer: a batch refused as too
large (413, or 422 since v1.9) is split (to the size the message names, else in halves) and
sent again, and the size is remembered; no row is lost.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._enums import Priority
from ..config import Secret
from ..core import l2_normalize, parse_floats
from ..engine import Attempt, OpResult
from ..errors import APIStatusError, NotFoundError, ResponseFormatError, ServerError
from ..transport import Response
from ._shape import as_count, as_dict, as_list, as_str, field
from .base import Backend, Plan, _check_texts
from .openai import embeddings_parser

__all__ = ["TEIBackend"]

URL_ENV = "HF_TEI_API_URL"
#: The tokens any tokenizer adds around a text ([CLS] ... [SEP], <s> ... </s>).
SPECIAL_TOKENS = 2
#: Words in a refusal that mean "too large a batch" (split and resend, never give up rows).
_TOO_LARGE = re.compile(r"batch size|batch tokens|payload|too large", re.IGNORECASE)
_REPORTED_MAX = re.compile(r"maximum allowed batch size (\d+)")
_ROW = re.compile(rb"\[([^\[\]]*)\]")
_SEPARATORS = re.compile(rb"\s*(?:,\s*)*")
EMBED_OPTIONS = ("normalize", "truncate", "truncation_direction", "prompt_name", "dimensions")


def _positive(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def _matrix(data: bytes, n: int, backend: str) -> np.ndarray:
    """``[[f, ...], ...]`` (``/embed``'s bare answer) as an (n, d) float32 array, read by
    numpy row by row; anything else is a :class:`ResponseFormatError`."""
    text = data.strip()
    if not (text.startswith(b"[") and text.endswith(b"]")):
        raise ResponseFormatError(f"{backend}: /embed should answer a list of vectors")
    inner = text[1:-1]
    rows = _ROW.findall(inner)
    gaps = _ROW.sub(b"", inner)
    if len(rows) != n or not _SEPARATORS.fullmatch(gaps) or gaps.count(b",") != max(0, n - 1):
        raise ResponseFormatError(f"{backend}: asked for {n} embeddings, got another shape")
    try:
        vectors = [parse_floats(r) for r in rows]
    except ValueError as exc:
        raise ResponseFormatError(f"{backend}: an embedding holds something other than "
                                  "numbers") from exc
    d = len(vectors[0])
    if d == 0 or any(len(v) != d for v in vectors):
        raise ResponseFormatError(f"{backend}: embeddings of different (or no) dimensions")
    out = np.vstack(vectors)
    if not np.isfinite(out).all():
        raise ResponseFormatError(f"{backend}: an embedding is not finite in float32")
    return out


def _score(value: Any, where: str) -> float:
    if type(value) not in (int, float) or not np.isfinite(value):
        raise ResponseFormatError(f"{where} should be a finite number, got {value!r}")
    return float(value)


class TEIBackend(Backend):
    name = "tei"
    env_prefix = ("HF_TEI", "TEI")
    default_base_url = "http://127.0.0.1:8080"
    requires_key = False
    model_required = False

    def __init__(self, *, base_url: str | None = None, **options: Any) -> None:
        super().__init__(base_url=base_url or os.environ.get(URL_ENV) or None, **options)
        self._limits_lock = threading.Lock()
        self._server_limits: tuple[int | None, int | None, int | None] | None = None
        self._learned_items: int | None = None

    # -- conventions ----------------------------------------------------------------------
    def _auth_headers(self, key: Secret | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.reveal()}"} if key is not None else {}

    def _error_message(self, body: Any) -> tuple[str, str | None]:
        """``{"error", "error_type"}``, or the OpenAI route's ``{"message", "code",
        "error_type"}``; the code is the ``error_type`` (``Validation``, ``Overloaded``...)."""
        if isinstance(body, dict):
            message = body.get("error") if isinstance(body.get("error"), str) else body.get("message")
            if isinstance(message, str):
                kind = body.get("error_type")
                return message, kind if isinstance(kind, str) else None
        return str(body)[:500], None

    # -- limits from /info ------------------------------------------------------------------
    def _limits(self) -> tuple[int | None, int | None, int | None]:
        """(max_client_batch_size, max_batch_tokens, max_input_length) from ``/info``, read
        once (concurrent first callers wait for the one read); None where the server does not
        say. A server without ``/info`` counts as one that says nothing."""
        with self._limits_lock:
            if self._server_limits is None:
                try:
                    info = self._run("info")
                except (NotFoundError, ResponseFormatError):  # no /info, or not TEI's
                    info = {}
                self._server_limits = (_positive(info.get("max_client_batch_size")),
                                       _positive(info.get("max_batch_tokens")),
                                       _positive(info.get("max_input_length")))
            return self._server_limits

    def _embed_limits(self) -> tuple[int, int]:
        items, tokens, _ = self._limits()
        learned = self._learned_items
        return (min(self._batch_size, items or self._batch_size, learned or self._batch_size),
                tokens or self.embed_max_tokens)

    def _embed_token_counts(self, texts: list[str]) -> list[int]:
        """An estimate that errs high for any tokenizer: one token per UTF-8 byte plus the
        special tokens, at most ``max_input_length`` (TEI truncates by default)."""
        cap = self._limits()[2]
        counts = [len(t.encode("utf-8", "surrogatepass")) + SPECIAL_TOKENS for t in texts]
        return counts if cap is None else [min(c, cap) for c in counts]

    def _learn(self, items: int) -> None:
        with self._limits_lock:
            if self._learned_items is None or items < self._learned_items:
                self._learned_items = items

    # -- embeddings ---------------------------------------------------------------------------
    def _plan_embed(self, texts: list[str], *, model: str | None = None, route: str = "native",
                    normalize_on_client: bool = False, **params: Any) -> Plan:
        if route not in ("native", "openai"):
            raise ValueError(f"tei: route must be 'native' or 'openai', got {route!r}")
        if route == "openai":
            if normalize_on_client:  # the OpenAI route has no ``normalize``
                params.pop("normalize", None)
            params.setdefault("encoding_format", "base64")
            extra = {"model": model} if model is not None else {}
            path = "/v1/embeddings"

            def make(batch: list[str]) -> Any:
                return self._http("POST", path, embeddings_parser(len(batch), self.name),
                                  json_body={"input": batch, **extra, **params})
        else:
            if normalize_on_client:
                params["normalize"] = False
            options = {k: v for k, v in params.items() if v is not None}

            def make(batch: list[str]) -> Any:
                n = len(batch)

                def parse(resp: Response) -> OpResult:
                    return OpResult(_matrix(resp.data, n, self.name), headers=resp.headers)

                return self._http("POST", "/embed", parse, json_body={"inputs": batch, **options})

        def operation(attempt: Attempt) -> OpResult:
            result = self._send_splitting(texts, make, attempt)
            if normalize_on_client:
                result.value = l2_normalize(result.value)
            return result

        return Plan(operation, float(sum(self._embed_token_counts(texts))))

    def _send_splitting(self, batch: list[str], make: Any, attempt: Attempt) -> OpResult:
        """One request for ``batch``; if the server refuses it as too large, the batch split
        (to the size the refusal names, else in halves) and each part sent the same way."""
        try:
            return make(batch)(attempt)  # type: ignore[no-any-return]
        except APIStatusError as exc:
            if len(batch) == 1 or exc.status not in (413, 422) or not _TOO_LARGE.search(exc.message):
                raise
            reported = _REPORTED_MAX.search(exc.message)
            size = int(reported.group(1)) if reported else 0
            if not 0 < size < len(batch):
                size = len(batch) // 2
            if "batch size" in exc.message:
                self._learn(size)
        parts = [self._send_splitting(batch[i:i + size], make, attempt)
                 for i in range(0, len(batch), size)]
        return OpResult(np.vstack([p.value for p in parts]),
                        sum(p.prompt_tokens for p in parts), 0, parts[-1].headers)

    # -- the other routes -------------------------------------------------------------------
    def embed_sparse(self, texts: str | Sequence[str], *, priority: int = Priority.NORMAL,
                     **params: Any) -> list[dict[int, float]]:
        """Sparse embeddings (SPLADE models): one ``{token index: value}`` dict per text."""
        return self._run("embed_sparse", _check_texts(texts), priority=priority, **params)  # type: ignore[no-any-return]

    def _plan_embed_sparse(self, texts: list[str], **params: Any) -> Plan:
        n = len(texts)

        def parse(resp: Response) -> OpResult:
            rows = as_list(resp.json(), "response")
            if len(rows) != n:
                raise ResponseFormatError(f"{self.name}: asked for {n} sparse embeddings, "
                                          f"got {len(rows)}")
            out = []
            for i, row in enumerate(as_list(r, f"[{i}]") for i, r in enumerate(rows)):
                vec: dict[int, float] = {}
                for j, item in enumerate(row):
                    where = f"[{i}][{j}]"
                    item = as_dict(item, where)
                    vec[as_count(field(item, "index", where), f"{where}.index")] = _score(
                        field(item, "value", where), f"{where}.value")
                out.append(vec)
            return OpResult(out, headers=resp.headers)

        return Plan(self._http("POST", "/embed_sparse", parse,
                               json_body={"inputs": texts, **params}),
                    float(sum(self._embed_token_counts(texts))))

    def rerank(self, query: str, texts: Sequence[str], *, top_n: int | None = None,
               raw_scores: bool = False, priority: int = Priority.NORMAL,
               **params: Any) -> list[tuple[int, float]]:
        """``(index into texts, score)`` pairs, best first (the ``top_n`` best when given)."""
        return self._run("rerank", query, texts, top_n=top_n, raw_scores=raw_scores,  # type: ignore[no-any-return]
                         priority=priority, **params)

    def _plan_rerank(self, query: str, texts: Sequence[str], *, top_n: int | None,
                     raw_scores: bool, **params: Any) -> Plan:
        if not isinstance(query, str):
            raise TypeError(f"rerank: query must be a string, got {type(query).__name__}")
        docs = _check_texts(texts)
        if top_n is not None and (type(top_n) is not int or top_n < 1):
            raise ValueError(f"rerank: top_n must be a positive integer, got {top_n!r}")
        n = len(docs)

        def parse(resp: Response) -> OpResult:
            items = as_list(resp.json(), "response")
            seen: set[int] = set()
            out = []
            for i, item in enumerate(items):
                item = as_dict(item, f"[{i}]")
                index = as_count(field(item, "index", f"[{i}]"), f"[{i}].index")
                if index >= n or index in seen:
                    raise ResponseFormatError(f"{self.name}: [{i}].index {index} is out of range "
                                              f"or repeated (expected 0..{n - 1})")
                seen.add(index)
                out.append((index, _score(field(item, "score", f"[{i}]"), f"[{i}].score")))
            out.sort(key=lambda pair: -pair[1])  # best first, whatever order the server used
            return OpResult(out[:top_n] if top_n else out, headers=resp.headers)

        body = {"query": query, "texts": docs, "raw_scores": raw_scores, **params}
        return Plan(self._http("POST", "/rerank", parse, json_body=body),
                    float(sum(self._embed_token_counts([query, *docs]))))

    def predict(self, texts: str | Sequence[str | Sequence[str]], *, raw_scores: bool = False,
                priority: int = Priority.NORMAL, **params: Any) -> Any:
        """Sequence classification: for one string, ``[(label, score), ...]`` best first; for
        a list (of strings, or of ``(a, b)`` pairs), one such list per item."""
        return self._run("predict", texts, raw_scores=raw_scores, priority=priority, **params)

    def _plan_predict(self, texts: Any, *, raw_scores: bool, **params: Any) -> Plan:
        single = isinstance(texts, str)
        if single:
            inputs: Any = texts
        else:
            if isinstance(texts, (bytes, dict)) or not hasattr(texts, "__iter__"):
                raise TypeError("predict takes a string or a list of strings or pairs")
            # A bare list of two strings would be read as one *pair*: send a batch of lists.
            inputs = [[t] if isinstance(t, str) else list(t) for t in texts]
            if not inputs or not all(1 <= len(x) <= 2 and all(isinstance(s, str) for s in x)
                                     for x in inputs):
                raise TypeError("predict takes a string, or a non-empty list of strings or "
                                "(text, text) pairs")
        n = 1 if single else len(inputs)

        def labels(value: Any, where: str) -> list[tuple[str, float]]:
            out = []
            for j, item in enumerate(as_list(value, where)):
                item = as_dict(item, f"{where}[{j}]")
                out.append((as_str(field(item, "label", f"{where}[{j}]"), f"{where}[{j}].label"),
                            _score(field(item, "score", f"{where}[{j}]"), f"{where}[{j}].score")))
            out.sort(key=lambda pair: -pair[1])
            return out

        def parse(resp: Response) -> OpResult:
            data = as_list(resp.json(), "response")
            if single:
                return OpResult(labels(data, "response"), headers=resp.headers)
            if len(data) != n:
                raise ResponseFormatError(f"{self.name}: asked for {n} predictions, got {len(data)}")
            return OpResult([labels(row, f"[{i}]") for i, row in enumerate(data)],
                            headers=resp.headers)

        body = {"inputs": inputs, "raw_scores": raw_scores, **params}
        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", "/predict", parse, body=encoded), len(encoded) + 2.0)

    def tokenize(self, texts: str | Sequence[str], *, add_special_tokens: bool = True,
                 priority: int = Priority.NORMAL, **params: Any) -> list[list[dict[str, Any]]]:
        """Per text, its tokens: ``{"id", "text", "special", "start", "stop"}`` dicts."""
        return self._run("tokenize", _check_texts(texts), add_special_tokens=add_special_tokens,  # type: ignore[no-any-return]
                         priority=priority, **params)

    def _plan_tokenize(self, texts: list[str], *, add_special_tokens: bool, **params: Any) -> Plan:
        n = len(texts)

        def parse(resp: Response) -> OpResult:
            rows = as_list(resp.json(), "response")
            if len(rows) != n:
                raise ResponseFormatError(f"{self.name}: asked for {n} token lists, got {len(rows)}")
            out = []
            for i, row in enumerate(rows):
                tokens = []
                for j, tok in enumerate(as_list(row, f"[{i}]")):
                    where = f"[{i}][{j}]"
                    tok = as_dict(tok, where)
                    special = tok.get("special", False)
                    if type(special) is not bool:
                        raise ResponseFormatError(f"{where}.special should be a boolean")
                    start, stop = tok.get("start"), tok.get("stop")
                    tokens.append({
                        "id": as_count(field(tok, "id", where), f"{where}.id"),
                        "text": as_str(tok.get("text", ""), f"{where}.text"),
                        "special": special,
                        "start": None if start is None else as_count(start, f"{where}.start"),
                        "stop": None if stop is None else as_count(stop, f"{where}.stop")})
                out.append(tokens)
            return OpResult(out, headers=resp.headers)

        body = {"inputs": texts, "add_special_tokens": add_special_tokens, **params}
        return Plan(self._http("POST", "/tokenize", parse, json_body=body),
                    float(sum(self._embed_token_counts(texts))))

    def info(self, *, priority: int = Priority.NORMAL) -> dict[str, Any]:
        """The server's ``/info``: model id, dtype, limits, version."""
        return self._run("info", priority=priority)  # type: ignore[no-any-return]

    def _plan_info(self) -> Plan:
        def parse(resp: Response) -> OpResult:
            return OpResult(as_dict(resp.json(), "response"), headers=resp.headers)

        return Plan(self._http("GET", "/info", parse))

    def health(self, *, priority: int = Priority.NORMAL) -> bool:
        """Whether the server is ready (``/health`` 200); False on its 503 ``Unhealthy``."""
        try:
            return self._run("health", priority=priority)  # type: ignore[no-any-return]
        except ServerError as exc:
            if exc.status == 503:
                return False
            raise

    def _plan_health(self) -> Plan:
        return Plan(self._http("GET", "/health", lambda resp: OpResult(True, headers=resp.headers)))

    def list_models(self, *, priority: int = Priority.NORMAL) -> list[str]:
        """The one model the server serves (``/info.model_id``)."""
        return [as_str(field(self.info(priority=priority), "model_id", "info"), "info.model_id")]

    async def aembed_sparse(self, texts: str | Sequence[str], **kw: Any) -> list[dict[int, float]]:
        return await self._arun("embed_sparse", _check_texts(texts), **kw)  # type: ignore[no-any-return]

    async def arerank(self, query: str, texts: Sequence[str], *, top_n: int | None = None,
                      raw_scores: bool = False, **kw: Any) -> list[tuple[int, float]]:
        return await self._arun("rerank", query, texts, top_n=top_n,  # type: ignore[no-any-return]
                                raw_scores=raw_scores, **kw)
