"""OPEA (GenAIComps / GenAIExamples), emulated (see shared PROTOCOLS.md section 9).

Every route lives below ``/opea`` (the base URL is the prefix itself); a client points its
megaservice URL and each microservice URL (``services={...}``) at it:

- ``POST /v1/chatqna``: the ChatQnA megaservice. ``messages`` a string or a list;
  ``stream`` defaults to **true**: then ``text/event-stream`` events ``data: b'...'`` (the
  Python ``repr`` of a few UTF-8 *bytes* of the answer each, so a multibyte character may be
  cut between two events; the answer has non-ASCII text, quotes and a backslash) and
  ``data: [DONE]``; with ``"stream": false`` a ``chat.completion`` (``model`` ``"chatqna"``,
  usage zeros).
- ``POST /v1/chat/completions``: the LLM microservice (the OpenAI service's chat;
  ``model`` optional, ``messages`` may be a string).
- ``POST /v1/embeddings``: the embedding microservice (OpenAI's shape, ``model`` optional).
- ``POST /v1/retrieval``: ``EmbedDoc`` (``text`` + ``embedding``) -> ``retrieved_docs``,
  ``initial_query``, ``top_n``; ``RetrievalRequest`` (``input`` + ``embedding``) ->
  ``retrieved_docs`` with ``metadata``. The corpus is :data:`DOCUMENTS`, ranked by cosine
  similarity to the embedding (vectors from ``embedding_for`` at the embedding's length).
- ``POST /v1/reranking``: ``RerankingRequest`` (``input``) -> ``reranked_docs`` with
  ``score``; ``SearchedDoc`` (``initial_query``) -> an ``LLMParamsDoc`` (``query``,
  ``documents``). The union is decided by which keys are present, as pydantic does.
- ``GET /v1/health_check``: the service card.

Errors are FastAPI's: a request that breaks the rules gets 422 ``{"detail": [{"loc":
["body", ...], "msg", "type"}]}``; other errors ``{"detail": "..."}``. No key by default
(``ServiceConfig.keys=None`` means none here); with keys, ``Authorization: Bearer``. An
injected ``stream_error`` ends the stream without ``[DONE]`` (an exception inside a
Starlette streaming response just stops it).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._rules import AnyValue, Array, Body, Bool, Int, Model, Num, Obj, OneOf, Str, Violation
from ._server import (
    Reply,
    Request,
    Route,
    ServiceConfig,
    Stream,
    content_text,
    embedding_for,
    reply_text,
)
from .openai import CHAT, EMBEDDINGS, MESSAGE, OpenAIService

__all__ = ["DOCUMENTS", "EXTRA_TEXT", "OPEAService", "chatqna_answer"]

LLM_MODEL = "Intel/neural-chat-7b-v3-3"
EMBED_MODEL = "BAAI/bge-base-en-v1.5"
#: What every megaservice answer ends with: escapes of every kind in its bytes repr.
EXTRA_TEXT = ' — it\'s "≈5 €", naïve 日本 🚀 \\ done'
#: Bytes per stream event (small, so multibyte characters are cut between events).
STREAM_BYTES = 5
RERANK_DIM = 64
DOCUMENTS = (
    "OPEA is the Open Platform for Enterprise AI.",
    "ChatQnA is a retrieval-augmented chatbot built from OPEA microservices.",
    "The embedding microservice turns text into vectors.",
    "The retriever finds the documents nearest to a query's embedding.",
    "The reranker orders documents by their relevance to the query.",
    "The LLM microservice generates the answer from the query and the documents.",
    "Redis stores the vectors of the ingested documents.",
    "Dataprep ingests files and links into the vector store.",
)

MESSAGES = OneOf(Str(), Array(MESSAGE, min_items=1), required=True)
CHATQNA = Body({
    "messages": MESSAGES, "model": Str(), "stream": Bool(), "max_tokens": Int(min=1),
    "max_new_tokens": Int(min=1), "temperature": Num(min=0), "top_p": Num(min=0, max=1),
    "top_k": Int(min=1), "frequency_penalty": Num(), "presence_penalty": Num(),
    "repetition_penalty": Num(), "chat_template": Str(), "k": Int(min=1),
    "search_type": Str(enum=("similarity", "similarity_distance_threshold",
                             "similarity_score_threshold", "mmr")),
    "fetch_k": Int(min=1), "lambda_mult": Num(), "score_threshold": Num(),
    "distance_threshold": Num(), "top_n": Int(min=1), "stop": OneOf(Str(), Array(Str())),
}, extra="allow")  # pydantic ignores unknown fields
LLM_CHAT = Body({**CHAT.fields, "model": Model(), "messages": MESSAGES, "top_k": Int(min=1),
                 "repetition_penalty": Num(), "chat_template": Str(), "documents": AnyValue()},
                extra="allow")
EMBED = Body({**EMBEDDINGS.fields, "model": Model()}, extra="allow")
SEARCH = {"search_type": Str(), "k": Int(min=1), "fetch_k": Int(min=1), "lambda_mult": Num(),
          "score_threshold": Num(), "distance_threshold": Num()}
VECTOR = Array(Num(), min_items=1)
RETRIEVAL = Body({"text": Str(), "input": Str(), **SEARCH,
                  "embedding": OneOf(VECTOR, Obj(extra="allow"), required=True)}, extra="allow")
DOC = Obj(text=Str(required=True), extra="allow")
RERANKING = Body({"input": Str(), "initial_query": Str(), "retrieved_docs": Array(DOC, required=True),
                  "top_n": Int(min=1)}, extra="allow")


def chatqna_answer(prompt: str, seed: int) -> str:
    """The megaservice's answer to ``prompt``."""
    return reply_text(prompt, seed) + EXTRA_TEXT


