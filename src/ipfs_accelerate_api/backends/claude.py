"""Anthropic's Messages API (Claude): ``backend("claude")``, alias ``"anthropic"``.

Thin: OpenAI-style messages and tools in, Anthropic's request out; the answer, the named-event
stream, the errors and the ``anthropic-ratelimit-*`` headers read back into the unified types.

Mapping of the request:

- ``system`` (and ``developer``) messages become the top-level ``system``;
- consecutive turns of one role are merged (``tool`` results join the user turn they belong to,
  as ``tool_result`` blocks);
- ``image_url`` parts become ``image`` blocks: a ``data:`` URL a base64 source, an http(s) URL
  a url source; parts of Anthropic's own types pass through;
- assistant ``tool_calls`` become ``tool_use`` blocks (their JSON arguments an object);
- ``tools`` in OpenAI's form become ``{name, description, input_schema}``; ``tool_choice``
  ``auto`` / ``required`` / ``none`` / a named function become ``auto`` / ``any`` / ``none`` /
  ``tool``, and ``parallel_tool_calls=False`` sets ``disable_parallel_tool_use``;
- ``stop`` becomes ``stop_sequences``, ``max_completion_tokens`` ``max_tokens`` (which the
  service requires: :data:`DEFAULT_MAX_TOKENS` when the caller gives none), ``user``
  ``metadata.user_id``; everything else is sent as given.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from collections.abc import Mapping
from typing import Any

from .._enums import Priority
from ..config import Secret
from ..engine import OpResult, RateLimitInfo
from ..errors import ResponseFormatError, StreamInterrupted
from ..transport import Response, SSEEvent
from ..types import ChatChunk, ChatMessage, ChatResponse, ToolCall, Usage
from ._shape import as_count, as_dict, as_list, as_str, field, id_list
from .base import STREAM_END, Backend, Plan, StreamParser, check_messages, unified_finish_reason

__all__ = ["DEFAULT_MAX_TOKENS", "ClaudeBackend", "request_body"]

#: ``max_tokens`` when the caller gives none (the API refuses a request without it).
DEFAULT_MAX_TOKENS = 4096
API_VERSION = "2023-06-01"
#: Models asked for in one page of ``GET /v1/models`` (the API's maximum).
MODELS_PAGE = 1000

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "tool_use": "tool_calls", "refusal": "content_filter",
                  "model_context_window_exceeded": "length"}
#: Fields of a messages request that count_tokens does not take.
_GENERATION_ONLY = frozenset({"max_tokens", "temperature", "top_p", "top_k", "stop_sequences",
                              "stream", "metadata", "service_tier"})


# -- the request --------------------------------------------------------------------------------

def _image(url: Any, where: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise TypeError(f"{where}: image_url.url must be a string")
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise ValueError(f"{where}: a data URL image must be data:<media type>;base64,<data>")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                            "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise ValueError(f"{where}: image_url.url must be a data: or http(s) URL")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's content as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out = []
    for j, part in enumerate(content):
        if part["type"] == "image_url":
            image = part.get("image_url")
            out.append(_image(image.get("url") if isinstance(image, dict) else image,
                              f"{where}[{j}]"))
        else:  # text parts are alike; Anthropic's own blocks (document, tool_result...) pass
            out.append(part)
    return out


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    call_id: Any
    if isinstance(call, ToolCall):
        call_id, name, arguments = call.id, call.name, call.arguments
    elif isinstance(call, dict) and isinstance(call.get("function"), dict):
        fn = call["function"]
        call_id, name, arguments = call.get("id"), fn.get("name"), fn.get("arguments")
    else:
        raise TypeError(f"{where} must be a ToolCall or {{'id', 'function': {{'name', "
                        "'arguments'}}}")
    try:
        args = json.loads(arguments) if arguments else {}
    except (TypeError, ValueError):
        raise ValueError(f"{where}: arguments must be a JSON object") from None
    if not isinstance(args, dict):
        raise ValueError(f"{where}: arguments must be a JSON object")
    return {"type": "tool_use", "id": call_id, "name": name, "input": args}


def _turns(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages) from OpenAI-style messages."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role, content, where = m["role"], m.get("content"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(b["text"] for b in _blocks(content, where) if b.get("type") == "text")
            continue
        if role == "tool":
            result = content if isinstance(content, str) else _blocks(content, where)
            role, content = "user", [{"type": "tool_result", "tool_use_id": m.get("tool_call_id"),
                                      "content": result}]
        elif role == "assistant" and m.get("tool_calls"):
            content = _blocks(content, where) + [
                _tool_use(c, f"{where}.tool_calls[{k}]") for k, c in enumerate(m["tool_calls"])]
        elif role not in ("user", "assistant"):
            raise ValueError(f"{where}: role {role!r} has no Anthropic equivalent (use system, "
                             "user, assistant or tool)")
        if turns and turns[-1]["role"] == role:
            last = turns[-1]
            last["content"] = _blocks(last["content"], where) + _blocks(content, where)
        else:
            turns.append({"role": role, "content": content if isinstance(content, str)
                          else _blocks(content, where)})
    return system, turns


def _tool(tool: Any) -> Any:
    if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        fn = tool["function"]
        out = {"name": fn.get("name"),
               "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description") is not None:
            out["description"] = fn["description"]
        return out
    return tool  # already Anthropic's form


def _tool_choice(choice: Any, parallel: Any) -> Any:
    if isinstance(choice, str):
        choice = {"type": {"required": "any"}.get(choice, choice)}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        choice = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    if parallel is False:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return choice


def request_body(messages: list[dict[str, Any]], model: str, params: dict[str, Any]) -> dict[str, Any]:
    """The Messages API body for OpenAI-style ``messages`` and parameters."""
    system, turns = _turns(check_messages(messages))
    body: dict[str, Any] = {"model": model, "messages": turns}
    params = dict(params)
    if system:
        if params.get("system") is not None:
            raise ValueError("give the system prompt once: as system messages or as system=")
        body["system"] = "\n\n".join(system)
    if "max_completion_tokens" in params:
        params["max_tokens"] = params.pop("max_completion_tokens")
    stop = params.pop("stop", None)
    if stop is not None:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    user = params.pop("user", None)
    if user is not None:
        params["metadata"] = {**(params.get("metadata") or {}), "user_id": user}
    parallel = params.pop("parallel_tool_calls", None)
    if params.get("tools") is not None:
        params["tools"] = [_tool(t) for t in params["tools"]]
    if "tool_choice" in params or parallel is False:
        params["tool_choice"] = _tool_choice(params.get("tool_choice"), parallel)
    body.update(params)
    return body


# -- the answer ---------------------------------------------------------------------------------

def _usage(data: Any, where: str = "usage") -> Usage:
    data = as_dict(data, where)
    prompt = sum(as_count(data.get(k), f"{where}.{k}") for k in (
        "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    completion = as_count(data.get("output_tokens"), f"{where}.output_tokens")
    return Usage(prompt, completion, prompt + completion)


def _arguments(value: Any, where: str) -> str:
    """A tool_use block's ``input`` (an object) as the JSON string ``ToolCall`` holds."""
    return json.dumps(as_dict(value, where))


