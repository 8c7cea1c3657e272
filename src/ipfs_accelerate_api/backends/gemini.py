"""Google Gemini (the Generative Language API, ``v1beta``).

Thin: OpenAI-style messages and parameters become ``contents``, ``systemInstruction``,
``generationConfig`` and ``tools``; answers, streams, Google RPC errors (a bad key is a 400
``INVALID_ARGUMENT`` here, read as :class:`AuthenticationError`) and ``RetryInfo`` come back
unified. The key travels in ``x-goog-api-key``, never in the URL. The model is a path
segment (``gemini-2.0-flash`` or ``models/gemini-2.0-flash``), checked so that it can only
ever be one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Mapping

import numpy as np

from .._enums import Priority
from ..config import Secret
from ..engine import OpResult
from ..engine.retry import parse_duration
from ..errors import (
    APIStatusError,
    AuthenticationError,
    ContentFilteredError,
    ResponseFormatError,
    StreamInterrupted,
)
from ..transport import Response, SSEEvent
from ..types import ChatChunk, ChatMessage, ChatResponse, CompletionResponse, ToolCall, Usage
from ._shape import as_count, as_dict, as_list, as_str, field
from .base import (
    Backend,
    Plan,
    StreamParser,
    call_arguments,
    check_messages,
    content_parts,
    estimate_tokens,
    unified_finish_reason,
)

__all__ = ["GeminiBackend"]

DEFAULT_MAX_TOKENS_ESTIMATE = 256
F32_MAX = float(np.finfo(np.float32).max)

FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
#: Finish reasons that mean the answer was withheld: raised as ContentFilteredError.
FILTERED = frozenset({"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
                      "IMAGE_SAFETY"})

#: Unified parameter -> generationConfig field.
GENERATION = {"max_tokens": "maxOutputTokens", "max_completion_tokens": "maxOutputTokens",
              "max_output_tokens": "maxOutputTokens", "temperature": "temperature",
              "top_p": "topP", "top_k": "topK", "n": "candidateCount", "seed": "seed",
              "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty",
              "response_mime_type": "responseMimeType", "stop": "stopSequences"}
EMBED_PARAMS = {"task_type": "taskType", "title": "title", "dimensions": "outputDimensionality",
                "output_dimensionality": "outputDimensionality"}
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

_MODEL_NAME = re.compile(r"(?:models/|tunedModels/)?([A-Za-z0-9][A-Za-z0-9._-]*)")
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[^,;]*)*?);base64,(.*)", re.DOTALL)


def model_path(model: str) -> str:
    """``/models/{name}`` for ``name`` or ``models/name``: one path segment, or ValueError."""
    match = _MODEL_NAME.fullmatch(model)
    if match is None:
        raise ValueError(f"gemini: model must be a name such as 'gemini-2.0-flash' or "
                         f"'models/gemini-2.0-flash' (letters, digits, '.', '_', '-'), got {model!r}")
    prefix = "tunedModels" if model.startswith("tunedModels/") else "models"
    return f"/{prefix}/{match.group(1)}"


# -- requests ------------------------------------------------------------------------------------

def _image_part(url: str, where: str) -> dict[str, Any]:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        if url.startswith("data:"):
            raise ValueError(f"{where}: a data URL must be base64-encoded ('data:image/png;base64,...')")
        return {"fileData": {"fileUri": url}}
    try:
        base64.b64decode(match.group(3), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{where}: the data URL's base64 does not decode") from exc
    return {"inlineData": {"mimeType": match.group(1) or "application/octet-stream",
                           "data": match.group(3)}}


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    return [{"text": value} if kind == "text" else _image_part(value, where)
            for kind, value in content_parts(content, where, "gemini")]


def _function_response(content: Any) -> dict[str, Any]:
    """A tool's result as the object ``functionResponse.response`` must be."""
    text = content if isinstance(content, str) else "".join(
        p.get("text", "") for p in content or [] if isinstance(p.get("text"), str))
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return value if isinstance(value, dict) else {"output": value}


