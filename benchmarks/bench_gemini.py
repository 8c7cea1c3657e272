"""Gemini client overhead: one ``generateContent`` call at a time against nginx serving a
canned Gemini answer on loopback. Compared in the same run: our backend, raw urllib3 posting
the same body, and the official google-genai SDK. Skipped when nginx is not installed.

    python -m pytest benchmarks/bench_gemini.py -p no:cacheprovider --benchmark-enable -o addopts=
"""

from __future__ import annotations

import json

import pytest
from bench_client import nginx
from conftest import QUICK, sequential

N_SEQ = 20 if QUICK else 300
MODEL = "gemini-2.0-flash"
PATH = f"/v1beta/models/{MODEL}:generateContent"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
#: What our backend sends for MESSAGES (raw urllib3 posts the same bytes).
BODY = {"contents": [{"role": "user", "parts": [{"text": MESSAGES[0]["content"]}]}]}

ANSWER = json.dumps({
    "candidates": [{"content": {"role": "model", "parts": [{"text": "Hello! How can I help you today?"}]},
                    "finishReason": "STOP", "index": 0, "avgLogprobs": -0.12,
                    "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT",
                                       "probability": "NEGLIGIBLE"}]}],
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 9, "totalTokenCount": 17,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]},
    "modelVersion": MODEL, "responseId": "bench-response-id",
})


@pytest.fixture(scope="module")
def root():
    with nginx({PATH: ANSWER}) as root:
        yield root


def _measure(benchmark, impl: str, call) -> None:
    sequential(benchmark, impl, call, N_SEQ)


@pytest.mark.benchmark(group="gemini: chat, sequential")
def test_gemini_chat_ours(benchmark, root):
    from ipfs_accelerate_api import backend

    ai = backend("gemini", base_url=root + "/v1beta", api_key="AIza-bench", max_concurrency=1)
    assert ai.chat(MESSAGES, model=MODEL).text.startswith("Hello")
    try:
        _measure(benchmark, "ipfs_accelerate_api", lambda: ai.chat(MESSAGES, model=MODEL).text)
    finally:
        ai.close()


@pytest.mark.benchmark(group="gemini: chat, sequential")
def test_gemini_chat_raw_urllib3(benchmark, root):
    import urllib3

    pool = urllib3.PoolManager(maxsize=1, retries=False)
    url = root + PATH
    headers = {"x-goog-api-key": "AIza-bench", "Content-Type": "application/json"}

    def call():
        r = pool.request("POST", url, body=json.dumps(BODY).encode(), headers=headers)
        return json.loads(r.data)["candidates"][0]["content"]["parts"][0]["text"]

    _measure(benchmark, "raw urllib3", call)


@pytest.mark.benchmark(group="gemini: chat, sequential")
def test_gemini_chat_google_genai(benchmark, root):
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    client = genai.Client(api_key="AIza-bench", http_options=types.HttpOptions(
        base_url=root + "/", api_version="v1beta", retry_options=None))
    contents = MESSAGES[0]["content"]
    assert client.models.generate_content(model=MODEL, contents=contents).text.startswith("Hello")

    try:
        _measure(benchmark, "google-genai SDK",
                 lambda: client.models.generate_content(model=MODEL, contents=contents).text)
    finally:
        client.close()
