"""Every Gemini route refuses what the API refuses, as Google does: 400 ``INVALID_ARGUMENT``
with a ``BadRequest`` field violation naming the (snake_case) field; and the valid neighbour
of each refused request is answered 200.

One table per route. Each row changes the route's valid request twice, once breaking one rule
(``bad``) and once staying inside it (``good``); ``DROP`` removes the field.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest
import urllib3

from .conftest import DROP, merge

MODEL = "gemini-2.0-flash"
EMBED_MODEL = "text-embedding-004"

USER = {"role": "user", "parts": [{"text": "hi"}]}
GENERATE = {"contents": [USER]}
EMBED = {"content": {"parts": [{"text": "hello"}]}}
BATCH = {"requests": [{"model": f"models/{EMBED_MODEL}", "content": {"parts": [{"text": "a"}]}}]}
COUNT = {"contents": [USER]}
FN = {"functionDeclarations": [{"name": "get_time", "parameters": {"type": "OBJECT"}}]}


class Case(NamedTuple):
    bad: dict[str, Any]
    good: dict[str, Any]
    field: str | None  # the BadRequest field violation (None: the body itself)


def _case_id(case: Case) -> str:
    return str(case.field)


def _config(**fields: Any) -> dict[str, Any]:
    return {"generationConfig": fields}


@pytest.fixture
def call(emu):
    pool = urllib3.PoolManager(retries=False)

    def send(path: str, body: Any, *, key: str = "AIza-test") -> tuple[int, Any]:
        r = pool.request("POST", emu.base_url("gemini") + path,
                         body=body if isinstance(body, bytes) else json.dumps(body).encode(),
                         headers={"x-goog-api-key": key, "Content-Type": "application/json"})
        return r.status, json.loads(r.data)

    yield send
    pool.clear()


def _check(call, path: str, base: dict[str, Any], case: Case) -> None:
    status, body = call(path, merge(base, case.bad))
    assert status == 400, body
    err = body["error"]
    assert (err["code"], err["status"]) == (400, "INVALID_ARGUMENT") and err["message"]
    if case.field is not None:
        (violation,) = [d for d in err["details"] if d["@type"].endswith("BadRequest")]
        assert violation["fieldViolations"][0]["field"] == case.field, err
    status, body = call(path, merge(base, case.good))
    assert status == 200, body


def _table(*cases: Case):
    return pytest.mark.parametrize("case", cases, ids=_case_id)


@_table(
    Case({"contents": DROP}, {}, "contents"),
    Case({"contents": []}, {"contents": [USER, {"role": "model", "parts": [{"text": "yo"}]}, USER]}, "contents"),
    Case({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}, {"contents": [{"parts": [{"text": "hi"}]}]},
         "contents[0].role"),
    Case({"contents": [{"role": "user"}]}, {}, "contents[0].parts"),
    Case({"contents": [{"role": "user", "parts": []}]}, {}, "contents[0].parts"),
    Case({"contents": [{"role": "user", "parts": [{"txt": "hi"}]}]}, {}, "contents[0].parts[0].txt"),
    Case({"contents": [{"role": "user", "parts": [{}]}]}, {}, "contents[0].parts[0].data"),
    Case({"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]},
         {"contents": [{"role": "user", "parts": [{"text": "a"}, {"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]},
         "contents[0].parts[0].data"),
    Case({"contents": [{"role": "user", "parts": [{"inlineData": {"data": "AA=="}}]}]},
         {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]},
         "contents[0].parts[0].inline_data.mime_type"),
    Case({"contents": [{"role": "user", "parts": [{"text": 5}]}]}, {}, "contents[0].parts[0].text"),
    Case({"contents": [USER, {"role": "user", "parts": [{"functionResponse": {"response": {}}}]}]},
         {"contents": [USER, {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"x": 1}}}]}]},
         "contents[1].parts[0].function_response.name"),
    Case(_config(temperature=2.5), _config(temperature=2), "generation_config.temperature"),
    Case(_config(temperature=-1), _config(temperature=0), "generation_config.temperature"),
    Case(_config(temperature="hot"), _config(temperature=None), "generation_config.temperature"),
    Case(_config(topP=1.5), _config(topP=1), "generation_config.top_p"),
    Case(_config(topK=0), _config(topK=40), "generation_config.top_k"),
    Case(_config(candidateCount=0), _config(candidateCount=1), "generation_config.candidate_count"),
    Case(_config(candidateCount=9), _config(candidateCount=8), "generation_config.candidate_count"),
    Case(_config(maxOutputTokens=0), _config(maxOutputTokens=1), "generation_config.max_output_tokens"),
    Case(_config(maxOutputTokens=1.5), _config(maxOutputTokens=2), "generation_config.max_output_tokens"),
    Case(_config(stopSequences=list("abcdef")), _config(stopSequences=list("abcde")), "generation_config.stop_sequences"),
    Case(_config(responseMimeType="text/html"), _config(responseMimeType="application/json"),
         "generation_config.response_mime_type"),
    Case(_config(responseModalities=["SMELL"]), _config(responseModalities=["TEXT"]),
         "generation_config.response_modalities[0]"),
    Case(_config(max_tokens=5), _config(maxOutputTokens=5), "generation_config.max_tokens"),
    Case(_config(thinkingConfig={"budget": 0}), _config(thinkingConfig={"thinkingBudget": 0}),
         "generation_config.thinking_config.budget"),
    Case({"temperature": 0.5}, _config(temperature=0.5), "temperature"),
    Case({"systemInstruction": {"parts": "be terse"}}, {"systemInstruction": {"parts": [{"text": "be terse"}]}},
         "system_instruction.parts"),
    Case({"tools": [{"functionDeclarations": [{"parameters": {}}]}]}, {"tools": [FN]},
         "tools[0].function_declarations[0].name"),
    Case({"tools": [{"functions": []}]}, {"tools": [FN, {"codeExecution": {}}]}, "tools[0].functions"),
    Case({"tools": [FN], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}},
         {"tools": [FN], "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
         "tool_config.function_calling_config.mode"),
    Case({"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
         {"tools": [FN], "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}},
         "tool_config.function_calling_config"),
    Case({"safetySettings": [{"category": "HARM_CATEGORY_BOREDOM", "threshold": "BLOCK_NONE"}]},
         {"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]},
         "safety_settings[0].category"),
    Case({"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT"}]},
         {"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]},
         "safety_settings[0].threshold"),
    Case({"stream": True}, {"cachedContent": "cachedContents/abc"}, "stream"),
)
def test_generate_rules(call, case: Case) -> None:
    _check(call, f"/models/{MODEL}:generateContent", GENERATE, case)


def test_the_stream_route_has_the_same_rules(call) -> None:
    status, body = call(f"/models/{MODEL}:streamGenerateContent?alt=sse",
                        {**GENERATE, **_config(temperature=3)})
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")


@_table(
    Case({"content": DROP}, {}, "content"),
    Case({"content": {"parts": [{"text": ""}]}}, {"content": {"parts": [{"text": "x"}]}}, "content"),
    Case({"outputDimensionality": 0}, {"outputDimensionality": 1}, "output_dimensionality"),
    Case({"taskType": "GUESSING"}, {"taskType": "RETRIEVAL_DOCUMENT", "title": "t"}, "task_type"),
    Case({"dimensions": 8}, {"outputDimensionality": 8}, "dimensions"),
)
def test_embed_rules(call, case: Case) -> None:
    _check(call, f"/models/{EMBED_MODEL}:embedContent", EMBED, case)


@_table(
    Case({"requests": DROP}, {}, "requests"),
    Case({"requests": []}, {}, "requests"),
    Case({"requests": BATCH["requests"] * 101}, {"requests": BATCH["requests"] * 100}, "requests"),
    Case({"requests": [{"content": {"parts": [{"text": "a"}]}}]}, {}, "requests[0].model"),
    Case({"requests": [{"model": "models/embedding-001", "content": {"parts": [{"text": "a"}]}}]}, {},
         "requests[0].model"),
)
def test_batch_embed_rules(call, case: Case) -> None:
    _check(call, f"/models/{EMBED_MODEL}:batchEmbedContents", BATCH, case)


@_table(
    Case({"contents": DROP}, {}, "contents"),
    Case({"contents": DROP, "generateContentRequest": {"contents": [USER]}},
         {"contents": DROP, "generateContentRequest": {"model": f"models/{MODEL}", "contents": [USER]}},
         "generate_content_request.model"),
    Case({"prompt": "hi"}, {}, "prompt"),
)
def test_count_tokens_rules(call, case: Case) -> None:
    _check(call, f"/models/{MODEL}:countTokens", COUNT, case)


def test_a_body_that_is_not_json_or_not_an_object(call) -> None:
    for body in (b"{not json", b"[1, 2]"):
        status, answer = call(f"/models/{MODEL}:generateContent", body)
        assert status == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("path,body", [
    ("/models/gemini-9:generateContent", GENERATE), ("/models/gemini-9:countTokens", COUNT),
    ("/models/embedding-9:embedContent", EMBED),
    ("/models/gemini-9:streamGenerateContent?alt=sse", GENERATE)])
def test_unknown_models_are_404_not_found(call, path, body) -> None:
    status, body = call(path, body)
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    assert "models/gemini-9" in body["error"]["message"] or "embedding-9" in body["error"]["message"]


def test_bad_key_is_400_api_key_invalid(call, emu) -> None:
    emu.config("gemini").keys = ["AIza-good"]
    status, body = call(f"/models/{MODEL}:generateContent", GENERATE, key="AIza-bad")
    err = body["error"]
    assert (status, err["status"]) == (400, "INVALID_ARGUMENT")
    assert err["message"].startswith("API key not valid")
    assert err["details"][0]["reason"] == "API_KEY_INVALID"


def test_quota_is_429_resource_exhausted_with_retry_info(call, emu) -> None:
    emu.config("gemini").rpm = 1
    assert call(f"/models/{MODEL}:generateContent", GENERATE)[0] == 200
    status, body = call(f"/models/{MODEL}:generateContent", GENERATE)
    err = body["error"]
    assert (status, err["status"]) == (429, "RESOURCE_EXHAUSTED")
    kinds = {d["@type"].rsplit(".", 1)[-1]: d for d in err["details"]}
    assert set(kinds) == {"QuotaFailure", "Help", "RetryInfo"}
    assert 50 <= float(kinds["RetryInfo"]["retryDelay"].rstrip("s")) <= 61
    other = call(f"/models/{MODEL}:generateContent", GENERATE, key="AIza-other")
    assert other[0] == 200  # the quota is per key


def test_refused_requests_are_counted_and_models_listed(call, emu) -> None:
    call(f"/models/{MODEL}:generateContent", {**GENERATE, **_config(topP=2)})
    assert emu.stats("gemini")["refused"] == {"generationConfig.topP": 1}
    emu.config("gemini").models = ["tuned-flash"]
    assert call("/models/tuned-flash:generateContent", GENERATE)[0] == 200
    for version in ("v1", "v1beta"):
        r = urllib3.request("GET", f"{emu.root_url}/gemini/{version}/models",
                            headers={"x-goog-api-key": "k"})
        names = [m["name"] for m in json.loads(r.data)["models"]]
        assert "models/tuned-flash" in names and f"models/{MODEL}" in names