def _prompt(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    return "\n".join(content_text(m.get("content")) for m in messages)


def _event(piece: bytes) -> bytes:
    return b"data: " + repr(piece).encode("ascii") + b"\n\n"


def _scores(query: np.ndarray, texts: list[str], seed: int) -> list[float]:
    return [float(np.dot(query, embedding_for(t, len(query), seed))) for t in texts]


class OPEAService(OpenAIService):
    name = "opea"
    models: list[str] = []  # noqa: RUF012 - the base class types it so; never mutated
    routes = (
        Route("POST", r"/v1/chatqna", "chatqna", CHATQNA),
        Route("POST", r"/v1/chat/completions", "chat", LLM_CHAT),
        Route("POST", r"/v1/embeddings", "embeddings", EMBED),
        Route("POST", r"/v1/retrieval", "retrieval", RETRIEVAL),
        Route("POST", r"/v1/reranking", "reranking", RERANKING),
        Route("GET", r"/v1/health_check", "health_check", auth=False),
    )

    def __init__(self, config: ServiceConfig, seed: int) -> None:
        if config.keys is None:  # the services have no auth of their own
            config = dataclasses.replace(config, keys=())
        super().__init__(config, seed)

    # -- FastAPI's conventions -----------------------------------------------------------------
    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        return Reply(status, {"detail": message}, dict(headers or {}))

    def reject(self, violation: Violation) -> Reply:
        return _unprocessable(violation)

    def knows_model(self, model: str) -> bool:
        return True

    def internal_error(self) -> Reply:
        return Reply(500, b"Internal Server Error", content_type="text/plain; charset=utf-8")

    def ratelimit_headers(self, rpm: Any, tpm: Any) -> dict[str, str]:
        return {}

    def stream_error_chunk(self) -> bytes:
        return b": the server raised while streaming\n\n"

    def _headers(self) -> dict[str, str]:
        return {}

    # -- the megaservice ------------------------------------------------------------------------
    def chatqna(self, req: Request) -> Reply | Stream:
        body = req.data
        text = chatqna_answer(_prompt(body["messages"]), self.seed)
        if body.get("stream", True):  # the handler reads ``stream`` before parsing: true
            return Stream(self._chatqna_events(text))
        return Reply(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:22]}", "object": "chat.completion",
            "created": int(time.time()), "model": "chatqna",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop", "metadata": None}],
            "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0}})

    @staticmethod
    def _chatqna_events(text: str) -> Iterator[bytes]:
        data = text.encode("utf-8")
        for i in range(0, len(data), STREAM_BYTES):
            yield _event(data[i:i + STREAM_BYTES])
        yield b"data: [DONE]\n\n"

    # -- the microservices ----------------------------------------------------------------------
    def chat(self, req: Request) -> Reply | Stream:
        data = dict(req.data)
        if isinstance(data["messages"], str):
            data["messages"] = [{"role": "user", "content": data["messages"]}]
        data["model"] = data.get("model") or LLM_MODEL
        req.data = data
        return super().chat(req)

    def embeddings(self, req: Request) -> Reply:
        req.data = {**req.data, "model": req.data.get("model") or EMBED_MODEL}
        return super().embeddings(req)

    def retrieval(self, req: Request) -> Reply:
        body = req.data
        query = body.get("text") if body.get("text") is not None else body.get("input")
        if query is None:
            return _unprocessable(Violation(("text",), "missing"))
        emb = body["embedding"]
        if isinstance(emb, dict):  # an EmbeddingResponse: its first vector
            try:
                emb = emb["data"][0]["embedding"]
            except (KeyError, IndexError, TypeError):
                return _unprocessable(Violation(("embedding", "data"), "missing"))
            if not isinstance(emb, list) or not emb or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in emb):
                return _unprocessable(Violation(("embedding", "data", 0, "embedding"), "type",
                                                "array", ("array",), "other"))
        vec = np.asarray(emb, dtype=np.float64)
        norm = float(np.linalg.norm(vec))
        vec = vec / norm if norm else vec
        k = body.get("k") or 4
        scores = _scores(vec, list(DOCUMENTS), self.seed)
        order = sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i])[:k]
        if "text" in body and body.get("text") is not None:  # EmbedDoc -> SearchedDoc
            found = [{"id": uuid.uuid4().hex, "text": DOCUMENTS[i]} for i in order]
            return Reply(200, {"id": uuid.uuid4().hex, "retrieved_docs": found,
                               "initial_query": query, "top_n": 1, "metadata": []})
        docs: list[dict[str, Any]] = [{"text": DOCUMENTS[i], "metadata": {"source": f"doc-{i}"}}
                                      for i in order]
        return Reply(200, {"id": uuid.uuid4().hex, "retrieved_docs": docs})

    def reranking(self, req: Request) -> Reply:
        body = req.data
        request = body.get("input") is not None
        query = body.get("input") if request else body.get("initial_query")
        if query is None:
            return _unprocessable(Violation(("initial_query",), "missing"))
        texts = [d["text"] for d in body["retrieved_docs"]]
        top_n = body.get("top_n") or 1
        scores = _scores(embedding_for(query, RERANK_DIM, self.seed), texts, self.seed)
        order = sorted(range(len(texts)), key=lambda i: -scores[i])[:top_n]
        if request:  # RerankingRequest -> RerankingResponse
            return Reply(200, {"id": uuid.uuid4().hex, "reranked_docs": [
                {"text": texts[i], "score": round(scores[i], 6)} for i in order]})
        return Reply(200, {"id": uuid.uuid4().hex, "query": query,  # SearchedDoc -> LLMParamsDoc
                           "documents": [texts[i] for i in order], "max_tokens": 1024,
                           "stream": True})

    def health_check(self, req: Request) -> Reply:
        return Reply(200, {"Service Title": "opea_service@emulator", "Version": "1.0",
                           "Service Description": "OPEA Microservice Infrastructure"})


_FASTAPI_TYPES = {"missing": "missing", "type": "type_error", "enum": "enum",
                  "below_min": "greater_than_equal", "above_max": "less_than_equal",
                  "too_short": "too_short", "too_long": "too_long", "unknown": "extra_forbidden",
                  "json": "json_invalid"}


def _unprocessable(v: Violation) -> Reply:
    """FastAPI's 422: ``{"detail": [{"loc": ["body", ...], "msg", "type"}]}``."""
    msg = "Field required" if v.kind == "missing" else v.message.split(": ", 1)[-1]
    return Reply(422, {"detail": [{"type": _FASTAPI_TYPES.get(v.kind, v.kind),
                                   "loc": ["body", *v.path], "msg": msg, "input": None}]})
