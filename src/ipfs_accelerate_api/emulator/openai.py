"""The OpenAI API, emulated (see shared PROTOCOLS.md section 1).

Routes below ``/openai``: ``/v1/chat/completions`` (plain and SSE, ``n`` choices, tool calls,
``include_usage``), ``/v1/completions``, ``/v1/embeddings`` (float and base64),
``/v1/models[/{id}]``, ``/v1/images/generations`` (URLs the emulator serves, or base64),
``/v1/audio/transcriptions`` (multipart), ``/v1/audio/speech`` (valid mp3, wav, pcm, flac,
opus, aac). Each route's request rules follow the published OpenAPI description (2.3.0); a
request that breaks one gets the API's 400 ``invalid_request_error`` naming the ``param``,
an unknown model its 404 ``model_not_found``.

Replies are deterministic: text is derived from the prompt and the seed; an embedding is a
stable function of its text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from itertools import chain, zip_longest
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Sequence

from . import _media
from ._rules import (
    AnyValue,
    Array,
    Body,
    Bool,
    File,
    Int,
    Map,
    Model,
    Num,
    Obj,
    OneOf,
    Rule,
    Str,
    Tagged,
    Violation,
)
from ._server import (
    APIFailure,
    Reply,
    Request,
    Route,
    Service,
    Stream,
    content_text,
    count_tokens,
    embedding_for,
    go_duration,
    pieces,
    reply_text,
    sse_event,
    tool_arguments,
)

__all__ = ["OpenAIService", "embedding_for", "reply_text"]

CHAT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-5",
               "gpt-5-mini", "gpt-5-nano", "o3-mini", "o4-mini", "gpt-3.5-turbo")
EMBED_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
              "text-embedding-ada-002": 1536}
MODELS = [*CHAT_MODELS, "gpt-3.5-turbo-instruct", "davinci-002", "babbage-002", *EMBED_DIMS,
          "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "tts-1", "tts-1-hd",
          "gpt-4o-mini-tts", "dall-e-2", "dall-e-3", "gpt-image-1"]
DEFAULT_EMBED_DIM = 256  # a model added through ServiceConfig.models
DEFAULT_MAX_TOKENS = 16
CREATED = 1_700_000_000
MAX_SPEECH_SECONDS = 30.0

# -- request rules (OpenAPI 2.3.0) ---------------------------------------------------------------

FREE = Obj(extra="allow")  # free-form: a tool's parameters, a JSON schema
LEVELS = ("low", "medium", "high")
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
          "verse", "marin", "cedar")
VOICE = OneOf(Str(enum=VOICES), Obj(id=Str(required=True)), required=True)


def _part(**fields: Rule) -> Obj:
    return Obj({"prompt_cache_breakpoint": AnyValue(), **fields})


def _content(parts: Rule, **kw: Any) -> OneOf:
    return OneOf(Str(), Array(parts, min_items=1), **kw)


TEXT = _part(text=Str(required=True))
TEXT_PARTS = Tagged("type", {"text": TEXT})
USER_PARTS = Tagged("type", {
    "text": TEXT,
    "image_url": _part(image_url=Obj(url=Str(required=True), required=True,
                                     detail=Str(enum=("auto", "low", "high")))),
    "input_audio": _part(input_audio=Obj(data=Str(required=True), required=True,
                                         format=Str(enum=("wav", "mp3"), required=True))),
    "file": _part(file=Obj(filename=Str(), file_data=Str(), file_id=Str(), required=True)),
})
TOOL_CALL = Tagged("type", {
    "function": Obj(id=Str(required=True), function=Obj(
        name=Str(required=True), arguments=Str(required=True), required=True)),
    "custom": Obj(id=Str(required=True), custom=Obj(
        name=Str(required=True), input=Str(required=True), required=True)),
})
INSTRUCTION = Obj(content=_content(TEXT_PARTS, required=True), name=Str())
MESSAGE = Tagged("role", {
    "developer": INSTRUCTION,
    "system": INSTRUCTION,
    "user": Obj(content=_content(USER_PARTS, required=True), name=Str()),
    "assistant": Obj(content=_content(Tagged("type", {"text": TEXT,
                                                      "refusal": Obj(refusal=Str(required=True))})),
                     refusal=Str(), name=Str(), audio=Obj(id=Str(required=True)),
                     tool_calls=Array(TOOL_CALL),
                     function_call=Obj(name=Str(required=True), arguments=Str(required=True))),
    "tool": Obj(content=_content(TEXT_PARTS, required=True), tool_call_id=Str(required=True)),
    "function": Obj(content=Str(required=True, nullable=True), name=Str(required=True)),
})
TOOL = Tagged("type", {
    "function": Obj(function=Obj(name=Str(required=True), description=Str(), parameters=FREE,
                                 strict=Bool(), required=True)),
    "custom": Obj(custom=Obj(name=Str(required=True), description=Str(), format=FREE,
                             required=True)),
})
TOOL_CHOICE = OneOf(Str(enum=("none", "auto", "required")), Tagged("type", {
    "function": Obj(function=Obj(name=Str(required=True), required=True)),
    "custom": Obj(custom=Obj(name=Str(required=True), required=True)),
    "allowed_tools": Obj(allowed_tools=Obj(mode=Str(enum=("auto", "required"), required=True),
                                           tools=Array(FREE, required=True), required=True)),
}))
RESPONSE_FORMAT = Tagged("type", {
    "text": Obj(), "json_object": Obj(),
    "json_schema": Obj(json_schema=Obj(name=Str(required=True), description=Str(), schema=FREE,
                                       strict=Bool(), required=True)),
})
#: Fields chat and (legacy) completions share.
SAMPLING: dict[str, Rule] = {
    "temperature": Num(min=0, max=2), "top_p": Num(min=0, max=1), "n": Int(min=1, max=128),
    "frequency_penalty": Num(min=-2, max=2), "presence_penalty": Num(min=-2, max=2),
    "logit_bias": Map(Int(min=-100, max=100)), "seed": Int(), "user": Str(), "stream": Bool(),
    "stop": OneOf(Str(), Array(Str(), min_items=1, max_items=4)),
    "stream_options": Obj(include_usage=Bool(), include_obfuscation=Bool()),
}

CHAT = Body(
    SAMPLING, model=Model(required=True), messages=Array(MESSAGE, required=True, min_items=1),
    max_tokens=Int(min=1), max_completion_tokens=Int(min=1),
    logprobs=Bool(), top_logprobs=Int(min=0, max=20),
    tools=Array(TOOL), tool_choice=TOOL_CHOICE, parallel_tool_calls=Bool(),
    function_call=OneOf(Str(enum=("none", "auto")), Obj(name=Str(required=True))),
    functions=Array(Obj(name=Str(required=True), description=Str(), parameters=FREE),
                    min_items=1, max_items=128),
    response_format=RESPONSE_FORMAT, modalities=Array(Str(enum=("text", "audio"))),
    audio=Obj(voice=VOICE,
              format=Str(enum=("wav", "aac", "mp3", "flac", "opus", "pcm16"), required=True)),
    prediction=Obj(type=Str(enum=("content",), required=True),
                   content=_content(TEXT_PARTS, required=True)),
    reasoning_effort=Str(enum=("none", "minimal", "low", "medium", "high", "xhigh", "max")),
    verbosity=Str(enum=LEVELS),
    service_tier=Str(enum=("auto", "default", "flex", "scale", "priority", "fast")),
    web_search_options=Obj(search_context_size=Str(enum=LEVELS), user_location=Obj(
        type=Str(enum=("approximate",), required=True), required=True,
        approximate=Obj(country=Str(), region=Str(), city=Str(), timezone=Str(), required=True))),
    metadata=Map(Str(max_len=512)), store=Bool(), safety_identifier=Str(max_len=64),
    prompt_cache_key=Str(), prompt_cache_retention=Str(enum=("in_memory", "24h")),
    prompt_cache_options=FREE, moderation=FREE,
)
COMPLETIONS = Body(
    SAMPLING, model=Model(required=True),
    prompt=OneOf(Str(), Array(Str()), Array(Int(), min_items=1),
                 Array(Array(Int(), min_items=1), min_items=1), required=True),
    max_tokens=Int(min=0), best_of=Int(min=0, max=20), echo=Bool(), logprobs=Int(min=0, max=5),
    suffix=Str(),
)
EMBEDDINGS = Body(
    model=Model(required=True),
    input=OneOf(Str(min_len=1), Array(Str(min_len=1), min_items=1, max_items=2048),
                Array(Int(), min_items=1, max_items=2048),
                Array(Array(Int(), min_items=1), min_items=1, max_items=2048), required=True),
    encoding_format=Str(enum=("float", "base64")), dimensions=Int(min=1), user=Str(),
)
IMAGES = Body(
    prompt=Str(required=True, max_len=32000), model=Model(), n=Int(min=1, max=10),
    quality=Str(enum=("standard", "hd", "low", "medium", "high", "auto")),
    response_format=Str(enum=("url", "b64_json")),
    size=Str(enum=("auto", "1024x1024", "1536x1024", "1024x1536", "256x256", "512x512",
                   "1792x1024", "1024x1792")),
    style=Str(enum=("vivid", "natural")), output_format=Str(enum=("png", "jpeg", "webp")),
    output_compression=Int(min=0, max=100), background=Str(enum=("transparent", "opaque", "auto")),
    moderation=Str(enum=("low", "auto")), stream=Bool(), partial_images=Int(min=0, max=3),
    user=Str(),
)
SPEECH = Body(
    model=Model(required=True), input=Str(required=True, max_len=4096), voice=VOICE,
    instructions=Str(max_len=4096), response_format=Str(enum=tuple(_media.AUDIO)),
    speed=Num(min=0.25, max=4), stream_format=Str(enum=("sse", "audio")),
)
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
TRANSCRIPTIONS = Body(
    form=True, file=File(required=True), model=Model(required=True),
    response_format=Str(enum=TRANSCRIPT_FORMATS), temperature=Num(min=0, max=1),
    language=Str(), languages=Array(Str(), min_items=1), prompt=Str(), keywords=Array(Str()),
    include=Array(Str(enum=("logprobs",))), stream=Bool(),
    timestamp_granularities=Array(Str(enum=("word", "segment"))),
    chunking_strategy=OneOf(Str(enum=("auto",)), FREE),
    known_speaker_names=Array(Str(), max_items=4),
    known_speaker_references=Array(Str(), max_items=4),
)
#: Transcript formats each model writes (others: json and text only).
MODEL_TRANSCRIPT_FORMATS = {"whisper-1": ("json", "text", "srt", "verbose_json", "vtt")}


# -- deterministic content ----------------------------------------------------------------------



def _stream_events(base: dict[str, Any], choices: Iterable[dict[str, Any]], usage: dict[str, int],
                   include_usage: bool) -> Iterator[bytes]:
    """A chat or completions stream: one chunk per choice delta (``usage: null`` on each when
    asked), then the usage chunk with no choices, then ``[DONE]``."""
    for choice in choices:
        chunk = {**base, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        yield sse_event(chunk)
    if include_usage:
        yield sse_event({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _choice_chunks(index: int, parts: Iterable[dict[str, Any]],
                   last: dict[str, Any]) -> list[dict[str, Any]]:
    """One choice's stream entries: its parts (unfinished), then ``last`` (with the finish)."""
    return [{"index": index, **p, "logprobs": None, "finish_reason": None} for p in parts] + [
        {"index": index, **last, "logprobs": None}]