def to_contents(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """OpenAI-style messages as Gemini ``contents`` and ``systemInstruction``: roles become
    ``user``/``model``, tool calls ``functionCall`` parts, tool results ``functionResponse``
    parts in a user turn; consecutive turns of one role are joined."""
    contents: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(check_messages(messages)):
        role, where = m["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            system += _parts(m["content"], f"{where}.content")
            continue
        if role == "user":
            role, parts = "user", _parts(m["content"], f"{where}.content")
        elif role == "assistant":
            role, parts = "model", _parts(m.get("content"), f"{where}.content")
            for k, call in enumerate(m.get("tool_calls") or []):
                fn = call.get("function") or {}
                name = fn.get("name")
                if not isinstance(name, str):
                    raise TypeError(f"{where}.tool_calls[{k}].function.name must be a string")
                call_names[str(call.get("id"))] = name
                parts.append({"functionCall": {
                    "name": name, "args": call_arguments(fn.get("arguments"),
                                                     f"{where}.tool_calls[{k}]")}})
        elif role == "tool":
            name = call_names.get(str(m.get("tool_call_id"))) or m.get("name")
            if not isinstance(name, str):
                raise ValueError(f"{where}: a tool result needs the 'tool_call_id' of an earlier "
                                 "assistant tool call (or a 'name')")
            role, parts = "user", [{"functionResponse": {
                "name": name, "response": _function_response(m["content"])}}]
        else:
            raise ValueError(f"{where}: gemini has no role {role!r} (use system, user, "
                             "assistant or tool)")
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise ValueError("messages: gemini needs at least one user or assistant message")
    return contents, ({"parts": system} if system else None)


def _tools(tools: Any, choice: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if tools is not None:
        decls = []
        for i, t in enumerate(tools):
            fn = t.get("function", t) if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise TypeError(f"tools[{i}] must be {{'type': 'function', 'function': "
                                "{'name': ..., 'parameters': {...}}}")
            decl = {"name": fn["name"]}
            if fn.get("description") is not None:
                decl["description"] = fn["description"]
            if fn.get("parameters") is not None:
                decl["parametersJsonSchema"] = fn["parameters"]  # JSON Schema as it is
            decls.append(decl)
        out["tools"] = [{"functionDeclarations": decls}]
    if choice is not None:
        if isinstance(choice, str) and choice in TOOL_MODES:
            config: dict[str, Any] = {"mode": TOOL_MODES[choice]}
        elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
            config = {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
        else:
            raise ValueError(f"tool_choice must be 'auto', 'none', 'required' or "
                             f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}")
        out["toolConfig"] = {"functionCallingConfig": config}
    return out


def request_body(messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """A ``generateContent`` body: unified parameters mapped, Gemini's own fields
    (``safetySettings``, ``generationConfig``...) passed through as they are."""
    contents, system = to_contents(messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = system
    config = dict(params.pop("generationConfig", None) or {})
    body.update(_tools(params.pop("tools", None), params.pop("tool_choice", None)))
    for name in list(params):
        if name in GENERATION and params[name] is not None:
            value = params.pop(name)
            config[GENERATION[name]] = [value] if name == "stop" and isinstance(value, str) else value
    body.update(params)
    if config:
        body["generationConfig"] = config
    return body


# -- answers -------------------------------------------------------------------------------------

def _usage(data: Any) -> Usage | None:
    if data is None:
        return None
    data = as_dict(data, "usageMetadata")
    p = as_count(data.get("promptTokenCount"), "usageMetadata.promptTokenCount")
    c = as_count(data.get("candidatesTokenCount"), "usageMetadata.candidatesTokenCount")
    total = data.get("totalTokenCount")
    return Usage(p, c, p + c if total is None else as_count(total, "usageMetadata.totalTokenCount"))


def _candidate(data: dict[str, Any], backend: str,
               chunk: bool = False) -> tuple[str, list[ToolCall], str | None]:
    """The first candidate's text, function calls and raw finish reason; a withheld answer
    (a blocked prompt, a safety finish) raises :class:`ContentFilteredError`. Only a stream
    ``chunk`` may have no candidate (one that carries usage alone)."""
    candidates = as_list(data.get("candidates") or [], "candidates")
    if not candidates:
        feedback = as_dict(data.get("promptFeedback") or {}, "promptFeedback")
        reason = as_str(feedback.get("blockReason"), "promptFeedback.blockReason", optional=True)
        if reason is not None:
            raise ContentFilteredError(f"{backend}: the prompt was blocked ({reason})",
                                       reason=reason, backend=backend)
        if not chunk:
            raise ResponseFormatError(f"{backend}: the answer has no candidates")
        return "", [], None
    cand = as_dict(candidates[0], "candidates[0]")
    finish = as_str(cand.get("finishReason"), "candidates[0].finishReason", optional=True)
    if finish in FILTERED:
        raise ContentFilteredError(f"{backend}: the answer was withheld ({finish})",
                                   reason=finish, backend=backend)
    content = as_dict(cand.get("content") or {}, "candidates[0].content")
    text: list[str] = []
    calls: list[ToolCall] = []
    for i, part in enumerate(as_list(content.get("parts") or [], "content.parts")):
        where = f"content.parts[{i}]"
        part = as_dict(part, where)
        if part.get("functionCall") is not None:
            fc = as_dict(part["functionCall"], f"{where}.functionCall")
            name = as_str(field(fc, "name", f"{where}.functionCall"), f"{where}.functionCall.name")
            args = as_dict(fc.get("args") or {}, f"{where}.functionCall.args")
            call_id = as_str(fc.get("id"), f"{where}.functionCall.id", optional=True)
            calls.append(ToolCall(id=call_id or f"call_{len(calls)}_{name}", name=name,
                                  arguments=json.dumps(args)))
        elif part.get("thought") is not True:  # thoughts are not the answer
            text.append(as_str(part.get("text", ""), f"{where}.text", optional=True) or "")
    return "".join(text), calls, finish


def _finish(raw: str | None, calls: list[ToolCall]) -> str | None:
    return "tool_calls" if calls else unified_finish_reason(raw, FINISH, "finishReason")


def _row(value: Any, where: str) -> np.ndarray:
    """One ``{"values": [...]}`` embedding as float32: numbers only, each within float32."""
    values = as_list(field(as_dict(value, where), "values", where), f"{where}.values",
                     nonempty=True)
    for x in values:
        if type(x) not in (int, float) or not abs(x) <= F32_MAX:  # NaN fails too
            raise ResponseFormatError(f"{where}.values should hold float32 numbers, got {x!r}")
    return np.asarray(values, dtype=np.float32)


class _Stream(StreamParser):
    """A Gemini SSE stream: each event is a whole response holding the next piece; no
    terminator, so the event with a ``finishReason`` marks it complete."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def feed(self, ev: SSEEvent) -> ChatChunk:
        obj = as_dict(ev.json(), "stream chunk")
        if obj.get("error") is not None:
            err = obj["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise StreamInterrupted(f"{self.backend}: error in stream: {str(msg)[:500]}",
                                    backend=self.backend)
        text, calls, raw = _candidate(obj, self.backend, chunk=True)
        if raw is not None:
            self.complete = True
        return ChatChunk(text=text, finish_reason=_finish(raw, calls),
                         usage=_usage(obj.get("usageMetadata")), raw=obj, tool_calls=[
                             {"index": i, "id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments}}
                             for i, c in enumerate(calls)])


class GeminiBackend(Backend):
    name = "gemini"
    env_prefix = ("GEMINI", "GOOGLE")
    context_window_phrases = ("exceeds the maximum number of tokens",)
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"
    embed_max_items = 100  # batchEmbedContents takes at most 100 requests

    # -- conventions ----------------------------------------------------------------------
    def _auth_headers(self, key: Secret | None) -> dict[str, str]:
        return {"x-goog-api-key": key.reveal()} if key is not None else {}

    @staticmethod
    def _details(body: Any) -> list[dict[str, Any]]:
        err = body.get("error") if isinstance(body, dict) else None
        details = err.get("details") if isinstance(err, dict) else None
        return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []

    def _error_message(self, body: Any) -> tuple[str, str | None]:
        """The message, and as code the ``ErrorInfo`` reason (``API_KEY_INVALID``) or else
        the RPC status (``RESOURCE_EXHAUSTED``)."""
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return str(body)[:500], None
        reasons = [d.get("reason") for d in self._details(body)
                   if str(d.get("@type", "")).endswith("ErrorInfo")]
        return str(err.get("message") or "error"), (reasons[0] if reasons else err.get("status"))

    def _retry_hint(self, body: Any) -> float | None:
        for d in self._details(body):
            if str(d.get("@type", "")).endswith("RetryInfo") and isinstance(d.get("retryDelay"), str):
                return parse_duration(d["retryDelay"].strip())
        return None

    def _error_class(self, status: int, body: Any, code: str | None) -> type[APIStatusError]:
        """Google answers a bad key with 400 ``INVALID_ARGUMENT``: an authentication error."""
        if status == 400 and (code == "API_KEY_INVALID"
                              or "API key not valid" in self._error_message(body)[0]):
            return AuthenticationError
        return super()._error_class(status, body, code)

    @staticmethod
    def _estimate(body: Mapping[str, Any], encoded: bytes) -> int:
        out = (body.get("generationConfig") or {}).get("maxOutputTokens")
        if isinstance(out, bool) or not isinstance(out, int) or out <= 0:
            out = DEFAULT_MAX_TOKENS_ESTIMATE  # not ours to refuse: the service answers 400
        return len(encoded) // 4 + 1 + out

    # -- chat -----------------------------------------------------------------------------
    def _generate(self, messages: list[dict[str, Any]], model: str, params: dict[str, Any],
                  make: Any) -> Plan:
        path = model_path(model) + ":generateContent"
        body = request_body(messages, params)

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            text, calls, raw = _candidate(data, self.name)
            usage = _usage(data.get("usageMetadata")) or Usage()
            rid = as_str(data.get("responseId"), "responseId", optional=True)
            version = as_str(data.get("modelVersion"), "modelVersion", optional=True)
            return OpResult(make(text, calls, _finish(raw, calls), usage, version, rid, data),
                            usage.prompt_tokens, usage.completion_tokens, resp.headers)

        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", path, parse, body=encoded), self._estimate(body, encoded))

    def _plan_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        def make(text: str, calls: list[ToolCall], finish: str | None, usage: Usage,
                 version: str | None, rid: str | None, data: Any) -> ChatResponse:
            message = ChatMessage("assistant", (text or None) if calls else text, calls)
            return ChatResponse(text, message, finish, usage, version, rid, data)

        return self._generate(messages, model, params, make)

    def _plan_complete(self, prompt: str, *, model: str, **params: Any) -> Plan:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        return self._generate([{"role": "user", "content": prompt}], model, params,
                              lambda text, calls, finish, usage, version, rid, data:
                              CompletionResponse(text, finish, usage, version, rid, data))

    def _plan_stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        path = model_path(model) + ":streamGenerateContent?alt=sse"
        body = request_body(messages, params)
        encoded = json.dumps(body).encode()
        name = self.name
        return self._stream_plan(path, encoded, self._estimate(body, encoded),
                                 lambda: _Stream(name))

    # -- tokens, embeddings, models ---------------------------------------------------------
    def count_tokens(self, messages: str | list[dict[str, Any]], *, model: str | None = None,
                     priority: int = Priority.NORMAL) -> int:
        """How many tokens the prompt (a string or chat messages) counts for ``model``."""
        return self._run("count_tokens", messages, model=model, priority=priority)  # type: ignore[no-any-return]

    async def acount_tokens(self, messages: str | list[dict[str, Any]], **kw: Any) -> int:
        return await self._arun("count_tokens", messages, **kw)  # type: ignore[no-any-return]

    def _plan_count_tokens(self, messages: Any, *, model: str) -> Plan:
        path = model_path(model)
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        contents, system = to_contents(messages)
        body: dict[str, Any] = {"contents": contents}
        if system:  # only a whole request carries a system instruction
            body = {"generateContentRequest": {"model": path[1:], "contents": contents,
                                               "systemInstruction": system}}

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            return OpResult(as_count(field(data, "totalTokens", "response"), "totalTokens"),
                            headers=resp.headers)

        return Plan(self._http("POST", path + ":countTokens", parse, json_body=body))

    def _plan_embed(self, texts: list[str], *, model: str, **params: Any) -> Plan:
        path = model_path(model)
        extra = {EMBED_PARAMS.get(k, k): v for k, v in params.items() if v is not None}
        n = len(texts)
        if n == 1:
            body: dict[str, Any] = {"content": {"parts": [{"text": texts[0]}]}, **extra}
            path += ":embedContent"
        else:
            body = {"requests": [{"model": path[1:], "content": {"parts": [{"text": t}]}, **extra}
                                 for t in texts]}
            path += ":batchEmbedContents"

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            if n == 1:
                rows = [_row(field(data, "embedding", "response"), "embedding")]
            else:
                items = as_list(field(data, "embeddings", "response"), "embeddings")
                if len(items) != n:
                    raise ResponseFormatError(f"{self.name}: asked for {n} embeddings, "
                                              f"got {len(items)}")
                rows = [_row(it, f"embeddings[{i}]") for i, it in enumerate(items)]
            if any(len(r) != len(rows[0]) for r in rows):
                raise ResponseFormatError(f"{self.name}: embeddings of different dimensions")
            return OpResult(np.vstack(rows), headers=resp.headers)

        return Plan(self._http("POST", path, parse, json_body=body),
                    sum(estimate_tokens(t) for t in texts))

    def _plan_list_models(self) -> Plan:
        def parse(resp: Response) -> OpResult:
            items = as_list(field(as_dict(resp.json(), "response"), "models", "response"), "models")
            names = [as_str(field(as_dict(m, f"models[{i}]"), "name", f"models[{i}]"),
                            f"models[{i}].name") for i, m in enumerate(items)]
            return OpResult([n.removeprefix("models/") for n in names], headers=resp.headers)

        return Plan(self._http("GET", "/models?pageSize=1000", parse))
