"""The Gemini API (Generative Language), emulated (see shared PROTOCOLS.md section 4).

Routes below ``/gemini``, for both ``/v1beta`` and ``/v1`` (google-genai calls ``v1`` by
default): ``models/{m}:generateContent``, ``models/{m}:streamGenerateContent`` (SSE with
``?alt=sse``, otherwise one JSON array streamed in pieces, as Google does),
``models/{m}:embedContent``, ``models/{m}:batchEmbedContents`` (at most 100 requests, each
naming the same model), ``models/{m}:countTokens``, ``models`` and ``models/{m}``.

The key comes from ``x-goog-api-key`` or ``?key=``. Errors are Google RPC bodies
``{"error": {"code", "message", "status", "details"}}``: a bad key is 400
``INVALID_ARGUMENT`` with ``ErrorInfo.reason: API_KEY_INVALID`` (not 401); a refused field
400 with a ``BadRequest`` field violation; an unknown model 404 ``NOT_FOUND``; a spent
per-key quota 429 ``RESOURCE_EXHAUSTED`` whose wait is only in ``RetryInfo.retryDelay`` (no
``Retry-After`` header, as Google sends none); injected faults 500 ``INTERNAL`` and 503
``UNAVAILABLE``; an injected in-stream failure is a ``data: {"error": ...}`` event.

Safety verdicts on demand: a prompt containing :data:`BLOCK_PROMPT` gets no candidates and
``promptFeedback.blockReason: SAFETY``; one containing :data:`BLOCK_REPLY` gets a candidate
with ``finishReason: SAFETY`` and no content. Function calls: ``toolConfig``'s
``functionCallingConfig.mode: ANY`` makes the model call the first declared (or allowed)
function, with arguments of the types its schema names.

``GeminiService.seen`` keeps the latest requests as received (path, query, headers, parsed
body), so tests can check what a client sent. Replies are deterministic for a seed (text from the prompt, embeddings from the text).
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from typing import Any, Iterator
from urllib.parse import unquote

from ._rules import AnyValue, Array, Body, Bool, Int, Num, Obj, Rule, Str, Violation
from ._server import (
    APIFailure,
    Reply,
    Request,
    Route,
    Service,
    ServiceConfig,
    Stream,
    count_tokens,
    embedding_for,
    reply_text,
    tool_arguments,
    sse_event,
)

__all__ = ["BLOCK_PROMPT", "BLOCK_REPLY", "GeminiService"]

#: A prompt with this word is blocked: no candidates, ``promptFeedback.blockReason: SAFETY``.
BLOCK_PROMPT = "EMULATOR_BLOCK_PROMPT"
#: A prompt with this word gets a candidate stopped with ``finishReason: SAFETY``.
BLOCK_REPLY = "EMULATOR_BLOCK_REPLY"

CHAT_MODELS = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash",
               "gemini-2.0-flash-lite", "gemini-1.5-flash", "gemini-1.5-pro")
EMBED_DIMS = {"text-embedding-004": 768, "gemini-embedding-001": 3072, "embedding-001": 768}
MODELS = (*CHAT_MODELS, *EMBED_DIMS)
DEFAULT_EMBED_DIM = 768  # a model added through ServiceConfig.models
DEFAULT_MAX_TOKENS = 64
MAX_BATCH = 100
SEEN = 1000  # requests kept in GeminiService.seen

TYPE = "type.googleapis.com/google.rpc."
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "NOT_FOUND", 405: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
          499: "CANCELLED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
MESSAGES = {500: "An internal error has occurred. Please retry or report in "
                 "https://developers.generativeai.google/guide/troubleshooting",
            503: "The model is overloaded. Please try again later."}
QUOTA_MESSAGE = ("You exceeded your current quota, please check your plan and billing details. "
                 "For more information on this error, head to: "
                 "https://ai.google.dev/gemini-api/docs/rate-limits.")

# -- request rules (google.ai.generativelanguage.v1beta) -----------------------------------------

FREE = Obj(extra="allow")  # free-form: a schema, function arguments, a function's response
BLOB = Obj(mimeType=Str(required=True), data=Str(required=True))
PART = Obj(
    text=Str(), inlineData=BLOB, fileData=Obj(mimeType=Str(), fileUri=Str(required=True)),
    functionCall=Obj(id=Str(), name=Str(required=True), args=FREE),
    functionResponse=Obj(id=Str(), name=Str(required=True), response=FREE, willContinue=Bool(),
                         scheduling=Str()),
    executableCode=Obj(language=Str(), code=Str(required=True)),
    codeExecutionResult=Obj(outcome=Str(), output=Str()),
    thought=Bool(), thoughtSignature=Str(), videoMetadata=FREE, partMetadata=FREE,
)
#: The oneof ``data`` of a part: exactly one must be set.
PART_KINDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse",
              "executableCode", "codeExecutionResult")
CONTENT = Obj(role=Str(enum=("user", "model")), parts=Array(PART, required=True, min_items=1))
INSTRUCTION = Obj(role=Str(), parts=Array(PART, required=True, min_items=1))
SCHEMA = AnyValue()
GENERATION_CONFIG = Obj(
    temperature=Num(min=0, max=2), topP=Num(min=0, max=1), topK=Num(min=1),
    candidateCount=Int(min=1, max=8), maxOutputTokens=Int(min=1),
    stopSequences=Array(Str(), max_items=5), presencePenalty=Num(min=-2, max=2),
    frequencyPenalty=Num(min=-2, max=2), seed=Int(),
    responseMimeType=Str(enum=("text/plain", "application/json", "text/x.enum")),
    responseSchema=SCHEMA, responseJsonSchema=SCHEMA, responseLogprobs=Bool(),
    logprobs=Int(min=0, max=20), responseModalities=Array(Str(enum=("TEXT", "IMAGE", "AUDIO"))),
    thinkingConfig=Obj(thinkingBudget=Int(min=-1), includeThoughts=Bool(),
                       thinkingLevel=Str(enum=("LOW", "MEDIUM", "HIGH"))),
    speechConfig=FREE, imageConfig=FREE, enableEnhancedCivicAnswers=Bool(),
    mediaResolution=Str(enum=("MEDIA_RESOLUTION_UNSPECIFIED", "MEDIA_RESOLUTION_LOW",
                              "MEDIA_RESOLUTION_MEDIUM", "MEDIA_RESOLUTION_HIGH")),
)
TOOL = Obj(
    functionDeclarations=Array(Obj(name=Str(required=True, min_len=1, max_len=64),
                                   description=Str(), parameters=SCHEMA,
                                   parametersJsonSchema=SCHEMA, response=SCHEMA,
                                   responseJsonSchema=SCHEMA,
                                   behavior=Str(enum=("BLOCKING", "NON_BLOCKING")))),
    googleSearch=FREE, googleSearchRetrieval=FREE, codeExecution=FREE, urlContext=FREE,
    fileSearch=FREE, googleMaps=FREE, computerUse=FREE,
)
TOOL_CONFIG = Obj(functionCallingConfig=Obj(
    mode=Str(enum=("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")),
    allowedFunctionNames=Array(Str())), retrievalConfig=FREE)
HARM = ("HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_CIVIC_INTEGRITY")
SAFETY_SETTING = Obj(category=Str(enum=HARM, required=True), threshold=Str(enum=(
    "HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"), required=True))
REQUEST_FIELDS: dict[str, Rule] = {
    "model": Str(), "contents": Array(CONTENT, required=True, min_items=1),
    "systemInstruction": INSTRUCTION, "tools": Array(TOOL), "toolConfig": TOOL_CONFIG,
    "safetySettings": Array(SAFETY_SETTING), "generationConfig": GENERATION_CONFIG,
    "cachedContent": Str(),
}
GENERATE = Body(REQUEST_FIELDS)
COUNT = Body(contents=Array(CONTENT, min_items=1),
             generateContentRequest=Obj(REQUEST_FIELDS, model=Str(required=True)))
TASKS = ("TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
         "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION",
         "CODE_RETRIEVAL_QUERY")
EMBED_FIELDS: dict[str, Rule] = {
    "model": Str(), "content": Obj(CONTENT.fields, required=True), "taskType": Str(enum=TASKS),
    "title": Str(), "outputDimensionality": Int(min=1),
}
EMBED = Body(EMBED_FIELDS)
BATCH_EMBED = Body(requests=Array(Obj({**EMBED_FIELDS, "model": Str(required=True)}),
                                  required=True, min_items=1, max_items=MAX_BATCH))

# -- Google's wording of a refused request ---------------------------------------------------------

_PROTO_TYPES = {"string": "TYPE_STRING", "integer": "TYPE_INT32", "number": "TYPE_FLOAT",
                "boolean": "TYPE_BOOL", "array": "TYPE_MESSAGE", "object": "TYPE_MESSAGE"}


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _field(v: Violation) -> str:
    """The field as Google names it: snake_case proto path (``generation_config.top_p``)."""
    out = ""
    for seg in v.path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{_snake(seg)}" if out else _snake(seg))
    return out


def _wording(v: Violation) -> str:
    where = _field(v)
    parent, _, leaf = where.rpartition(".")
    if v.kind == "json":
        return "Invalid JSON payload received. Unexpected token."
    if v.kind == "unknown":
        at = f" at '{parent}'" if parent else ""
        return (f'Invalid JSON payload received. Unknown name "{v.path[-1]}"{at}: '
                "Cannot find field.")
    if v.kind == "missing":
        return f"* GenerateContentRequest.{where}: {leaf or where} is not specified"
    if v.kind == "type":
        return f"Invalid value at '{where}' ({_PROTO_TYPES.get(v.rule, v.rule)}), {v.got}"
    if v.kind == "enum":
        if where.endswith("role"):
            return "Please use a valid role: user, model."
        return f'Invalid value at \'{where}\' (type.googleapis.com/{leaf}), "{v.got}"'
    if v.kind in ("too_short", "too_long"):
        return f"* GenerateContentRequest.{where}: must have between the allowed number of items"
    bound = "at least" if v.kind == "below_min" else "at most"
    return f"* GenerateContentRequest.{where}: must be {bound} {v.expected}, got {v.got}"


def _text_of(content: Any) -> str:
    return " ".join(p["text"] for p in (content or {}).get("parts") or []
                    if isinstance(p.get("text"), str))


def _check_parts(body: dict[str, Any]) -> None:
    """Each part sets exactly one member of its ``data`` oneof."""
    for i, content in enumerate(body.get("contents") or []):
        for j, part in enumerate(content["parts"]):
            kinds = [k for k in PART_KINDS if part.get(k) is not None]
            if len(kinds) != 1:
                raise APIFailure(400, f"* GenerateContentRequest.contents[{i}].parts[{j}].data: "
                                 "required oneof field 'data' must have one initialized field",
                                 param=f"contents[{i}].parts[{j}].data")


class GeminiService(Service):
    name = "gemini"
    models = MODELS
    _M = r"/(?P<version>v1beta|v1)/models/(?P<model>[^/:]+)"
    routes = (
        Route("POST", _M + r":generateContent", "generate", GENERATE),
        Route("POST", _M + r":streamGenerateContent", "stream_generate", GENERATE),
        Route("POST", _M + r":embedContent", "embed", EMBED),
        Route("POST", _M + r":batchEmbedContents", "batch_embed", BATCH_EMBED),
        Route("POST", _M + r":countTokens", "count", COUNT),
        Route("GET", r"/(?P<version>v1beta|v1)/models", "list_models"),
        Route("GET", _M, "get_model"),
    )

    def __init__(self, config: ServiceConfig, seed: int) -> None:
        super().__init__(config, seed)
        #: The latest requests as received (method, path, query, headers; ``data`` once its
        #: body passed the rules), for tests of what a client sends.
        self.seen: deque[Request] = deque(maxlen=SEEN)

    # -- the service's conventions ----------------------------------------------------------
    def read_key(self, req: Request) -> str | None:
        self.seen.append(req)  # read_key sees every request first
        return req.headers.get("x-goog-api-key") or next(iter(req.query.get("key") or ()), None)

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        h = dict(headers or {})
        details: list[dict[str, Any]] = []
        if code == "invalid_api_key":  # the machinery's bad key: Google answers 400
            status, message = 400, "API key not valid. Please pass a valid API key."
            details = [{"@type": TYPE + "ErrorInfo", "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"}}]
        elif status == 429:  # the wait goes in the body only: Google sends no Retry-After
            ms = float(h.pop("retry-after-ms", 0) or 0)
            h.pop("retry-after", None)
            metric = "input_token_count" if kind == "tokens" else "generate_content_requests"
            message = QUOTA_MESSAGE
            details = [
                {"@type": TYPE + "QuotaFailure", "violations": [{
                    "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
                {"@type": TYPE + "Help", "links": [{
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
                {"@type": TYPE + "RetryInfo", "retryDelay": f"{ms / 1000:g}s"},
            ]
        elif status in MESSAGES:
            message = MESSAGES[status]
        elif status == 400 and param:
            details = [{"@type": TYPE + "BadRequest",
                        "fieldViolations": [{"field": param, "description": message}]}]
        status = 404 if status == 405 else status
        body: dict[str, Any] = {"code": status, "message": message,
                                "status": STATUS.get(status, "UNKNOWN")}
        if details:
            body["details"] = details
        return Reply(status, {"error": body}, h)

    def reject(self, violation: Violation) -> Reply:
        return self.error(400, _wording(violation), "invalid_request_error",
                          param=_field(violation) or None)

    def unknown_model(self, model: str) -> Reply:
        return self.error(404, f"models/{model} is not found for API version v1beta, or is not "
                          "supported for generateContent. Call ListModels to see the list of "
                          "available models and their supported methods.", "not_found")

    def internal_error(self) -> Reply:
        return self.error(500, MESSAGES[500], "server_error")

    def stream_error_chunk(self) -> bytes:
        return sse_event({"error": {"code": 500, "message": MESSAGES[500], "status": "INTERNAL"}})

    # -- helpers ----------------------------------------------------------------------------
    def _model(self, req: Request) -> str | Reply:
        """The model named in the path, or the 404 to send."""
        model = unquote(req.params["model"])
        return model if self.knows_model(model) else self.unknown_model(model)

    def _all_models(self) -> list[str]:
        return [*self.models, *(m for m in self.config.models if m not in self.models)]

    def _describe(self, model: str) -> dict[str, Any]:
        embed = model in EMBED_DIMS or "embedding" in model
        return {"name": f"models/{model}", "version": "001", "displayName": model,
                "description": f"Emulated {model}",
                "inputTokenLimit": 2048 if embed else 1_048_576,
                "outputTokenLimit": 1 if embed else 8192,
                "supportedGenerationMethods": (["embedContent", "batchEmbedContents"] if embed else
                                               ["generateContent", "countTokens"]),
                **({} if embed else {"temperature": 1.0, "topP": 0.95, "topK": 64,
                                     "maxTemperature": 2.0})}

    def _answer(self, body: dict[str, Any], model: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The reply as stream pieces (candidate parts, the last with its finish) and usage."""
        _check_parts(body)
        system = _text_of(body.get("systemInstruction"))
        prompt = "\n".join([system] * bool(system) + [_text_of(c) for c in body["contents"]])
        config = body.get("generationConfig") or {}
        limit = config.get("maxOutputTokens") or DEFAULT_MAX_TOKENS
        usage = {"promptTokenCount": count_tokens(prompt)}
        if BLOCK_PROMPT in prompt:
            return [], usage
        if BLOCK_REPLY in prompt:
            return [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH",
                 "blocked": True}]}], usage
        text = reply_text(prompt, self.seed, limit)
        call = self._call(body, text.split(" ")[0])
        if call is not None:
            out_tokens = count_tokens(json.dumps(call))
            chunks = [{"content": {"role": "model", "parts": [{"functionCall": call}]},
                       "finishReason": "STOP", "index": 0}]
        else:
            words = text.split(" ")
            out_tokens = len(words)
            finish = "MAX_TOKENS" if len(words) >= limit else "STOP"
            chunks = [{"content": {"role": "model", "parts": [{"text": w if i == 0 else " " + w}]},
                       "index": 0} for i, w in enumerate(words)]
            chunks[-1]["finishReason"] = finish
        usage.update(candidatesTokenCount=out_tokens,
                     totalTokenCount=usage["promptTokenCount"] + out_tokens)
        return chunks, usage

    @staticmethod
    def _call(body: dict[str, Any], word: str) -> dict[str, Any] | None:
        """The function call that ``toolConfig`` mode ``ANY`` asks for (None: answer text)."""
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {})
        if mode.get("mode") != "ANY":
            return None
        decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        allowed = mode.get("allowedFunctionNames")
        decls = [d for d in decls if not allowed or d["name"] in allowed]
        if not decls:
            raise APIFailure(400, "* GenerateContentRequest.tool_config.function_calling_config: "
                             "mode ANY needs at least one function declaration",
                             param="tool_config.function_calling_config")
        d = decls[0]
        return {"name": d["name"],
                "args": tool_arguments(d.get("parameters") or d.get("parametersJsonSchema"),
                                         word)}

    def _response(self, candidates: list[dict[str, Any]], usage: dict[str, Any],
                  model: str, rid: str) -> dict[str, Any]:
        out: dict[str, Any] = {"candidates": candidates} if candidates else {
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]}}
        out.update(usageMetadata=usage, modelVersion=model, responseId=rid)
        return out

    # -- routes ---------------------------------------------------------------------------
    def generate(self, req: Request) -> Reply:
        model = self._model(req)
        if isinstance(model, Reply):
            return model
        chunks, usage = self._answer(req.data, model)
        candidates = [_merged(chunks)] if chunks else []
        return Reply(200, self._response(candidates, usage, model, uuid.uuid4().hex[:22]))

    def stream_generate(self, req: Request) -> Reply | Stream:
        model = self._model(req)
        if isinstance(model, Reply):
            return model
        chunks, usage = self._answer(req.data, model)
        rid = uuid.uuid4().hex[:22]
        responses = [self._response([c], {"promptTokenCount": usage["promptTokenCount"]}, model,
                                    rid) for c in chunks[:-1]]
        responses.append(self._response(chunks[-1:], usage, model, rid))
        if (req.query.get("alt") or [""])[0] == "sse":
            return Stream(sse_event(r) for r in responses)
        return Stream(_json_array(responses), content_type="application/json")

    def embed(self, req: Request) -> Reply:
        model = self._model(req)
        if isinstance(model, Reply):
            return model
        return Reply(200, {"embedding": self._vector(req.data, model)})

    def batch_embed(self, req: Request) -> Reply:
        model = self._model(req)
        if isinstance(model, Reply):
            return model
        for i, item in enumerate(req.data["requests"]):
            if item["model"] != f"models/{model}":
                raise APIFailure(400, f"Model name in requests[{i}] ({item['model']}) must match "
                                 f"the model in the URL (models/{model}).",
                                 param=f"requests[{i}].model")
        return Reply(200, {"embeddings": [self._vector(r, model) for r in req.data["requests"]]})

    def _vector(self, item: dict[str, Any], model: str) -> dict[str, Any]:
        dim = item.get("outputDimensionality") or EMBED_DIMS.get(model, DEFAULT_EMBED_DIM)
        text = _text_of(item["content"])
        if not text:
            raise APIFailure(400, "* EmbedContentRequest.content: contains an empty Part.",
                             param="content")
        return {"values": [round(float(x), 7) for x in embedding_for(text, dim, self.seed)]}

    def count(self, req: Request) -> Reply:
        model = self._model(req)
        if isinstance(model, Reply):
            return model
        inner = req.data.get("generateContentRequest") or {}
        contents = req.data.get("contents") or inner.get("contents")
        if not contents:
            raise APIFailure(400, "* CountTokensRequest.contents: contents is not specified",
                             param="contents")
        system = _text_of(inner.get("systemInstruction"))
        total = count_tokens("\n".join([system] * bool(system) + [_text_of(c) for c in contents]))
        return Reply(200, {"totalTokens": total, "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": total}]})

    def list_models(self, req: Request) -> Reply:
        return Reply(200, {"models": [self._describe(m) for m in self._all_models()]})

    def get_model(self, req: Request) -> Reply:
        model = self._model(req)
        return model if isinstance(model, Reply) else Reply(200, self._describe(model))


def _merged(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream's candidates as one: the text of all of them, the finish of the last."""
    out = dict(chunks[-1])
    texts = [c["content"]["parts"][0].get("text") for c in chunks if "content" in c]
    if texts and all(isinstance(t, str) for t in texts):
        out["content"] = {"role": "model", "parts": [{"text": "".join(texts)}]}
    return out


def _json_array(responses: list[dict[str, Any]]) -> Iterator[bytes]:
    """A stream without ``alt=sse``: one JSON array, sent element by element."""
    for i, r in enumerate(responses):
        yield (b"[" if i == 0 else b",\r\n") + json.dumps(r).encode()
    yield b"]"

