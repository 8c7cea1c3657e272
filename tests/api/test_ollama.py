"""Ollama: the official ``ollama`` client against the emulator (proof of the wire format), and
our backend end to end over real HTTP."""

from __future__ import annotations

import asyncio
import importlib
import json

import numpy as np
import pytest
import urllib3

import ipfs_accelerate_api as ia
from ipfs_accelerate_api import RetryPolicy
from ipfs_accelerate_api.backends.ollama import parse_host
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.emulator._server import embedding_for, reply_text
from ipfs_accelerate_api.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    ServerError,
    StreamInterrupted,
)

from .conftest import MSG, backend_factory

ollama = pytest.importorskip("ollama")

MODEL = "llama3.2"
EMBED = "nomic-embed-text"
PROMPT = "hello there"  # MSG's text
TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "now", "parameters": {
    "type": "object", "properties": {"timezone": {"type": "string"}, "hours": {"type": "integer"}}}}}]


@pytest.fixture
def oll(emu):
    """Our backend against the emulator, with no key (Ollama needs none)."""
    yield from backend_factory(emu, "ollama", key=None)


def _paths(emu):
    return emu.stats("ollama")["by_path"]


def _raw(emu, method, path, body=None):
    """A request as any client would send it, for wire-level checks."""
    r = urllib3.request(method, emu.base_url("ollama") + path,
                        body=None if body is None else json.dumps(body).encode())
    return r.status, r.headers.get("content-type", ""), r.data


# -- the official client --------------------------------------------------------------------------

@pytest.fixture
def sdk(emu):
    client = ollama.Client(host=emu.base_url("ollama"))
    yield client
    client._client.close()


def test_sdk_chat_generate_and_streams(sdk) -> None:
    r = sdk.chat(model=MODEL, messages=MSG)
    assert r.message.content == reply_text(PROMPT, 1, 64) and r.done and r.done_reason == "stop"
    assert r.eval_count == len(r.message.content.split()) and r.eval_duration > 10 ** 6  # ns
    chunks = list(sdk.chat(model=MODEL, messages=MSG, stream=True))
    assert "".join(c.message.content for c in chunks) == r.message.content
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].prompt_eval_count and chunks[-1].total_duration
    g = sdk.generate(model=MODEL, prompt="say hi", options={"num_predict": 2})
    assert g.done_reason == "length" and len(g.response.split()) == 2 and g.context
    assert "".join(c.response for c in sdk.generate(model=MODEL, prompt="say hi", stream=True)) \
        == reply_text("say hi", 1, 64)


