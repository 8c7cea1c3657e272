"""Every OpenAI route refuses what the API refuses, as the API does: 400
``invalid_request_error`` naming the ``param`` (404 ``model_not_found`` for an unknown model);
and the valid neighbour of each refused request is answered 200.

One table per route. Each row changes the route's valid request twice, once breaking one rule
(``bad``) and once staying inside it (``good``); ``DROP`` removes the field.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest
import urllib3

from .conftest import DROP, merge

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
COMPLETIONS = {"model": "gpt-3.5-turbo-instruct", "prompt": "say hi"}
EMBEDDINGS = {"model": "text-embedding-3-small", "input": "hello"}
IMAGES = {"prompt": "a cat", "model": "dall-e-2"}
SPEECH = {"model": "tts-1", "input": "hello", "voice": "alloy"}
TRANSCRIPTIONS = {"model": "whisper-1", "file": ("a.wav", b"RIFF0000", "audio/wav")}

TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
USER = {"role": "user", "content": "hi"}


class Case(NamedTuple):
    bad: dict[str, Any]
    good: dict[str, Any]
    param: str | None
    code: str | None = None
    status: int = 400


def _case_id(case: Case) -> str:
    return f"{case.param}:{case.code or case.status}"


@pytest.fixture
def call(emu):
    pool = urllib3.PoolManager(retries=False)
    auth = {"Authorization": "Bearer sk-test"}

    def send(path: str, body: dict[str, Any], *, form: bool = False) -> tuple[int, Any]:
        url = emu.base_url("openai") + path
        if form:
            r = pool.request("POST", url, fields=body, headers=auth)
        else:
            r = pool.request("POST", url, body=json.dumps(body).encode(),
                             headers={**auth, "Content-Type": "application/json"})
        ctype = r.headers.get("content-type", "")
        return r.status, (json.loads(r.data) if ctype.startswith("application/json") else r.data)

    yield send
    pool.clear()


def _check(call, path: str, base: dict[str, Any], case: Case, *, form: bool = False) -> None:
    status, body = call(path, merge(base, case.bad), form=form)
    assert status == case.status, body
    err = body["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == case.param and err["code"] == case.code, err
    assert err["message"]
    status, body = call(path, merge(base, case.good), form=form)
    assert status == 200, body


def _table(*cases: Case):
    return pytest.mark.parametrize("case", cases, ids=_case_id)


@_table(
    # from issue #8
    Case({"messages": [{"role": "wizard", "content": "hi"}]}, {"messages": [{"role": "developer", "content": "hi"}, USER]},
         "messages[0].role", "invalid_value"),
    Case({"messages": [{"role": "user", "content": 5}]}, {"messages": [{"role": "user", "content": [{"type": "text", "text": "5"}]}]},
         "messages[0].content", "invalid_type"),
    Case({"n": 0}, {"n": 1}, "n", "integer_below_min_value"),
    Case({"temperature": 3}, {"temperature": 2}, "temperature", "decimal_above_max_value"),
    Case({"top_p": 1.5}, {"top_p": 1}, "top_p", "decimal_above_max_value"),
    Case({"stream": "yes"}, {"stream": False}, "stream", "invalid_type"),
    Case({"tools": TOOLS, "tool_choice": "sometimes"}, {"tools": TOOLS, "tool_choice": "auto"}, "tool_choice", "invalid_value"),
    Case({"model": 42}, {"model": "gpt-4o"}, "model", "invalid_type"),
    Case({"max_completion_tokens": "ten"}, {"max_completion_tokens": 10}, "max_completion_tokens", "invalid_type"),
    Case({"model": "gpt-9-turbo"}, {"model": "gpt-4.1-mini"}, None, "model_not_found", 404),
    # the rest of the rules
    Case({"model": DROP}, {}, "model", "missing_required_parameter"),
    Case({"messages": DROP}, {}, "messages", "missing_required_parameter"),
    Case({"messages": []}, {}, "messages", "empty_array"),
    Case({"messages": [{"content": "hi"}]}, {}, "messages[0].role", "missing_required_parameter"),
    Case({"messages": [{"role": "user"}]}, {}, "messages[0].content", "missing_required_parameter"),
    Case({"messages": [{"role": "tool", "content": "42"}]}, {"messages": [{"role": "tool", "content": "42", "tool_call_id": "call_1"}]},
         "messages[0].tool_call_id", "missing_required_parameter"),
    Case({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:,", "detail": "max"}}]}]},
         {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}}]}]},
         "messages[0].content[1].image_url.detail", "invalid_value"),
    Case({"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}", "index": 0}}]}]},
         {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
         "messages[1].tool_calls[0].function.index", "unknown_parameter"),
    Case({"reasoning": {"effort": "low"}}, {"reasoning_effort": "low"}, "reasoning", "unknown_parameter"),
    Case({"n": 129}, {"n": 128}, "n", "integer_above_max_value"),
    Case({"n": 2.0}, {"n": 2}, "n", "invalid_type"),
    Case({"temperature": -0.1}, {"temperature": 0}, "temperature", "decimal_below_min_value"),
    Case({"temperature": "hot"}, {"temperature": None}, "temperature", "invalid_type"),
    Case({"presence_penalty": 2.5}, {"presence_penalty": -2}, "presence_penalty", "decimal_above_max_value"),
    Case({"frequency_penalty": -3}, {"frequency_penalty": 2}, "frequency_penalty", "decimal_below_min_value"),
    Case({"max_tokens": 0}, {"max_tokens": 1}, "max_tokens", "integer_below_min_value"),
    Case({"top_logprobs": 21, "logprobs": True}, {"top_logprobs": 20, "logprobs": True}, "top_logprobs", "integer_above_max_value"),
    Case({"logprobs": 1}, {"logprobs": True}, "logprobs", "invalid_type"),
    Case({"stop": ["a", "b", "c", "d", "e"]}, {"stop": ["a", "b", "c", "d"]}, "stop", "array_above_max_length"),
    Case({"logit_bias": {"50256": -101}}, {"logit_bias": {"50256": -100}}, "logit_bias.50256", "integer_below_min_value"),
    Case({"stream": True, "stream_options": {"include_usage": "yes"}}, {"stream": True, "stream_options": {"include_usage": True}},
         "stream_options.include_usage", "invalid_type"),
    Case({"tools": [{"type": "function", "function": {"parameters": {}}}]}, {"tools": TOOLS},
         "tools[0].function.name", "missing_required_parameter"),
    Case({"tools": [{"type": "retrieval"}]}, {"tools": TOOLS}, "tools[0].type", "invalid_value"),
    Case({"tools": TOOLS, "tool_choice": {"type": "function"}}, {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
         "tool_choice.function", "missing_required_parameter"),
    Case({"tool_choice": "required"}, {"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
    Case({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_date"}}},
         {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice", "invalid_value"),
    Case({"response_format": {"type": "yaml"}}, {"response_format": {"type": "json_object"}}, "response_format.type", "invalid_value"),
    Case({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
         {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
         "response_format.json_schema.name", "missing_required_parameter"),
    Case({"metadata": {"k": "v" * 513}}, {"metadata": {"k": "v" * 512}}, "metadata.k", "string_above_max_length"),
    Case({"safety_identifier": "u" * 65}, {"safety_identifier": "u" * 64}, "safety_identifier", "string_above_max_length"),
    Case({"service_tier": "gold"}, {"service_tier": "flex"}, "service_tier", "invalid_value"),
    Case({"seed": "7"}, {"seed": 7}, "seed", "invalid_type"),
)
def test_chat_rules(call, case: Case) -> None:
    _check(call, "/chat/completions", CHAT, case)


@_table(
    # from issue #8
    Case({"temperature": 3}, {"temperature": 2}, "temperature", "decimal_above_max_value"),
    Case({"max_tokens": -1}, {"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    # the rest of the rules
    Case({"prompt": DROP}, {}, "prompt", "missing_required_parameter"),
    Case({"prompt": {"text": "hi"}}, {"prompt": ["hi", "there"]}, "prompt", "invalid_type"),
    Case({"prompt": [[]]}, {"prompt": [[1, 2], [3]]}, "prompt[0]", "empty_array"),
    Case({"n": 0}, {"n": 2}, "n", "integer_below_min_value"),
    Case({"logprobs": 6}, {"logprobs": 5}, "logprobs", "integer_above_max_value"),
    Case({"best_of": 21}, {"best_of": 20}, "best_of", "integer_above_max_value"),
    Case({"best_of": 1, "n": 2}, {"best_of": 2, "n": 2}, "best_of"),
    Case({"echo": "no"}, {"echo": True}, "echo", "invalid_type"),
    Case({"messages": [USER]}, {"suffix": "!"}, "messages", "unknown_parameter"),
    Case({"model": "gpt-9-instruct"}, {"model": "davinci-002"}, None, "model_not_found", 404),
)
def test_completions_rules(call, case: Case) -> None:
    _check(call, "/completions", COMPLETIONS, case)


@_table(
    # from issue #8
    Case({"encoding_format": "hex"}, {"encoding_format": "base64"}, "encoding_format", "invalid_value"),
    Case({"dimensions": 0}, {"dimensions": 1}, "dimensions", "integer_below_min_value"),
    Case({"dimensions": -5}, {"dimensions": 5}, "dimensions", "integer_below_min_value"),
    Case({"truncate": True}, {"user": "u-1"}, "truncate", "unknown_parameter"),
    # the rest of the rules
    Case({"input": DROP}, {}, "input", "missing_required_parameter"),
    Case({"input": ""}, {"input": "x"}, "input", "empty_string"),
    Case({"input": []}, {"input": ["x"]}, "input", "empty_array"),
    Case({"input": ["a", 3]}, {"input": ["a", "3"]}, "input[1]", "invalid_type"),
    Case({"input": ["x"] * 2049, "dimensions": 1}, {"input": ["x"] * 2048, "dimensions": 1},
         "input", "array_above_max_length"),
    Case({"input": {"text": "x"}}, {"input": [1, 2, 3]}, "input", "invalid_type"),
    Case({"dimensions": 1537}, {"dimensions": 1536}, "dimensions", "invalid_value"),
    Case({"model": "text-embedding-4"}, {"model": "text-embedding-3-large"}, None, "model_not_found", 404),
)
def test_embeddings_rules(call, case: Case) -> None:
    _check(call, "/embeddings", EMBEDDINGS, case)


@_table(
    # from issue #8
    Case({"n": 0}, {"n": 1}, "n", "integer_below_min_value"),
    Case({"n": 11}, {"n": 10}, "n", "integer_above_max_value"),
    Case({"response_format": "gif"}, {"response_format": "b64_json"}, "response_format", "invalid_value"),
    Case({"prompt": 7}, {"prompt": "7"}, "prompt", "invalid_type"),
    # the rest of the rules
    Case({"prompt": DROP}, {}, "prompt", "missing_required_parameter"),
    Case({"size": "640x480"}, {"size": "512x512"}, "size", "invalid_value"),
    Case({"style": "noir"}, {"style": "natural"}, "style", "invalid_value"),
    Case({"quality": "ultra"}, {"quality": "hd"}, "quality", "invalid_value"),
    Case({"model": "dall-e-3", "n": 2}, {"model": "dall-e-3", "n": 1}, "n", "invalid_value"),
    Case({"model": "gpt-image-1", "response_format": "url"}, {"model": "gpt-image-1"}, "response_format", "unknown_parameter"),
    Case({"model": "dall-e-4"}, {"model": "dall-e-3"}, None, "model_not_found", 404),
)
def test_images_rules(call, case: Case) -> None:
    _check(call, "/images/generations", IMAGES, case)


@_table(
    # from issue #8
    Case({"speed": 10}, {"speed": 4}, "speed", "decimal_above_max_value"),
    Case({"response_format": "mp4"}, {"response_format": "opus"}, "response_format", "invalid_value"),
    # the rest of the rules
    Case({"speed": 0.2}, {"speed": 0.25}, "speed", "decimal_below_min_value"),
    Case({"voice": DROP}, {}, "voice", "missing_required_parameter"),
    Case({"voice": "bob"}, {"voice": "nova"}, "voice", "invalid_value"),
    Case({"voice": {"name": "bob"}}, {"voice": {"id": "voice_123"}}, "voice.id", "missing_required_parameter"),
    Case({"voice": {"id": "v", "name": "bob"}}, {"voice": {"id": "v"}}, "voice.name", "unknown_parameter"),
    Case({"input": DROP}, {}, "input", "missing_required_parameter"),
    Case({"input": "x" * 4097}, {"input": "x" * 4096}, "input", "string_above_max_length"),
    Case({"stream_format": "sse"}, {"stream_format": "audio"}, "stream_format", "unsupported_value"),
    Case({"format": "mp3"}, {"response_format": "mp3"}, "format", "unknown_parameter"),
    Case({"model": "tts-2"}, {"model": "gpt-4o-mini-tts"}, None, "model_not_found", 404),
)
def test_speech_rules(call, case: Case) -> None:
    _check(call, "/audio/speech", SPEECH, case)


@_table(
    # from issue #8
    Case({"response_format": "doc"}, {"response_format": "srt"}, "response_format", "invalid_value"),
    # the rest of the rules
    Case({"file": DROP}, {}, "file", "missing_required_parameter"),
    Case({"file": "not a file"}, {}, "file", "invalid_type"),
    Case({"model": DROP}, {}, "model", "missing_required_parameter"),
    Case({"temperature": "1.5"}, {"temperature": "0.5"}, "temperature", "decimal_above_max_value"),
    Case({"temperature": "warm"}, {"temperature": "0"}, "temperature", "invalid_type"),
    Case({"timestamp_granularities[]": "line", "response_format": "verbose_json"},
         {"timestamp_granularities[]": "word", "response_format": "verbose_json"},
         "timestamp_granularities[0]", "invalid_value"),
    Case({"timestamp_granularities[]": "word"}, {"timestamp_granularities[]": "word", "response_format": "verbose_json"},
         "timestamp_granularities", "invalid_value"),
    Case({"model": "gpt-4o-transcribe", "response_format": "srt"}, {"model": "gpt-4o-transcribe", "response_format": "text"},
         "response_format", "unsupported_value"),
    Case({"diarize": "true"}, {"language": "en"}, "diarize", "unknown_parameter"),
    Case({"model": "whisper-2"}, {"model": "gpt-4o-mini-transcribe"}, None, "model_not_found", 404),
)
def test_transcriptions_rules(call, case: Case) -> None:
    _check(call, "/audio/transcriptions", TRANSCRIPTIONS, case, form=True)


def test_a_body_that_is_not_json_or_not_an_object(emu) -> None:
    url = emu.base_url("openai") + "/chat/completions"
    headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    for body in (b"{not json", b"[1, 2]"):
        r = urllib3.request("POST", url, body=body, headers=headers)
        err = json.loads(r.data)["error"]
        assert r.status == 400 and err["type"] == "invalid_request_error" and err["param"] is None
    r = urllib3.request("POST", url, body=json.dumps(CHAT).encode(), headers=headers)
    assert r.status == 200


def test_refused_requests_are_counted_by_param(call, emu) -> None:
    call("/chat/completions", {**CHAT, "n": 0})
    call("/chat/completions", {**CHAT, "n": 0})
    call("/embeddings", {**EMBEDDINGS, "encoding_format": "hex"})
    assert emu.stats("openai")["refused"] == {"n": 2, "encoding_format": 1}


def test_added_models_are_known(emu, call) -> None:
    emu.config("openai").models = ["ft:gpt-4o-mini:acme::abc123"]
    status, _ = call("/chat/completions", {**CHAT, "model": "ft:gpt-4o-mini:acme::abc123"})
    assert status == 200
    ids = [m["id"] for m in json.loads(urllib3.request(
        "GET", emu.base_url("openai") + "/models", headers={"Authorization": "Bearer k"}).data)["data"]]
    assert "ft:gpt-4o-mini:acme::abc123" in ids and "gpt-4o-mini" in ids
