"""The Anthropic Messages API, emulated (see shared PROTOCOLS.md section 2). Service name
``claude``; clients use ``http://HOST:PORT/claude`` as their base URL (the API's paths start
with ``/v1``, as below ``https://api.anthropic.com``).

Routes: ``/v1/messages`` (plain and named-event SSE, text and ``tool_use`` blocks, stop
sequences, ``max_tokens``), ``/v1/messages/count_tokens``, ``/v1/models[/{id}]`` (paged).
The key is read from ``x-api-key`` or ``Authorization: Bearer`` (the SDK sends either); an
``anthropic-version`` header is required. A refused request gets the API's 400
``invalid_request_error`` whose message starts with the field (``max_tokens: Field
required``), an unknown model 404 ``not_found_error``, a 429 ``rate_limit_error`` with
``retry-after``, an injected 500 ``api_error`` and an injected 503 the API's own 529
``overloaded_error``; an in-stream fault is ``event: error`` (``overloaded_error``).

Replies are deterministic for a seed. :attr:`ClaudeService.received` keeps the headers and
body of recent requests, for tests to see what a client sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections import deque
from typing import Any, Iterator

from ._rules import Array, Body, Bool, Int, Model, Num, Obj, OneOf, Rule, Str, Tagged, Violation
from ._server import (
    APIFailure,
    Reply,
    Request,
    Route,
    Service,
    Stream,
    content_text,
    count_tokens,
    pieces,
    reply_text,
    tool_arguments,
)

__all__ = ["MODELS", "ClaudeService", "input_tokens", "wording"]

MODELS = (
    "claude-opus-4-1-20250805", "claude-opus-4-1", "claude-opus-4-20250514", "claude-opus-4-0",
    "claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "claude-sonnet-4-20250514",
    "claude-sonnet-4-0", "claude-3-7-sonnet-20250219", "claude-3-7-sonnet-latest",
    "claude-haiku-4-5-20251001", "claude-haiku-4-5", "claude-3-5-haiku-20241022",
    "claude-3-5-haiku-latest", "claude-3-haiku-20240307",
)
#: An ``anthropic-version`` is a date (2023-06-01 is the stable one; newer SDKs send later ones).
VERSION = re.compile(r"^20[2-9][0-9]-[01][0-9]-[0-3][0-9]$")
CREATED = "2025-02-19T00:00:00Z"
DEFAULT_PAGE, MAX_PAGE = 20, 1000
RECEIVED_KEPT = 64

#: error.type by HTTP status (PROTOCOLS.md section 2, "Errors").
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
               529: "overloaded_error"}
_KNOWN_TYPES = frozenset(ERROR_TYPES.values())

# -- request rules (the Messages API's published shapes) ----------------------------------------

FREE = Obj(extra="allow")
CACHE = Obj(type=Str(enum=("ephemeral",), required=True), ttl=Str(enum=("5m", "1h")))


def _block(**fields: Rule) -> Obj:
    return Obj({"cache_control": CACHE, **fields})


TEXT = _block(text=Str(required=True), citations=Array(FREE))
IMAGE = _block(source=Tagged("type", {
    "base64": Obj(media_type=Str(enum=("image/jpeg", "image/png", "image/gif", "image/webp"),
                                 required=True), data=Str(required=True)),
    "url": Obj(url=Str(required=True)),
    "file": Obj(file_id=Str(required=True)),
}, required=True))
DOCUMENT = _block(source=FREE, title=Str(), context=Str(), citations=FREE)
TOOL_RESULT = _block(
    tool_use_id=Str(required=True), is_error=Bool(),
    content=OneOf(Str(), Array(Tagged("type", {"text": TEXT, "image": IMAGE, "document": DOCUMENT}))))
TOOL_USE = _block(id=Str(required=True), name=Str(required=True, min_len=1),
                  input=Obj(extra="allow", required=True))
USER_BLOCK = Tagged("type", {"text": TEXT, "image": IMAGE, "document": DOCUMENT,
                             "tool_result": TOOL_RESULT})
ASSISTANT_BLOCK = Tagged("type", {
    "text": TEXT, "tool_use": TOOL_USE,
    "thinking": Obj(thinking=Str(required=True), signature=Str(required=True)),
    "redacted_thinking": Obj(data=Str(required=True)),
})
MESSAGE = Tagged("role", {
    "user": Obj(content=OneOf(Str(), Array(USER_BLOCK), required=True)),
    "assistant": Obj(content=OneOf(Str(), Array(ASSISTANT_BLOCK), required=True)),
})
TOOL = Obj(name=Str(required=True, min_len=1, max_len=128), description=Str(),
           input_schema=Obj(type=Str(enum=("object",), required=True), extra="allow",
                            required=True),
           type=Str(enum=("custom",)), cache_control=CACHE)
_PARALLEL = {"disable_parallel_tool_use": Bool()}
TOOL_CHOICE = Tagged("type", {"auto": Obj(_PARALLEL), "any": Obj(_PARALLEL), "none": Obj(),
                              "tool": Obj(_PARALLEL, name=Str(required=True))})
SYSTEM = OneOf(Str(), Array(Tagged("type", {"text": TEXT})))
THINKING = Tagged("type", {"enabled": Obj(budget_tokens=Int(min=1024, required=True)),
                           "disabled": Obj()})
#: What messages and count_tokens share.
PROMPT: dict[str, Rule] = {
    "model": Model(required=True), "messages": Array(MESSAGE, required=True, min_items=1),
    "system": SYSTEM, "tools": Array(TOOL), "tool_choice": TOOL_CHOICE, "thinking": THINKING,
}
MESSAGES = Body(
    PROMPT, max_tokens=Int(min=1, required=True), temperature=Num(min=0, max=1),
    top_p=Num(min=0, max=1), top_k=Int(min=0), stop_sequences=Array(Str()), stream=Bool(),
    metadata=Obj(user_id=Str(max_len=256)), service_tier=Str(enum=("auto", "standard_only")),
)
COUNT_TOKENS = Body(PROMPT)

# -- the API's wording of a refused request (pydantic's, with dotted paths) -----------------------

_TYPE_WORDS = {"string": "a valid string", "integer": "a valid integer", "number": "a valid number",
               "boolean": "a valid boolean", "array": "a valid list",
               "object": "a valid dictionary"}


def _where(v: Violation) -> str:
    return ".".join(str(p) for p in v.path) or "body"


def wording(v: Violation) -> str:
    """The API's message for a violation: the field's dotted path, then what is wrong."""
    p = _where(v)
    if v.kind == "json":
        return "Invalid JSON in request body"
    if v.kind == "missing":
        return f"{p}: Field required"
    if v.kind == "unknown":
        return f"{p}: Extra inputs are not permitted"
    if v.kind == "type":
        return f"{p}: Input should be {' or '.join(_TYPE_WORDS.get(t, t) for t in v.expected)}"
    if v.kind == "enum":
        quoted = [f"'{x}'" for x in v.expected]
        allowed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        return f"{p}: Input should be {allowed}"
    if v.kind in ("below_min", "above_max"):
        word = "greater" if v.kind == "below_min" else "less"
        return f"{p}: Input should be {word} than or equal to {v.expected}"
    unit = "item" if v.rule == "array" else "character"
    word = "at least" if v.kind == "too_short" else "at most"
    what = "List" if v.rule == "array" else "String"
    return f"{p}: {what} should have {word} {v.expected} {unit}{'s' if v.expected != 1 else ''}"


# -- deterministic content ----------------------------------------------------------------------

def _block_text(block: Any) -> str:
    if block.get("type") == "tool_result":
        return content_text(block.get("content"))
    return str(block.get("text", ""))


def _prompt(body: dict[str, Any]) -> str:
    """The text a reply is derived from: every text block and tool result, in order."""
    out = []
    for m in body["messages"]:
        content = m["content"]
        out.append(content if isinstance(content, str)
                   else " ".join(_block_text(b) for b in content))
    return "\n".join(out)


def input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of a request: its system prompt, messages and tool definitions."""
    text = content_text(body.get("system")) + "\n" + _prompt(body)
    if body.get("tools"):
        text += json.dumps(body["tools"])
    return count_tokens(text)