def test_sdk_embed_list_show_ps_and_pull(sdk) -> None:
    e = sdk.embed(model="all-minilm", input=["a", "b"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 384
    assert np.allclose(e.embeddings[0], embedding_for("a", 384, 1), atol=1e-6)
    assert len(sdk.embeddings(model="all-minilm", prompt="a").embedding) == 384
    assert "llama3.2:latest" in [m.model for m in sdk.list().models]
    shown = sdk.show(MODEL)
    assert "completion" in shown.capabilities and shown.details.family == "llama"
    assert "all-minilm:latest" in [m.model for m in sdk.ps().models]  # used above
    progress = list(sdk.pull("tinyllama", stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(p.completed for p in progress) and "tinyllama:latest" in [
        m.model for m in sdk.list().models]
    assert sdk.chat(model="tinyllama", messages=MSG).message.content


def test_sdk_errors(sdk, emu) -> None:
    emu.config("ollama").faults = FaultPlan(script=["503", "stream_error"])  # the first two
    with pytest.raises(ollama.ResponseError) as info:
        sdk.chat(model=MODEL, messages=MSG)
    assert info.value.status_code == 503 and "server busy" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:  # the error line after the 200
        list(sdk.chat(model=MODEL, messages=MSG, stream=True))
    assert "error was encountered" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        sdk.chat(model="nope", messages=MSG)
    assert info.value.status_code == 404
    assert info.value.error == 'model "nope" not found, try pulling it first'


def test_emulator_wire_details(emu) -> None:
    assert _raw(emu, "GET", "/")[::2] == (200, b"Ollama is running")
    # streaming is the default: a body without "stream" gets NDJSON lines
    status, ctype, data = _raw(emu, "POST", "/api/chat", {"model": MODEL, "messages": MSG})
    lines = [json.loads(x) for x in data.splitlines()]
    assert status == 200 and ctype == "application/x-ndjson" and len(lines) > 1
    assert lines[-1]["done"] and lines[-1]["message"]["content"] == ""
    # Go's router for an unknown route; Go's wording for a wrong type
    assert _raw(emu, "GET", "/api/nothing")[::2] == (404, b"404 page not found")
    status, _, data = _raw(emu, "POST", "/api/chat", {"model": MODEL, "messages": MSG,
                                                      "options": {"temperature": "hot"}})
    assert status == 400 and "cannot unmarshal string" in json.loads(data)["error"]
    status, _, data = _raw(emu, "POST", "/api/chat", {"messages": MSG})
    assert status == 400 and json.loads(data) == {"error": "model is required"}
    # an empty prompt loads the model; keep_alive 0 unloads it
    assert json.loads(_raw(emu, "POST", "/api/generate", {"model": MODEL, "stream": False})[2])[
        "done_reason"] == "load"
    assert json.loads(_raw(emu, "POST", "/api/generate", {
        "model": MODEL, "stream": False, "keep_alive": 0})[2])["done_reason"] == "unload"
    # the legacy route: one vector, not normalized
    vec = json.loads(_raw(emu, "POST", "/api/embeddings", {"model": EMBED, "prompt": "a"})[2])
    assert abs(np.linalg.norm(vec["embedding"]) - 1) > 0.5
    status, _, data = _raw(emu, "POST", "/api/embed", {"model": "all-minilm", "truncate": False,
                                                       "input": "word " * 400})
    assert status == 400 and "context length" in json.loads(data)["error"]
    status, _, data = _raw(emu, "POST", "/api/chat", {"model": "all-minilm", "messages": MSG})
    assert status == 400 and "does not support chat" in json.loads(data)["error"]


# -- our backend ----------------------------------------------------------------------------------

def test_chat_and_complete_usage_and_finish_reasons(oll) -> None:
    """Plain calls parse one JSON answer: they must send ``"stream": false``, since the
    emulator, like Ollama, streams NDJSON lines otherwise (see test_emulator_wire_details)."""
    ai = oll()
    r = ai.chat(MSG, model=MODEL)
    assert r.text == reply_text(PROMPT, 1, 64) and r.finish_reason == "stop"
    assert r.usage.completion_tokens == len(r.text.split()) and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    short = ai.chat(MSG, model=MODEL, max_tokens=2)
    assert short.finish_reason == "length" and len(short.text.split()) == 2
    c = ai.complete("say hi", model=MODEL, max_tokens=3)
    assert c.finish_reason == "length" and c.text == reply_text("say hi", 1, 3)
    assert c.usage.completion_tokens == 3


def test_an_empty_prompt_loads_the_model_a_normal_stop(oll) -> None:
    ai = oll()
    loaded = ai.complete("", model=MODEL)
    assert (loaded.text, loaded.finish_reason) == ("", "stop")
    assert loaded.raw["done_reason"] == "load"
    assert ai.complete("", model=MODEL, keep_alive=0).raw["done_reason"] == "unload"
    assert ai.running_models() == []


def test_a_progress_callback_that_raises_frees_the_stream(oll) -> None:
    ai = oll()

    def stop(line):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ai.pull_model("tinyllama", progress=stop)
    assert ai.version()  # the connection went back to the pool


def test_streams_equal_the_plain_text(oll) -> None:
    ai = oll()
    chunks = list(ai.stream_chat(MSG, model=MODEL))
    assert "".join(c.text for c in chunks) == ai.chat(MSG, model=MODEL).text
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.completion_tokens > 0
    pieces = list(ai.stream_complete("say hi", model=MODEL, max_tokens=2))
    assert "".join(p.text for p in pieces) == ai.complete("say hi", model=MODEL, max_tokens=2).text
    assert pieces[-1].finish_reason == "length" and pieces[-1].usage.completion_tokens == 2


def test_request_mapping(oll, emu) -> None:
    """Options in ``options``, images as bare base64, tool-call arguments as objects (the
    emulator refuses a string there, as Ollama does), the tool result by name."""
    ai = oll()
    msgs = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is"},
                                         {"type": "image_url", "image_url": {
                                             "url": "data:image/png;base64,aGk="}}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_time", "arguments": '{"timezone": "UTC"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "noon"}]
    r = ai.chat(msgs, model=MODEL, temperature=0.2, top_p=0.9, top_k=5, seed=7, stop="zulu",
                max_tokens=9, tools=TOOLS)
    assert r.finish_reason in ("stop", "length")
    with pytest.raises(ValueError, match="base64 data URLs"):
        ai.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "https://x/y.png"}}]}], model=MODEL)
    assert emu.stats("ollama")["refused"] == {}