def _finish(raw: Any, where: str) -> str | None:
    return unified_finish_reason(raw, FINISH_REASONS, where)


def _reset_seconds(value: str | None) -> float | None:
    """An RFC 3339 reset time as seconds from now (never negative); None if unreadable."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


class _Stream(StreamParser):
    """One stream's events: text deltas out as they come; tool-use JSON gathered per block and
    handed out, complete, on the final chunk with the stop reason and the usage."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.blocks: dict[int, dict[str, Any]] = {}  # index -> {"type", "id", "name", "json"}
        self.prompt_tokens = 0

    def feed(self, ev: SSEEvent) -> Any:
        kind = ev.event
        if kind == "ping":
            return None
        if kind not in _EVENTS and kind != "message":
            return None  # an event this client does not know: ignored, as the API asks
        obj = as_dict(ev.json(), f"{kind} event")
        if kind == "message":  # an event without a name: its type says which it is
            kind = as_str(field(obj, "type", "event"), "event.type")
            if kind not in _EVENTS:
                return None
        return getattr(self, "_" + kind)(obj)

    def _message_start(self, obj: dict[str, Any]) -> Any:
        msg = as_dict(field(obj, "message", "message_start"), "message_start.message")
        self.prompt_tokens = _usage(msg.get("usage") or {}, "message_start.message.usage").prompt_tokens
        return ChatChunk(raw=obj)

    def _content_block_start(self, obj: dict[str, Any]) -> Any:
        index = as_count(field(obj, "index", "content_block_start"), "content_block_start.index")
        block = as_dict(field(obj, "content_block", "content_block_start"),
                        "content_block_start.content_block")
        kind = as_str(field(block, "type", "content_block"), "content_block.type")
        entry: dict[str, Any] = {"type": kind}
        if kind == "tool_use":
            entry.update(id=as_str(field(block, "id", "content_block"), "content_block.id"),
                         name=as_str(field(block, "name", "content_block"), "content_block.name"),
                         json=[])
        self.blocks[index] = entry
        text = as_str(block.get("text", ""), "content_block.text") if kind == "text" else ""
        return ChatChunk(text=text, raw=obj) if text else None

    def _content_block_delta(self, obj: dict[str, Any]) -> Any:
        index = as_count(field(obj, "index", "content_block_delta"), "content_block_delta.index")
        block = self.blocks.get(index)
        if block is None:
            raise ResponseFormatError(f"content_block_delta for block {index}, which never started")
        delta = as_dict(field(obj, "delta", "content_block_delta"), "content_block_delta.delta")
        kind = as_str(field(delta, "type", "delta"), "delta.type")
        if kind == "text_delta":
            return ChatChunk(text=as_str(field(delta, "text", "delta"), "delta.text"), raw=obj)
        if kind == "input_json_delta":
            if block["type"] != "tool_use":
                raise ResponseFormatError(f"input_json_delta in a {block['type']!r} block")
            block["json"].append(as_str(field(delta, "partial_json", "delta"), "delta.partial_json"))
            return ChatChunk(raw=obj)  # activity: the call is handed out whole at the end
        return None  # thinking, signature, citations: not text

    def _content_block_stop(self, obj: dict[str, Any]) -> Any:
        as_count(field(obj, "index", "content_block_stop"), "content_block_stop.index")
        return None

    def _message_delta(self, obj: dict[str, Any]) -> Any:
        delta = as_dict(field(obj, "delta", "message_delta"), "message_delta.delta")
        finish = _finish(delta.get("stop_reason"), "message_delta.delta.stop_reason")
        raw_usage = as_dict(obj.get("usage") or {}, "message_delta.usage")
        usage = _usage(raw_usage, "message_delta.usage")  # cumulative counts, not increments
        prompt = usage.prompt_tokens if "input_tokens" in raw_usage else self.prompt_tokens
        calls: list[dict[str, Any]] = []
        for index in sorted(self.blocks):
            block = self.blocks[index]
            if block["type"] != "tool_use":
                continue
            text = "".join(block["json"])
            try:
                args = json.loads(text) if text.strip() else {}
            except ValueError:
                raise ResponseFormatError(f"tool_use block {index}: input is not JSON") from None
            calls.append({"index": len(calls), "id": block["id"], "type": "function",
                          "function": {"name": block["name"],
                                       "arguments": _arguments(args, f"block {index} input")}})
        self.complete = True  # all content is in; message_stop only closes the stream
        return ChatChunk(finish_reason=finish, tool_calls=calls, raw=obj,
                         usage=Usage(prompt, usage.completion_tokens,
                                     prompt + usage.completion_tokens))

    def _message_stop(self, obj: dict[str, Any]) -> Any:
        return STREAM_END

    def _error(self, obj: dict[str, Any]) -> Any:
        err = obj.get("error")
        kind = err.get("type") if isinstance(err, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err
        raise StreamInterrupted(f"{self.name}: error in stream: {kind or 'error'}: "
                                f"{str(msg)[:500]}", backend=self.name,
                                code=kind if isinstance(kind, str) else None, body=obj)


_EVENTS = frozenset({"message_start", "content_block_start", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop", "error"})


class ClaudeBackend(Backend):
    name = "claude"
    env_prefix = ("ANTHROPIC", "CLAUDE")
    context_window_phrases = ("prompt is too long",)
    default_headers = {"anthropic-version": API_VERSION}  # the caller's headers= may override
    default_base_url = "https://api.anthropic.com"
    request_id_header = "request-id"

    # -- conventions ----------------------------------------------------------------------
    def _auth_headers(self, key: Secret | None) -> dict[str, str]:
        return {} if key is None else {"x-api-key": key.reveal()}

    def _error_message(self, body: Any) -> tuple[str, str | None]:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            return str(err.get("message") or "error"), err.get("type")
        return str(body)[:500], None

    def _ratelimit_info(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        get = headers.get
        requests = get("anthropic-ratelimit-requests-remaining")
        tokens_kind = ("tokens" if get("anthropic-ratelimit-tokens-remaining") is not None
                       else "input-tokens")
        tokens = get(f"anthropic-ratelimit-{tokens_kind}-remaining")
        if requests is None and tokens is None:
            return None
        return RateLimitInfo(
            _number(requests), _reset_seconds(get("anthropic-ratelimit-requests-reset")),
            _number(tokens), _reset_seconds(get(f"anthropic-ratelimit-{tokens_kind}-reset")))

    def _encode(self, messages: list[dict[str, Any]], model: str,
                params: dict[str, Any]) -> tuple[bytes, float]:
        """The request body, encoded, and its token estimate (size / 4 plus ``max_tokens``)."""
        body = request_body(messages, model, params)
        if body.get("max_tokens") is None:
            body["max_tokens"] = DEFAULT_MAX_TOKENS
        encoded = json.dumps(body).encode()
        out = body["max_tokens"]
        out = out if isinstance(out, int) and not isinstance(out, bool) and out > 0 else 0
        return encoded, len(encoded) // 4 + 1 + out

    # -- chat -----------------------------------------------------------------------------
    def _plan_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        encoded, est = self._encode(messages, model, params)

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            texts, calls = [], []
            for i, block in enumerate(as_list(field(data, "content", "response"), "content")):
                block = as_dict(block, f"content[{i}]")
                kind = as_str(field(block, "type", f"content[{i}]"), f"content[{i}].type")
                if kind == "text":
                    texts.append(as_str(field(block, "text", f"content[{i}]"), f"content[{i}].text"))
                elif kind == "tool_use":
                    calls.append(ToolCall(
                        id=as_str(field(block, "id", f"content[{i}]"), f"content[{i}].id"),
                        name=as_str(field(block, "name", f"content[{i}]"), f"content[{i}].name"),
                        arguments=_arguments(field(block, "input", f"content[{i}]"),
                                             f"content[{i}].input")))
            text = "".join(texts)
            usage = _usage(field(data, "usage", "response"))
            return OpResult(
                ChatResponse(text=text,
                             message=ChatMessage(as_str(data.get("role", "assistant"), "role"),
                                                 text if texts else None, calls),
                             finish_reason=_finish(data.get("stop_reason"), "stop_reason"),
                             usage=usage, model=as_str(data.get("model"), "model", optional=True),
                             request_id=resp.headers.get(self.request_id_header), raw=data),
                usage.prompt_tokens, usage.completion_tokens, resp.headers)

        return Plan(self._http("POST", "/v1/messages", parse, body=encoded), est)

    def _plan_stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Plan:
        encoded, est = self._encode(messages, model, {**params, "stream": True})
        name = self.name
        return self._stream_plan("/v1/messages", encoded, est, lambda: _Stream(name))

    # -- tokens and models ----------------------------------------------------------------
    def count_tokens(self, messages: list[dict[str, Any]], *, model: str | None = None,
                     priority: int = Priority.NORMAL, **params: Any) -> int:
        """Input tokens of a chat request, as the service counts them."""
        return self._run("count_tokens", messages, model=model, priority=priority, **params)  # type: ignore[no-any-return]

    async def acount_tokens(self, messages: list[dict[str, Any]], *, model: str | None = None,
                            **kw: Any) -> int:
        return await self._arun("count_tokens", messages, model=model, **kw)  # type: ignore[no-any-return]

    def _plan_count_tokens(self, messages: list[dict[str, Any]], *, model: str,
                           **params: Any) -> Plan:
        body = request_body(messages, model, params)
        for k in _GENERATION_ONLY & set(body):
            del body[k]

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            return OpResult(as_count(field(data, "input_tokens", "response"), "input_tokens"),
                            headers=resp.headers)

        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", "/v1/messages/count_tokens", parse, body=encoded),
                    len(encoded) // 4 + 1)

    def _plan_list_models(self) -> Plan:
        def parse(resp: Response) -> OpResult:
            return OpResult(id_list(resp.json()), headers=resp.headers)

        return Plan(self._http("GET", f"/v1/models?limit={MODELS_PAGE}", parse))