def _check_turns(messages: list[dict[str, Any]]) -> None:
    """The API's semantic checks on the turns (consecutive same-role turns are merged): each
    ``tool_result`` answers a ``tool_use`` of the assistant turn just before, and each
    ``tool_use`` is answered in the user turn just after."""
    turns: list[tuple[str, list[int], list[Any]]] = []  # role, message indexes, blocks
    for i, m in enumerate(messages):
        blocks = [] if isinstance(m["content"], str) else m["content"]
        if turns and turns[-1][0] == m["role"]:
            turns[-1][1].append(i)
            turns[-1][2].extend(blocks)
        else:
            turns.append((m["role"], [i], list(blocks)))
    for t, (role, idx, blocks) in enumerate(turns):
        if role != "user":
            continue
        before = turns[t - 1] if t else None
        asked = {b["id"] for b in (before[2] if before else []) if b["type"] == "tool_use"}
        answered = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        stray = [a for a in answered if a not in asked]
        if stray:
            raise APIFailure(400, f"messages.{idx[0]}.content: unexpected `tool_use_id` found in "
                             f"`tool_result` blocks: {stray[0]}. Each `tool_result` block must "
                             "have a corresponding `tool_use` block in the previous message.")
        missing = sorted(asked - set(answered))
        if missing and before:
            raise APIFailure(400, f"messages.{before[1][-1]}: `tool_use` ids were found without "
                             f"`tool_result` blocks immediately after: {', '.join(missing)}. "
                             "Each `tool_use` block must have a corresponding `tool_result` "
                             "block in the next message.")


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool ``tool_choice`` makes the model call (``None``: answer with text)."""
    tools, choice = body.get("tools") or [], body.get("tool_choice")
    if choice is None:
        return None
    if not tools and choice["type"] != "none":
        raise APIFailure(400, "tool_choice: tool_choice may only be specified while providing "
                         "tools")
    if choice["type"] == "any":
        first: dict[str, Any] = tools[0]
        return first
    if choice["type"] == "tool":
        for tool in tools:
            if tool["name"] == choice["name"]:
                return dict(tool)
        raise APIFailure(400, f"tool_choice.name: tool '{choice['name']}' not found in tools")
    return None


def _event(obj: dict[str, Any]) -> bytes:
    return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()


class _Reply:
    """One message: its content blocks, stop reason and output token count."""

    def __init__(self, body: dict[str, Any], seed: int) -> None:
        prompt = _prompt(body)
        limit = body["max_tokens"]
        text = reply_text(prompt, seed, limit)
        self.stop_sequence = None
        self.stop_reason = "max_tokens" if len(text.split()) >= limit else "end_turn"
        for seq in body.get("stop_sequences") or []:
            at = text.find(seq) if seq else -1
            if at >= 0:
                text, self.stop_reason, self.stop_sequence = text[:at], "stop_sequence", seq
                break
        tool = _chosen_tool(body)
        if tool is None:
            self.content: list[dict[str, Any]] = [{"type": "text", "text": text}]
            self.output_tokens = len(text.split())
        else:
            digest = hashlib.sha256(f"{seed}:{prompt}".encode()).hexdigest()
            args = tool_arguments(tool.get("input_schema"), text.split(" ")[0] or "x")
            self.content = [{"type": "tool_use", "id": f"toolu_{digest[:24]}",
                             "name": tool["name"], "input": args}]
            self.stop_reason, self.stop_sequence = "tool_use", None
            self.output_tokens = count_tokens(json.dumps(args)) + 1

    def events(self, start: dict[str, Any]) -> Iterator[bytes]:
        """The named SSE events; each yielded piece is sent (and flushed) on its own, the
        first one holding everything before the first delta."""
        head = _event({"type": "message_start", "message": start})
        for i, block in enumerate(self.content):
            opening: dict[str, Any]
            if block["type"] == "text":
                opening = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": w if k == 0 else " " + w}
                          for k, w in enumerate(block["text"].split(" "))]
            else:
                opening = {**block, "input": {}}
                deltas = [{"type": "input_json_delta", "partial_json": p}
                          for p in pieces(json.dumps(block["input"]))]
            head += _event({"type": "content_block_start", "index": i, "content_block": opening})
            if i == 0:
                head += _event({"type": "ping"})
            for delta in deltas:
                yield head + _event({"type": "content_block_delta", "index": i, "delta": delta})
                head = b""
            yield _event({"type": "content_block_stop", "index": i})
        yield _event({"type": "message_delta",
                      "delta": {"stop_reason": self.stop_reason,
                                "stop_sequence": self.stop_sequence},
                      "usage": {"output_tokens": self.output_tokens}})
        yield _event({"type": "message_stop"})


def _rfc3339(seconds_from_now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_from_now + 0.999))


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


class ClaudeService(Service):
    name = "claude"
    #: Tokens a model takes, prompt and ``max_tokens`` together (a test may lower it).
    context_window = 200_000
    models = MODELS
    routes = (
        Route("POST", r"/v1/messages", "messages", MESSAGES),
        Route("POST", r"/v1/messages/count_tokens", "count_tokens", COUNT_TOKENS),
        Route("GET", r"/v1/models", "list_models"),
        Route("GET", r"/v1/models/(?P<model>[^/]+)", "model"),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        #: (headers, body) of recent requests that reached a handler, newest last.
        self.received: deque[tuple[dict[str, str], Any]] = deque(maxlen=RECEIVED_KEPT)

    # -- the service's conventions ----------------------------------------------------------
    def read_key(self, req: Request) -> str | None:
        key = req.headers.get("x-api-key")
        if key:
            return key.strip()
        auth = req.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        if status == 503:  # the shared "503" fault: Anthropic says it is overloaded with a 529
            status = 529
        # The type follows the status (the shared machinery's kinds are OpenAI's).
        kind = ERROR_TYPES.get(status) or (kind if kind in _KNOWN_TYPES else
                                           "api_error" if status >= 500 else "invalid_request_error")
        rid = _request_id()
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": rid}
        return Reply(status, body, {"request-id": rid, **(headers or {})})

    def reject(self, violation: Violation) -> Reply:
        return self.error(400, wording(violation), "invalid_request_error")

    def unknown_model(self, model: str) -> Reply:
        return self.error(404, f"model: {model}", "not_found_error")

    def internal_error(self) -> Reply:
        return self.error(500, "Internal server error", "api_error")

    def ratelimit_headers(self, rpm: Any, tpm: Any) -> dict[str, str]:
        h: dict[str, str] = {}
        kinds = (("requests", rpm), ("tokens", tpm), ("input-tokens", tpm), ("output-tokens", tpm))
        for name, state in kinds:
            if state:
                limit, remaining, reset = state
                h[f"anthropic-ratelimit-{name}-limit"] = str(int(limit))
                h[f"anthropic-ratelimit-{name}-remaining"] = str(int(remaining))
                h[f"anthropic-ratelimit-{name}-reset"] = _rfc3339(reset)
        return h

    def stream_error_chunk(self) -> bytes:
        return _event({"type": "error",
                       "error": {"type": "overloaded_error", "message": "Overloaded"}})

    def _begin(self, req: Request) -> None:
        """Every handler starts here: the version header, and the record of the request."""
        self.received.append((dict(req.headers), req.data))
        version = req.headers.get("anthropic-version")
        if version is None:
            raise APIFailure(400, "anthropic-version: header is required")
        if not VERSION.match(version) or version < "2023-01-01":
            raise APIFailure(400, f"anthropic-version: invalid version '{version}'")

    @staticmethod
    def _headers() -> dict[str, str]:
        return {"request-id": _request_id(), "anthropic-organization-id": "emulator"}

    # -- routes ---------------------------------------------------------------------------
    def messages(self, req: Request) -> Reply | Stream:
        self._begin(req)
        body = req.data
        _check_turns(body["messages"])
        prompt_tokens = input_tokens(body)
        if prompt_tokens + body["max_tokens"] > self.context_window:
            return self.error(400, f"prompt is too long: {prompt_tokens + body['max_tokens']} "
                                   f"tokens > {self.context_window} maximum",
                              "invalid_request_error")
        reply = _Reply(body, self.seed)
        message = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                   "model": body["model"], "content": reply.content,
                   "stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence,
                   "usage": {"input_tokens": input_tokens(body),
                             "output_tokens": reply.output_tokens,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                             "service_tier": "standard"}}
        if body.get("stream"):
            start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                     "usage": {**message["usage"], "output_tokens": 1}}
            return Stream(reply.events(start), headers=self._headers())
        return Reply(200, message, self._headers())

    def count_tokens(self, req: Request) -> Reply:
        self._begin(req)
        _check_turns(req.data["messages"])
        _chosen_tool(req.data)
        return Reply(200, {"input_tokens": input_tokens(req.data)}, self._headers())

    def _info(self, model: str) -> dict[str, Any]:
        return {"type": "model", "id": model, "display_name": model.replace("-", " ").title(),
                "created_at": CREATED}

    def list_models(self, req: Request) -> Reply:
        self._begin(req)
        raw = req.query.get("limit", [str(DEFAULT_PAGE)])[-1]
        try:
            limit = int(raw)
        except ValueError:
            raise APIFailure(400, "limit: Input should be a valid integer") from None
        if not 1 <= limit <= MAX_PAGE:
            raise APIFailure(400, f"limit: Input should be between 1 and {MAX_PAGE}")
        ids = [*self.models, *(m for m in self.config.models if m not in self.models)]
        after = req.query.get("after_id", [None])[-1]
        if after is not None:
            ids = ids[ids.index(after) + 1:] if after in ids else []
        page = ids[:limit]
        return Reply(200, {"data": [self._info(m) for m in page],
                           "has_more": len(ids) > limit,
                           "first_id": page[0] if page else None,
                           "last_id": page[-1] if page else None}, self._headers())

    def model(self, req: Request) -> Reply:
        self._begin(req)
        m = req.params["model"]
        if not self.knows_model(m):
            raise APIFailure(404, f"model: {m}", kind="not_found_error")
        return Reply(200, self._info(m), self._headers())
