"""Claude client overhead per ``chat`` call against nginx serving a canned Messages API answer
on loopback: our backend vs raw urllib3 posting the same body vs the official ``anthropic``
SDK, in the same run. Targets: ours within 1.25x of raw urllib3, at least 2.5x faster than the
SDK. Skipped when nginx is not installed.

    python -m pytest benchmarks/bench_claude.py -o addopts= --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import json

import pytest
from bench_client import nginx

from conftest import QUICK, sequential

N_SEQ = 20 if QUICK else 300
MODEL = "claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
BODY = {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES}
MESSAGE_JSON = json.dumps({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": MODEL,
    "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 14, "output_tokens": 9, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0, "service_tier": "standard"},
})
GROUP = "client: claude chat, sequential"


@pytest.fixture(scope="module")
def server():
    with nginx({"/v1/messages": MESSAGE_JSON}) as root:
        yield root


def _measure(benchmark, impl: str, call) -> None:
    sequential(benchmark, impl, call, N_SEQ)


@pytest.mark.benchmark(group=GROUP)
def test_claude_chat_ours(benchmark, server):
    from ipfs_accelerate_api import backend

    ai = backend("claude", base_url=server, api_key="sk-ant-bench", max_concurrency=1)
    assert ai.chat(MESSAGES, model=MODEL, max_tokens=1024).text.startswith("Hello")
    try:
        _measure(benchmark, "ipfs_accelerate_api",
                 lambda: ai.chat(MESSAGES, model=MODEL, max_tokens=1024).text)
    finally:
        ai.close()


@pytest.mark.benchmark(group=GROUP)
def test_claude_chat_raw_urllib3(benchmark, server):
    import urllib3

    pool = urllib3.PoolManager(maxsize=1, retries=False)
    url = server + "/v1/messages"
    headers = {"x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01",
               "Content-Type": "application/json"}
    _measure(benchmark, "raw urllib3", lambda: json.loads(pool.request(
        "POST", url, body=json.dumps(BODY).encode(), headers=headers).data)["content"][0]["text"])


@pytest.mark.benchmark(group=GROUP)
def test_claude_chat_anthropic_sdk(benchmark, server):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=server, api_key="sk-ant-bench", max_retries=0)
    try:
        _measure(benchmark, "anthropic SDK", lambda: client.messages.create(**BODY).content[0].text)
    finally:
        client.close()
