"""The emulator's Claude routes refuse what the Messages API refuses, as the API does: 400
``{"type": "error", "error": {"type": "invalid_request_error", "message": "<field>: ..."}}``
(404 ``not_found_error`` for an unknown model); and the valid neighbour of each refused
request is answered 200.

Each row changes the route's valid request twice, once breaking one rule (``bad``) and once
staying inside it (``good``); ``DROP`` removes the field. ``field`` is how the message must
start (the API names the field in pydantic's dotted form, ``messages.0.content.1.type``).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest
import urllib3

from .conftest import DROP, merge

MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}
COUNT = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
TOOL = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
USER = {"role": "user", "content": "hi"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
CALL = {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "noon"}


class Case(NamedTuple):
    bad: dict[str, Any]
    good: dict[str, Any]
    field: str
    status: int = 400


@pytest.fixture
def call(emu):
    pool = urllib3.PoolManager(retries=False)
    base = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01",
            "content-type": "application/json"}

    def send(path: str, body: Any, *, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = pool.request("POST", emu.base_url("claude") + path, body=data,
                         headers=headers if headers is not None else base)
        return r.status, json.loads(r.data)

    yield send
    pool.clear()


def _check(call, path: str, base: dict[str, Any], case: Case) -> None:
    status, body = call(path, merge(base, case.bad))
    assert status == case.status, body
    kind = "invalid_request_error" if case.status == 400 else "not_found_error"
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert body["error"]["message"].startswith(f"{case.field}:"), body["error"]["message"]
    assert body["request_id"].startswith("req_")
    status, body = call(path, merge(base, case.good))
    assert status == 200, body


def _table(*cases: Case):
    return pytest.mark.parametrize("case", cases, ids=lambda c: c.field)


@_table(
    Case({"model": DROP}, {}, "model"),
    Case({"model": 42}, {"model": "claude-3-5-haiku-20241022"}, "model"),
    Case({"model": "claude-9"}, {"model": "claude-opus-4-1"}, "model", 404),
    Case({"max_tokens": DROP}, {"max_tokens": 1}, "max_tokens"),
    Case({"max_tokens": 0}, {"max_tokens": 1}, "max_tokens"),
    Case({"max_tokens": "ten"}, {"max_tokens": 10}, "max_tokens"),
    Case({"max_tokens": 10.0}, {"max_tokens": 10}, "max_tokens"),
    Case({"messages": DROP}, {}, "messages"),
    Case({"messages": []}, {"messages": [USER]}, "messages"),
    Case({"messages": [{"role": "system", "content": "hi"}]}, {"messages": [USER]}, "messages.0.role"),
    Case({"messages": [{"content": "hi"}]}, {}, "messages.0.role"),
    Case({"messages": [{"role": "user"}]}, {}, "messages.0.content"),
    Case({"messages": [{"role": "user", "content": 5}]},
         {"messages": [{"role": "user", "content": [{"type": "text", "text": "5"}]}]},
         "messages.0.content"),
    Case({"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
         {"messages": [{"role": "user", "content": [{"type": "image", "source": PNG}]}]},
         "messages.0.content.0.type"),
    Case({"messages": [{"role": "user", "content": [{"type": "image", "source": {**PNG, "media_type": "image/bmp"}}]}]},
         {"messages": [{"role": "user", "content": [{"type": "image", "source": {**PNG, "media_type": "image/webp"}}]}]},
         "messages.0.content.0.source.media_type"),
    Case({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}]},
         {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]},
         "messages.0.content.0.source.url"),
    Case({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"type": "forever"}}]}]},
         {"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}]}]},
         "messages.0.content.0.cache_control.type"),
    Case({"messages": [USER, {"role": "assistant", "content": [{**CALL, "input": "{}"}]}, {"role": "user", "content": [RESULT]}]},
         {"messages": [USER, {"role": "assistant", "content": [CALL]}, {"role": "user", "content": [RESULT]}]},
         "messages.1.content.0.input"),
    Case({"messages": [USER, {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
         {"messages": [USER, {"role": "user", "content": "again"}]},  # consecutive user turns merge
         "messages.1.content.0.type"),
    Case({"messages": [USER, {"role": "assistant", "content": [CALL]}, {"role": "user", "content": [{"type": "tool_result", "content": "noon"}]}]},
         {"messages": [USER, {"role": "assistant", "content": [CALL]}, {"role": "user", "content": [RESULT]}]},
         "messages.2.content.0.tool_use_id"),
    Case({"messages": [USER, {"role": "assistant", "content": "ok"}, {"role": "user", "content": [RESULT]}]},
         {"messages": [USER, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and?"}]},
         "messages.2.content"),
    Case({"messages": [USER, {"role": "assistant", "content": [CALL]}, {"role": "user", "content": "what?"}]},
         {"messages": [USER, {"role": "assistant", "content": [CALL]}, {"role": "user", "content": [RESULT, {"type": "text", "text": "what?"}]}]},
         "messages.1"),
    Case({"system": 5}, {"system": "be terse"}, "system"),
    Case({"system": [{"type": "image", "source": PNG}]}, {"system": [{"type": "text", "text": "be terse"}]},
         "system.0.type"),
    Case({"temperature": 1.5}, {"temperature": 1}, "temperature"),
    Case({"temperature": -0.1}, {"temperature": 0}, "temperature"),
    Case({"top_p": 2}, {"top_p": 0.9}, "top_p"),
    Case({"top_k": -1}, {"top_k": 40}, "top_k"),
    Case({"top_k": 1.5}, {"top_k": 1}, "top_k"),
    Case({"stop_sequences": "END"}, {"stop_sequences": ["END"]}, "stop_sequences"),
    Case({"stop_sequences": [1]}, {"stop_sequences": ["1"]}, "stop_sequences.0"),
    Case({"stream": "yes"}, {"stream": False}, "stream"),
    Case({"tools": [{"name": "get_time"}]}, {"tools": [TOOL]}, "tools.0.input_schema"),
    Case({"tools": [{**TOOL, "input_schema": {"type": "array"}}]}, {"tools": [TOOL]}, "tools.0.input_schema.type"),
    Case({"tools": [{**TOOL, "name": ""}]}, {"tools": [TOOL]}, "tools.0.name"),
    Case({"tools": [{**TOOL, "parameters": {}}]}, {"tools": [TOOL]}, "tools.0.parameters"),
    Case({"tools": [TOOL], "tool_choice": {"type": "required"}}, {"tools": [TOOL], "tool_choice": {"type": "any"}},
         "tool_choice.type"),
    Case({"tools": [TOOL], "tool_choice": {"type": "tool"}}, {"tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_time"}},
         "tool_choice.name"),
    Case({"tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_date"}},
         {"tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_time"}}, "tool_choice.name"),
    Case({"tool_choice": {"type": "any"}}, {"tool_choice": {"type": "none"}}, "tool_choice"),
    Case({"tools": [TOOL], "tool_choice": "auto"}, {"tools": [TOOL], "tool_choice": {"type": "auto"}}, "tool_choice"),
    Case({"metadata": {"user_id": 7}}, {"metadata": {"user_id": "7"}}, "metadata.user_id"),
    Case({"metadata": {"session": "s"}}, {"metadata": {}}, "metadata.session"),
    Case({"thinking": {"type": "enabled", "budget_tokens": 100}},
         {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}, "thinking.budget_tokens"),
    Case({"service_tier": "priority"}, {"service_tier": "auto"}, "service_tier"),
    Case({"n": 2}, {}, "n"),
    Case({"stop": ["END"]}, {"stop_sequences": ["END"]}, "stop"),
)
def test_messages_rules(call, case: Case) -> None:
    _check(call, "/v1/messages", MESSAGES, case)


@_table(
    Case({"model": DROP}, {}, "model"),
    Case({"model": "claude-9"}, {"model": "claude-haiku-4-5"}, "model", 404),
    Case({"max_tokens": 16}, {}, "max_tokens"),
    Case({"messages": [{"role": "tool", "content": "x"}]}, {}, "messages.0.role"),
    Case({"tools": [{"name": "t"}]}, {"tools": [TOOL]}, "tools.0.input_schema"),
    Case({"stream": True}, {}, "stream"),
)
def test_count_tokens_rules(call, case: Case) -> None:
    _check(call, "/v1/messages/count_tokens", COUNT, case)


def test_json_and_version_header(call) -> None:
    status, body = call("/v1/messages", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    headers = {"x-api-key": "sk-ant-test", "content-type": "application/json"}
    status, body = call("/v1/messages", MESSAGES, headers=headers)
    assert status == 400 and body["error"]["message"].startswith("anthropic-version:")
    status, body = call("/v1/messages", MESSAGES, headers={**headers, "anthropic-version": "latest"})
    assert status == 400 and body["error"]["message"].startswith("anthropic-version:")
    status, body = call("/v1/messages", MESSAGES, headers={"anthropic-version": "2023-06-01"})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    bearer = {"authorization": "Bearer sk-ant-test", "anthropic-version": "2023-06-01"}
    assert call("/v1/messages", MESSAGES, headers=bearer)[0] == 200