def test_tool_calls_come_back_unified(oll) -> None:
    ai = oll()
    r = ai.chat(MSG, model=MODEL, tools=TOOLS)
    call = r.message.tool_calls[0]
    assert r.finish_reason == "tool_calls" and call.name == "get_time"
    assert set(json.loads(call.arguments)) == {"timezone", "hours"}
    streamed = [c for c in ai.stream_chat(MSG, model=MODEL, tools=TOOLS) if c.tool_calls]
    assert streamed[0].tool_calls[0]["function"]["name"] == "get_time"


@pytest.mark.parametrize("fault", ["503", "500"])
def test_server_errors_are_retried(oll, emu, fault) -> None:
    emu.config("ollama").faults = FaultPlan(script=[fault])
    ai = oll()
    assert ai.chat(MSG, model=MODEL).text
    assert ai.stats()["retried"] == 1 and emu.stats("ollama")["requests"] == 2


def test_a_full_queue_is_a_typed_server_error(oll, emu) -> None:
    emu.config("ollama").faults = FaultPlan(script=["503"])
    with pytest.raises(ServerError, match="server busy") as info:
        oll(retry=RetryPolicy(max_retries=0)).chat(MSG, model=MODEL)
    assert info.value.status == 503


def test_a_missing_model_says_how_to_pull_it_and_is_not_retried(oll, emu) -> None:
    ai = oll()
    for call in (lambda: ai.chat(MSG, model="nope"), lambda: ai.embed("a", model="nope:7b"),
                 lambda: list(ai.stream_chat(MSG, model="nope")),
                 lambda: ai.show_model("nope")):
        with pytest.raises(NotFoundError, match="ollama pull nope") as info:
            call()
        assert info.value.code == "model_not_found"
    assert emu.stats("ollama")["requests"] == 4


def test_refusals_are_typed(oll) -> None:
    with pytest.raises(BadRequestError, match="does not support chat"):
        oll().chat(MSG, model="all-minilm")


def test_mid_stream_error_carries_partial_text(oll, emu) -> None:
    emu.config("ollama").faults = FaultPlan(script=["stream_error", "stream_error"])
    ai = oll(retry=RetryPolicy(max_retries=0))
    for stream in (lambda: ai.stream_chat(MSG, model=MODEL),
                   lambda: ai.stream_complete(PROMPT, model=MODEL)):
        got = []
        with pytest.raises(StreamInterrupted, match="error was encountered") as info:
            for chunk in stream():
                got.append(chunk.text)
        assert got and info.value.partial_text == "".join(got)


def test_a_stream_cut_before_done_is_interrupted(oll, emu) -> None:
    emu.config("ollama").faults = FaultPlan(script=["truncate"])
    with pytest.raises(StreamInterrupted):
        list(oll(retry=RetryPolicy(max_retries=0)).stream_chat(MSG, model=MODEL))


def test_embed_matches_the_vectors_and_batches(oll, emu) -> None:
    ai = oll()
    out = ai.embed(["a", "b", "c"], model=EMBED)
    assert out.shape == (3, 768) and out.dtype == np.float32
    assert np.allclose(out[1], embedding_for("b", 768, 1), atol=1e-6)
    assert ai.embed("a", model=EMBED, dimensions=64).shape == (1, 64)
    assert _paths(emu) == {"/api/embed": 2}


