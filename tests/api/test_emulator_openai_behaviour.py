"""The OpenAI emulator behaves as the API does: tool calls (streamed as ``tool_calls``
deltas, named choice honoured), ``n`` choices, the completions usage chunk, image URLs it
serves, real audio files, 404 for unknown models, rate-limit headers on injected 429s."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
import urllib3

from ipfs_accelerate_api.emulator import FaultPlan

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "what time is it?"}]}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "timezone": {"type": "string"}, "hours": {"type": "integer"},
        "unit": {"type": "string", "enum": ["h24", "h12"]}}}}}
DATE_TOOL = {"type": "function", "function": {"name": "get_date", "parameters": {"type": "object"}}}


@pytest.fixture
def post(emu):
    pool = urllib3.PoolManager(retries=False)

    def send(path: str, body: dict[str, Any]) -> urllib3.BaseHTTPResponse:
        return pool.request("POST", emu.base_url("openai") + path, body=json.dumps(body).encode(),
                            headers={"Authorization": "Bearer sk-test",
                                     "Content-Type": "application/json"})

    yield send
    pool.clear()


def _events(resp: urllib3.BaseHTTPResponse) -> list[Any]:
    """The JSON chunks of an SSE answer (``[DONE]`` checked and dropped)."""
    lines = [ln[6:] for ln in resp.data.decode().split("\n") if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


# -- tool calls -----------------------------------------------------------------------------------

def test_streamed_tool_call_is_tool_calls_deltas(post) -> None:
    body = {**CHAT, "tools": [TIME_TOOL], "tool_choice": "required"}
    plain = json.loads(post("/chat/completions", body).data)["choices"][0]
    call = plain["message"]["tool_calls"][0]
    chunks = _events(post("/chat/completions", {**body, "stream": True}))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
    assert not any(d.get("content") for d in deltas)  # no text streamed
    first, rest = calls[0], calls[1:]
    assert first["id"] == call["id"] and first["type"] == "function"
    assert first["function"]["name"] == "get_time" and first["index"] == 0
    assert rest and all("id" not in c and "name" not in c["function"] for c in rest)
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert arguments == call["function"]["arguments"]
    args = json.loads(arguments)  # one value per schema property, of its type
    assert set(args) == {"timezone", "hours", "unit"} and args["unit"] == "h24"
    assert isinstance(args["timezone"], str) and args["hours"] == len(args["timezone"])
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "tool_calls"}
    assert plain["finish_reason"] == "tool_calls" and plain["message"]["content"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_named_tool_choice_calls_that_tool(post, stream) -> None:
    body = {**CHAT, "tools": [TIME_TOOL, DATE_TOOL], "stream": stream,
            "tool_choice": {"type": "function", "function": {"name": "get_date"}}}
    r = post("/chat/completions", body)
    if stream:
        names = [d["tool_calls"][0]["function"].get("name") for c in _events(r)
                 for d in [c["choices"][0]["delta"]] if d.get("tool_calls")]
        assert names[0] == "get_date"
    else:
        assert json.loads(r.data)["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_date"


def test_auto_and_none_answer_with_text(post) -> None:
    for choice in ("auto", "none"):
        msg = json.loads(post("/chat/completions", {**CHAT, "tools": [TIME_TOOL], "tool_choice": choice})
                         .data)["choices"][0]["message"]
        assert msg["content"] and "tool_calls" not in msg


# -- n choices ------------------------------------------------------------------------------------

def test_n_choices_plain_and_streamed(post) -> None:
    one = json.loads(post("/chat/completions", CHAT).data)
    three = json.loads(post("/chat/completions", {**CHAT, "n": 3}).data)
    texts = [c["message"]["content"] for c in three["choices"]]
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    assert texts[0] == one["choices"][0]["message"]["content"] and len(set(texts)) == 3
    assert three["usage"]["completion_tokens"] == sum(len(t.split()) for t in texts)
    chunks = _events(post("/chat/completions", {**CHAT, "n": 3, "stream": True,
                                                "stream_options": {"include_usage": True}}))
    streamed: dict[int, str] = {}
    finished = set()
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        streamed[choice["index"]] = streamed.get(choice["index"], "") + (choice["delta"].get("content") or "")
        if choice["finish_reason"]:
            finished.add(choice["index"])
    assert [streamed[i] for i in range(3)] == texts and finished == {0, 1, 2}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == three["usage"]
    assert [c["choices"][0]["index"] for c in chunks[:3]] == [0, 1, 2]  # interleaved


def test_completions_n_and_several_prompts(post) -> None:
    r = json.loads(post("/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b"], "n": 2}).data)
    assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3]
    assert r["choices"][0]["text"] != r["choices"][1]["text"]


# -- completions stream usage -------------------------------------------------------------------

def test_completions_stream_sends_the_usage_chunk(post) -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "say hi"}
    plain = json.loads(post("/completions", body).data)
    chunks = _events(post("/completions", {**body, "stream": True,
                                           "stream_options": {"include_usage": True}}))
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == plain["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    no_usage = _events(post("/completions", {**body, "stream": True}))
    assert all("usage" not in c for c in no_usage)


# -- images ----------------------------------------------------------------------------------------

def test_image_default_is_a_url_the_emulator_serves(post, emu) -> None:
    r = json.loads(post("/images/generations", {"model": "dall-e-3", "prompt": "a cat"}).data)
    url = r["data"][0]["url"]
    assert url.startswith(f"http://127.0.0.1:{emu.port}/openai/") and r["data"][0]["revised_prompt"]
    img = urllib3.request("GET", url)  # no key: the API's image URLs are signed, not authorised
    assert img.status == 200 and img.headers["content-type"] == "image/png"
    b64 = json.loads(post("/images/generations", {"model": "dall-e-3", "prompt": "a cat",
                                                  "response_format": "b64_json"}).data)
    assert base64.b64decode(b64["data"][0]["b64_json"]) == img.data
    assert img.data.startswith(b"\x89PNG\r\n\x1a\n")
    gpt = json.loads(post("/images/generations", {"model": "gpt-image-1", "prompt": "a cat"}).data)
    assert "b64_json" in gpt["data"][0]  # GPT image models always answer base64


# -- speech: valid files ----------------------------------------------------------------------------

def _mp3_frames(data: bytes) -> int:
    """Walk MPEG-2 Layer III frames from the first byte to the last; their count."""
    bitrates = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]
    rates = [22050, 24000, 16000]
    pos = frames = 0
    while pos < len(data):
        b1, b2, b3 = data[pos + 1], data[pos + 2], data[pos + 3]
        assert data[pos] == 0xFF and b1 & 0xE0 == 0xE0, f"lost frame sync at {pos}"
        assert (b1 >> 3) & 3 == 2 and (b1 >> 1) & 3 == 1  # MPEG-2, Layer III
        size = 72 * bitrates[b2 >> 4] * 1000 // rates[(b2 >> 2) & 3] + ((b2 >> 1) & 1)
        assert size > 4 and rates[(b2 >> 2) & 3] == 24000 and (b3 >> 6) == 3  # mono
        pos += size
        frames += 1
    assert pos == len(data)
    return frames


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1 ^ 0x104C11DB7) if crc & 0x80000000 else crc << 1
    return crc & 0xFFFFFFFF


def _check_opus(data: bytes) -> None:
    pos, packets = 0, []
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS" and data[pos + 4] == 0
        nseg = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + nseg]
        end = pos + 27 + nseg + sum(lacing)
        page = bytearray(data[pos:end])
        crc = struct.unpack("<I", bytes(page[22:26]))[0]
        page[22:26] = b"\0\0\0\0"
        assert _ogg_crc(bytes(page)) == crc
        body = data[pos + 27 + nseg:end]
        packets.append(body[:lacing[0]])
        pos = end
    assert packets[0][:8] == b"OpusHead" and packets[0][9] == 1  # mono
    assert packets[1][:8] == b"OpusTags"
    assert data[5] & 0x02 and data[data.rfind(b"OggS") + 5] & 0x04  # first and last page


def _check_flac(data: bytes) -> None:
    assert data[:4] == b"fLaC" and data[4] == 0x80 and data[5:8] == b"\0\0\x22"
    info = int.from_bytes(data[18:26], "big")
    assert info >> 44 == 24000 and (info >> 41) & 7 == 0 and (info >> 36) & 31 == 15
    total = info & (2 ** 36 - 1)
    assert total > 0 and data[42:44] == b"\xff\xf8"  # first frame's sync code


def _check_aac(data: bytes) -> None:
    pos = 0
    while pos < len(data):
        h = data[pos:pos + 7]
        assert h[0] == 0xFF and h[1] & 0xF6 == 0xF0 and h[1] & 1  # ADTS sync, layer 0, no CRC
        assert (h[2] >> 6) == 1 and (h[2] >> 2) & 15 == 6  # AAC-LC, 24 kHz
        pos += ((h[3] & 3) << 11) | (h[4] << 3) | (h[5] >> 5)
    assert pos == len(data)


def _check_wav(data: bytes) -> None:
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[20:36])
    assert (fmt, channels, rate, bits) == (1, 1, 24000, 16)
    assert data[36:40] == b"data" and struct.unpack("<I", data[40:44])[0] == len(data) - 44


@pytest.mark.parametrize("fmt,ctype,check", [
    ("mp3", "audio/mpeg", _mp3_frames), ("opus", "audio/ogg", _check_opus),
    ("flac", "audio/flac", _check_flac), ("aac", "audio/aac", _check_aac),
    ("wav", "audio/wav", _check_wav), ("pcm", "audio/pcm", lambda d: len(d) % 2 == 0 or pytest.fail()),
])
def test_speech_is_a_valid_file(post, fmt, ctype, check) -> None:
    body = {"model": "tts-1", "input": "hello there", "voice": "alloy"}
    r = post("/audio/speech", body if fmt == "mp3" else {**body, "response_format": fmt})
    assert r.status == 200 and r.headers["content-type"] == ctype
    check(r.data)


def test_speech_length_follows_input_and_speed(post) -> None:
    body = {"model": "tts-1", "input": "hello there, this is a longer sentence", "voice": "alloy"}
    normal = _mp3_frames(post("/audio/speech", body).data)
    fast = _mp3_frames(post("/audio/speech", {**body, "speed": 2.0}).data)
    short = _mp3_frames(post("/audio/speech", {**body, "input": "hi"}).data)
    assert short < normal and fast < normal


def test_speech_sse_stream(post) -> None:
    r = post("/audio/speech", {"model": "gpt-4o-mini-tts", "input": "hi", "voice": "alloy",
                               "stream_format": "sse"})
    lines = [json.loads(ln[6:]) for ln in r.data.decode().split("\n") if ln.startswith("data: ")]
    audio = b"".join(base64.b64decode(e["audio"]) for e in lines if e["type"] == "speech.audio.delta")
    assert lines[-1]["type"] == "speech.audio.done" and lines[-1]["usage"]["total_tokens"] > 0
    _mp3_frames(audio)


# -- unknown models, injected 429s -------------------------------------------------------------------

def test_unknown_model_is_404_with_the_api_body(post) -> None:
    r = post("/chat/completions", {**CHAT, "model": "gpt-9"})
    assert r.status == 404
    assert json.loads(r.data) == {"error": {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": None, "code": "model_not_found"}}


@pytest.mark.parametrize("rpm", [None, 1000])
def test_injected_429_has_the_headers_of_a_real_one(post, emu, rpm) -> None:
    emu.config("openai").rpm = rpm
    emu.config("openai").faults = FaultPlan(script=["429"])
    injected = post("/chat/completions", CHAT)
    emu.config("openai").rpm, emu.config("openai").faults = 1, FaultPlan()
    post("/chat/completions", CHAT)
    real = post("/chat/completions", CHAT)  # the second request in a minute at rpm=1
    assert injected.status == real.status == 429
    names = {k.lower() for k in real.headers if k.lower().startswith(("x-ratelimit-", "retry-after"))}
    assert names <= {k.lower() for k in injected.headers}
    assert injected.headers["x-ratelimit-remaining-requests"] == "0"
    assert injected.headers["x-ratelimit-limit-requests"] == str(rpm or 500)
    assert {"x-ratelimit-limit-tokens", "x-ratelimit-reset-tokens"} <= {k.lower() for k in injected.headers}
    assert json.loads(injected.data)["error"]["code"] == "rate_limit_exceeded"