def _interleave(per_choice: Iterable[Iterable[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Chunks of several choices in turn, as the API streams ``n > 1``."""
    return (c for c in chain.from_iterable(zip_longest(*per_choice)) if c is not None)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


@dataclass
class _Choice:
    """One chat choice: text, or a call of ``tool`` (a ``tools`` entry)."""

    text: str
    finish: str
    call: dict[str, Any] | None = None

    @classmethod
    def make(cls, prompt: str, seed: int, index: int, limit: int,
             tool: dict[str, Any] | None) -> "_Choice":
        text = reply_text(prompt, seed, limit, index)
        if tool is None:
            return cls(text, "length" if len(text.split()) >= limit else "stop")
        kind = tool["type"]  # "function" or "custom"
        spec = tool[kind]
        word = text.split(" ")[0]
        arguments = json.dumps(tool_arguments(spec.get("parameters"), word))
        payload = ({"name": spec["name"], "arguments": arguments}
                   if kind == "function" else {"name": spec["name"], "input": word})
        call_id = "call_" + hashlib.sha256(f"{seed}:{index}:{prompt}".encode()).hexdigest()[:24]
        return cls(text, "tool_calls", {"id": call_id, "type": kind, kind: payload})

    @property
    def tokens(self) -> int:
        if self.call is not None:
            return count_tokens(json.dumps(self.call[self.call["type"]]))
        return len(self.text.split())

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": None if self.call else self.text,
                               "refusal": None}
        if self.call is not None:
            msg["tool_calls"] = [self.call]
        return msg

    def deltas(self) -> Iterator[dict[str, Any]]:
        """Stream deltas: the role, then text words, or the call's id and name and then its
        arguments in pieces."""
        if self.call is None:
            yield {"role": "assistant", "content": "", "refusal": None}
            for i, w in enumerate(self.text.split(" ")):
                yield {"content": w if i == 0 else " " + w}
            return
        kind = self.call["type"]
        field = "arguments" if kind == "function" else "input"
        payload = self.call[kind]
        head = {"index": 0, "id": self.call["id"], "type": kind,
                kind: {"name": payload["name"], field: ""}}
        yield {"role": "assistant", "content": None, "refusal": None, "tool_calls": [head]}
        for piece in pieces(payload[field]):
            yield {"tool_calls": [{"index": 0, kind: {field: piece}}]}


def _tool_name(tool: Any) -> str | None:
    """A tool's name (``{"type": "function", "function": {"name": ...}}``), if it has one."""
    spec = tool.get(tool.get("type")) if isinstance(tool, dict) else None
    return spec.get("name") if isinstance(spec, dict) else None


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool ``tool_choice`` makes the model call (``None``: answer with text)."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not tools:
        raise APIFailure(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed "
                         "when 'tools' are specified.", param="tool_choice")
    if choice in ("none", "auto"):
        return None
    if choice == "required":
        first: dict[str, Any] = tools[0]
        return first
    kind = choice["type"]
    if kind == "allowed_tools":
        allowed = choice["allowed_tools"]
        names = {_tool_name(t) for t in allowed["tools"]}
        listed: list[dict[str, Any]] = [t for t in tools if _tool_name(t) in names]
        return listed[0] if listed and allowed["mode"] == "required" else None
    name = choice[kind]["name"]
    tool: dict[str, Any]
    for tool in tools:
        if tool["type"] == kind and tool[kind]["name"] == name:
            return tool
    raise APIFailure(400, f"Invalid value for 'tool_choice': no {kind} named '{name}' in 'tools'.",
                     param="tool_choice", code="invalid_value")


# -- the API's wording of a refused request --------------------------------------------------------

_A = {"string": "a string", "integer": "an integer", "number": "a decimal", "boolean": "a boolean",
      "array": "an array", "object": "an object", "null": "null", "file": "a file"}


def _quoted(values: Iterable[Any]) -> str:
    items = [f"'{v}'" for v in values]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


_JSON_HINT = ("We could not parse the JSON body of your request. (HINT: This likely means you "
              "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
              "but what was sent was not valid JSON.)")
# kind -> (words, comparison, code part)
_LIMITS = {"below_min": ("below minimum", ">=", "below_min"),
           "above_max": ("above maximum", "<=", "above_max"),
           "too_short": ("too short", "minimum", "below_min"),
           "too_long": ("too long", "maximum", "above_max")}


def _wording(v: Violation) -> tuple[str, str | None]:
    """OpenAI's message and ``code`` for a violation."""
    p = v.param or "body"
    if v.kind == "json":
        return _JSON_HINT, None
    if v.kind == "missing":
        return f"Missing required parameter: '{p}'.", "missing_required_parameter"
    if v.kind == "unknown":
        return f"Unknown parameter: '{p}'.", "unknown_parameter"
    if v.kind == "type":
        names = [_A.get(t, t) for t in v.expected]
        wanted = names[0] if len(names) == 1 else "one of " + " or ".join(names)
        got = _A.get(v.got, v.got)
        return f"Invalid type for '{p}': expected {wanted}, but got {got} instead.", "invalid_type"
    if v.kind == "enum":
        supported = _quoted(v.expected)
        return f"Invalid value: '{v.got}'. Supported values are: {supported}.", "invalid_value"
    words, limit, code = _LIMITS[v.kind]
    if v.kind in ("below_min", "above_max"):
        number = "integer" if v.rule == "integer" else "decimal"
        message = (f"Invalid '{p}': {number} {words} value. Expected a value {limit} "
                   f"{v.expected}, but got {json.dumps(v.got)} instead.")
        return message, f"{number}_{code}_value"
    what = "array" if v.rule == "array" else "string"
    if v.kind == "too_short" and v.got == 0:
        message = (f"Invalid '{p}': empty {what}. Expected {_A[what]} with minimum length "
                   f"{v.expected}, but got an empty {what} instead.")
        return message, f"empty_{what}"
    message = (f"Invalid '{p}': {what} {words}. Expected {_A[what]} with {limit} length "
               f"{v.expected}, but got {_A[what]} with length {v.got} instead.")
    return message, f"{what}_{code}_length"


class OpenAIService(Service):
    name = "openai"
    models = MODELS
    #: Tokens a chat model takes, prompt and reply together (a test assigns its own mapping,
    #: or lowers ``default_context_window``, to meet the 400 ``context_length_exceeded``).
    context_windows: Mapping[str, int] = MappingProxyType({})
    default_context_window = 128_000
    transcript_formats: Mapping[str, tuple[str, ...]] = MODEL_TRANSCRIPT_FORMATS
    routes: Sequence[Route] = (
        Route("POST", r"/v1/chat/completions", "chat", CHAT),
        Route("POST", r"/v1/completions", "completions", COMPLETIONS),
        Route("POST", r"/v1/embeddings", "embeddings", EMBEDDINGS),
        Route("GET", r"/v1/models", "list_models"),
        Route("GET", r"/v1/models/(?P<model>[^/]+)", "model"),
        Route("POST", r"/v1/images/generations", "images", IMAGES),
        Route("GET", r"/images/(?P<rgb>[0-9a-f]{6})\.png", "image_file", auth=False),
        Route("POST", r"/v1/audio/transcriptions", "transcriptions", TRANSCRIPTIONS),
        Route("POST", r"/v1/audio/speech", "speech", SPEECH),
    )

    # -- the service's conventions ----------------------------------------------------------
    def read_key(self, req: Request) -> str | None:
        auth = req.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        h = {"x-request-id": f"req_{uuid.uuid4().hex[:24]}"}
        h.update(headers or {})
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return Reply(status, body, h)

    def reject(self, violation: Violation) -> Reply:
        message, code = _wording(violation)
        return self.error(400, message, "invalid_request_error", code, violation.param)

    def unknown_model(self, model: str) -> Reply:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return self.error(404, message, "invalid_request_error", "model_not_found")

    def internal_error(self) -> Reply:
        return self.error(500, "The server had an error while processing your request. Sorry "
                          "about that!", "server_error")

    def ratelimit_headers(self, rpm: Any, tpm: Any) -> dict[str, str]:
        h: dict[str, str] = {}
        for name, state in (("requests", rpm), ("tokens", tpm)):
            if state:
                limit, remaining, reset = state
                h[f"x-ratelimit-limit-{name}"] = str(int(limit))
                h[f"x-ratelimit-remaining-{name}"] = str(int(remaining))
                h[f"x-ratelimit-reset-{name}"] = go_duration(reset)
        return h

    def stream_error_chunk(self) -> bytes:
        return sse_event({"error": {"message": "The server had an error while streaming.",
                               "type": "server_error", "param": None, "code": None}})

    def estimate_tokens(self, req: Request) -> int:
        return max(1, len(req.body) // 4)

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex[:24]}", "openai-version": "2020-10-01",
                "openai-processing-ms": "1"}

    # -- routes ---------------------------------------------------------------------------
    def chat(self, req: Request) -> Reply | Stream:
        body = req.data
        tool = _chosen_tool(body)
        prompt = "\n".join(content_text(m.get("content")) for m in body["messages"])
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        window = self.context_windows.get(body["model"], self.default_context_window)
        asked = count_tokens(prompt) + (body.get("max_completion_tokens") or body.get("max_tokens") or 0)
        if asked > window:
            return self.error(
                400, f"This model's maximum context length is {window} tokens. However, you "
                     f"requested {asked} tokens. Please reduce the length of the messages.",
                "invalid_request_error", "context_length_exceeded", param="messages")
        choices = [_Choice.make(prompt, self.seed, i, limit, tool)
                   for i in range(body.get("n") or 1)]
        usage = _usage(count_tokens(prompt), sum(c.tokens for c in choices))
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:20]}", "created": CREATED,
                "model": body["model"], "system_fingerprint": "fp_emulator"}
        if body.get("stream"):
            per_choice = [_choice_chunks(i, ({"delta": d} for d in c.deltas()),
                                         {"delta": {}, "finish_reason": c.finish})
                          for i, c in enumerate(choices)]
            events = _stream_events({**base, "object": "chat.completion.chunk"},
                                    _interleave(per_choice), usage, _include_usage(body))
            return Stream(events, headers=self._headers())
        return Reply(200, {
            **base, "object": "chat.completion",
            "choices": [{"index": i, "message": c.message(), "logprobs": None,
                         "finish_reason": c.finish} for i, c in enumerate(choices)],
            "usage": usage,
        }, self._headers())

    def completions(self, req: Request) -> Reply | Stream:
        body = req.data
        n = body.get("n") or 1
        best_of = body.get("best_of")
        if best_of is not None and best_of < n:
            raise APIFailure(400, "best_of must be greater than or equal to n.", param="best_of")
        if best_of is not None and best_of > 1 and body.get("stream"):
            raise APIFailure(400, "Cannot stream results with best_of > 1.", param="best_of")
        prompt = body["prompt"]
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            prompt = [prompt]
        prompts = [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt] or [""]
        limit = DEFAULT_MAX_TOKENS if body.get("max_tokens") is None else body["max_tokens"]
        choices, prompt_tokens = [], 0
        for p in prompts:
            prompt_tokens += count_tokens(p)
            for j in range(n):
                text = reply_text(p, self.seed, limit, j)
                finish = "length" if len(text.split()) >= limit else "stop"
                choices.append((p + text if body.get("echo") else text, finish))
        usage = _usage(prompt_tokens, sum(len(t.split()) for t, _ in choices))
        base = {"id": f"cmpl-{uuid.uuid4().hex[:20]}", "object": "text_completion",
                "created": CREATED, "model": body["model"]}
        if body.get("stream"):
            per_choice = [_choice_chunks(i, ({"text": w if k == 0 else " " + w}
                                             for k, w in enumerate(t.split())),
                                         {"text": "", "finish_reason": f})
                          for i, (t, f) in enumerate(choices)]
            events = _stream_events(base, _interleave(per_choice), usage, _include_usage(body))
            return Stream(events, headers=self._headers())
        return Reply(200, {**base, "usage": usage, "choices": [
            {"text": t, "index": i, "logprobs": None, "finish_reason": f}
            for i, (t, f) in enumerate(choices)]}, self._headers())

    def embeddings(self, req: Request) -> Reply:
        body = req.data
        model, inputs = body["model"], body["input"]
        if isinstance(inputs, str) or isinstance(inputs[0], int):
            inputs = [inputs]
        native = EMBED_DIMS.get(model, DEFAULT_EMBED_DIM)
        dim = body.get("dimensions") or native
        asked = body.get("dimensions") is not None
        if asked and (model == "text-embedding-ada-002" or dim > native):
            raise APIFailure(400, f"This model does not support {dim} dimensions (it has "
                             f"{native}).", param="dimensions", code="invalid_value")
        as_base64 = body.get("encoding_format") == "base64"
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += count_tokens(text)
            vec = embedding_for(text, dim, self.seed)
            emb: Any = (base64.b64encode(vec.astype("<f4").tobytes()).decode() if as_base64
                        else vec.tolist())
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return Reply(200, {"object": "list", "data": data, "model": model,
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                     self._headers())

    def _all_models(self) -> list[str]:
        return [*self.models, *(m for m in self.config.models if m not in self.models)]

    def list_models(self, req: Request) -> Reply:
        return Reply(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "emulator"}
            for m in self._all_models()]}, self._headers())

    def model(self, req: Request) -> Reply:
        m = req.params["model"]
        if not self.knows_model(m):
            raise APIFailure(404, f"The model '{m}' does not exist", code="model_not_found",
                             param="model")
        return Reply(200, {"id": m, "object": "model", "created": CREATED, "owned_by": "emulator"},
                     self._headers())

    def images(self, req: Request) -> Reply:
        body = req.data
        model, n, prompt = body.get("model") or "dall-e-2", body.get("n") or 1, body["prompt"]
        if model == "dall-e-3" and n != 1:
            raise APIFailure(400, "Invalid 'n': dall-e-3 only supports n=1.", param="n",
                             code="invalid_value")
        gpt_image = model.startswith("gpt-image")
        if gpt_image and body.get("response_format") is not None:
            raise APIFailure(400, "Unknown parameter: 'response_format'.", param="response_format",
                             code="unknown_parameter")
        fmt = "b64_json" if gpt_image else body.get("response_format") or "url"
        data = []
        for i in range(n):
            rgb = hashlib.sha256((prompt if i == 0 else f"{i}:{prompt}").encode()).digest()[:3]
            item = ({"url": f"{req.root}/images/{rgb.hex()}.png"} if fmt == "url"
                    else {"b64_json": base64.b64encode(_media.png(rgb)).decode()})
            if model == "dall-e-3":
                item["revised_prompt"] = prompt
            data.append(item)
        return Reply(200, {"created": int(time.time()), "data": data}, self._headers())

    def image_file(self, req: Request) -> Reply:
        """What an image URL points at (no key needed, as for the API's signed URLs)."""
        png = _media.png(bytes.fromhex(req.params["rgb"]))
        return Reply(200, png, {}, content_type="image/png")

    def transcriptions(self, req: Request) -> Reply:
        fields = req.data
        upload, model = fields["file"], fields["model"]
        fmt = fields.get("response_format") or "json"
        allowed = self.transcript_formats.get(model, ("json", "text"))
        if fmt not in allowed:
            raise APIFailure(400, f"response_format '{fmt}' is not compatible with model "
                             f"'{model}'. Use {_quoted(allowed)} instead.",
                             param="response_format", code="unsupported_value")
        granular = fields.get("timestamp_granularities")
        if granular and fmt != "verbose_json":
            raise APIFailure(400, "timestamp_granularities requires response_format=verbose_json.",
                             param="timestamp_granularities", code="invalid_value")
        text = f"transcript of {len(upload.data)} bytes from {upload.filename or 'audio'}"
        if fmt in ("text", "srt", "vtt"):
            cue = ("00:00:00,000 --> 00:00:01,000" if fmt == "srt"
                   else "00:00:00.000 --> 00:00:01.000")
            body = {"text": text + "\n", "srt": f"1\n{cue}\n{text}\n\n",
                    "vtt": f"WEBVTT\n\n{cue}\n{text}\n\n"}[fmt]
            return Reply(200, body, self._headers(), content_type="text/plain; charset=utf-8")
        usage = {"type": "duration", "seconds": 1}
        if fmt == "json":
            return Reply(200, {"text": text, "usage": usage}, self._headers())
        out: dict[str, Any] = {"task": "transcribe", "language": "english", "duration": 1.0,
                               "text": text, "usage": usage}
        if not granular or "segment" in granular:
            out["segments"] = [{"id": 0, "seek": 0, "start": 0.0, "end": 1.0, "text": text,
                                "tokens": list(range(len(text.split()))), "temperature": 0.0,
                                "avg_logprob": -0.1, "compression_ratio": 1.0,
                                "no_speech_prob": 0.0}]
        if granular and "word" in granular:
            words = text.split()
            out["words"] = [{"word": w, "start": i / len(words), "end": (i + 1) / len(words)}
                            for i, w in enumerate(words)]
        return Reply(200, out, self._headers())

    def speech(self, req: Request) -> Reply | Stream:
        body = req.data
        fmt, text = body.get("response_format") or "mp3", body["input"]
        seconds = min(MAX_SPEECH_SECONDS, 0.25 + 0.05 * len(text)) / (body.get("speed") or 1.0)
        audio = _media.audio(fmt, seconds, hashlib.sha256(text.encode()).digest()[0] % 16)
        if body.get("stream_format") != "sse":
            return Reply(200, audio, self._headers(), content_type=_media.AUDIO_TYPES[fmt])
        if body["model"] in ("tts-1", "tts-1-hd"):
            raise APIFailure(400, f"stream_format 'sse' is not supported by model "
                             f"'{body['model']}'.", param="stream_format", code="unsupported_value")
        tokens = count_tokens(text)
        done = {"type": "speech.audio.done", "usage": {
            "input_tokens": tokens, "output_tokens": len(audio) // 64,
            "total_tokens": tokens + len(audio) // 64}}
        events = chain((sse_event({"type": "speech.audio.delta",
                              "audio": base64.b64encode(audio[i:i + 4096]).decode()})
                        for i in range(0, len(audio), 4096)), [sse_event(done)])
        return Stream(events, headers=self._headers())


def _include_usage(body: dict[str, Any]) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))