def test_an_old_server_falls_back_to_legacy_embeddings_once(oll, emu) -> None:
    emu.services["ollama"].has_embed = False
    ai = oll()
    out = ai.embed(["a", "b"], model=EMBED)
    assert out.shape == (2, 768)
    assert np.allclose(out[0], embedding_for("a", 768, 1), atol=1e-5)  # normalized like /api/embed
    ai.embed("c", model=EMBED)
    # /api/embed was tried once; the backend remembers, then one legacy request per text
    assert _paths(emu) == {"/api/embed": 1, "/api/embeddings": 3}


def test_models_show_pull_ps_and_version(oll) -> None:
    ai = oll()
    assert "llama3.2:latest" in ai.list_models() and "smollm2:135m" not in ai.list_models()
    assert ai.show_model(MODEL)["model_info"]["general.architecture"] == "llama"
    seen = []
    last = ai.pull_model("smollm2:135m", progress=seen.append)
    assert last == {"status": "success"} and seen[0] == {"status": "pulling manifest"}
    assert [s["completed"] for s in seen if "completed" in s] == [250_000, 750_000, 1_000_000]
    assert "smollm2:135m" in ai.list_models()
    assert ai.chat(MSG, model="smollm2:135m").text
    assert [m["name"] for m in ai.running_models()] == ["smollm2:135m"]
    assert ai.version().count(".") == 2


def test_a_pull_error_line_raises(oll) -> None:
    seen = []
    with pytest.raises(StreamInterrupted, match="file does not exist"):
        oll(retry=RetryPolicy(max_retries=0)).pull_model("no-such-model", progress=seen.append)
    assert seen in ([], [{"status": "pulling manifest"}])


def test_no_key_is_needed_and_a_given_one_is_a_bearer(oll, emu) -> None:
    assert oll().chat(MSG, model=MODEL).text
    emu.config("ollama").keys = ["sk-proxy"]  # an authenticating proxy in front
    with pytest.raises(AuthenticationError):
        oll(retry=RetryPolicy(max_retries=0)).chat(MSG, model=MODEL)
    assert oll(api_key="sk-proxy").chat(MSG, model=MODEL).text


@pytest.mark.parametrize("host,url", [
    ("", "http://127.0.0.1:11434"), ("1.2.3.4", "http://1.2.3.4:11434"),
    (":5678", "http://127.0.0.1:5678"), ("example.com:5678", "http://example.com:5678"),
    ("http://example.com", "http://example.com:80"), ("https://example.com", "https://example.com:443"),
    ("https://example.com:5678/path/", "https://example.com:5678/path"),
    ("[::1]:5678", "http://[::1]:5678"), ("0.0.0.0", "http://0.0.0.0:11434"),
])
def test_ollama_host_is_read_as_ollamas_client_reads_it(host, url) -> None:
    assert parse_host(host) == url == importlib.import_module("ollama._client")._parse_host(host)


def test_env_hosts(emu, monkeypatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_API_URL", raising=False)
    with ia.backend("ollama") as b:
        assert b.base_url == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_API_URL", "http://api-host:1234/api")
    with ia.backend("ollama") as b:
        assert b.base_url == "http://api-host:1234"
    root = emu.base_url("ollama").removeprefix("http://")  # no scheme, a port and a path
    monkeypatch.setenv("OLLAMA_HOST", root)
    with ia.backend("ollama") as b:
        assert b.base_url == "http://" + root and b.version()
    with ia.backend("ollama", base_url="http://elsewhere:1") as b:
        assert b.base_url == "http://elsewhere:1"


def test_thinking_stays_out_of_the_text(oll) -> None:
    ai = oll()
    plain = ai.chat(MSG, model=MODEL)
    thought = ai.chat(MSG, model=MODEL, think=True)
    assert thought.text == plain.text and thought.raw["message"]["thinking"]
    chunks = list(ai.stream_chat(MSG, model=MODEL, think="high"))
    assert "".join(c.text for c in chunks) == plain.text
    assert any(c.raw["message"].get("thinking") for c in chunks)


def test_async_forms(oll) -> None:
    ai = oll()

    async def run():
        text = "".join([c.text async for c in ai.astream_complete("say hi", model=MODEL)])
        chat = "".join([c.text async for c in ai.astream_chat(MSG, model=MODEL)])
        return text, chat, (await ai.acomplete("say hi", model=MODEL)).text

    text, chat, plain = asyncio.run(run())
    assert text == plain and chat == ai.chat(MSG, model=MODEL).text
