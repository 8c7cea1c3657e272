"""A stream holds its concurrency slot until it ends: ``max_concurrency`` bounds streams too,
and a stream that is exhausted, closed, broken or dropped gives its slot back."""

from __future__ import annotations

import concurrent.futures
import gc

import pytest

from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.errors import StreamInterrupted

from .conftest import MSG

MODEL = "gpt-4o-mini"


def _slow_streams(emu) -> None:
    emu.config("openai").stream_delay = 0.05  # a stream takes a while to send


def test_open_streams_count_against_max_concurrency(make, emu) -> None:
    _slow_streams(emu)
    ai = make(max_concurrency=2)
    first, second = ai.stream_chat(MSG, model=MODEL), ai.stream_chat(MSG, model=MODEL)
    next(first), next(second)
    waiting = ai.submit("list_models")
    with pytest.raises(concurrent.futures.TimeoutError):
        waiting.result(timeout=0.5)  # both slots are held by the open streams
    assert emu.stats("openai")["requests"] == 2
    for _ in first:  # exhausting one stream frees its slot
        pass
    assert waiting.result(timeout=30)
    second.close()
    assert ai.list_models()


def test_a_closed_stream_frees_its_slot(make, emu) -> None:
    _slow_streams(emu)
    ai = make(max_concurrency=1)
    stream = ai.stream_chat(MSG, model=MODEL)
    next(stream)
    stream.close()
    assert ai.submit("list_models").result(timeout=30)


@pytest.mark.parametrize("iterated", [True, False])
def test_a_dropped_stream_frees_its_slot(make, emu, iterated) -> None:
    _slow_streams(emu)
    ai = make(max_concurrency=1)
    stream = ai.stream_chat(MSG, model=MODEL)
    if iterated:
        next(stream)
    del stream  # abandoned by the caller, never closed
    gc.collect()
    assert ai.submit("list_models").result(timeout=30)


def test_a_broken_stream_frees_its_slot(make, emu) -> None:
    emu.config("openai").faults = FaultPlan(script=["stream_error"])
    ai = make(max_concurrency=1)
    with pytest.raises(StreamInterrupted):
        for _ in ai.stream_chat(MSG, model=MODEL):
            pass
    assert ai.submit("list_models").result(timeout=30)


def test_many_streams_never_exceed_the_limit(make, emu) -> None:
    emu.config("openai").stream_delay = 0.005
    ai = make(max_concurrency=3)
    futures = [ai.submit("stream_chat", MSG, model=MODEL) for _ in range(12)]
    held = [f.result(timeout=60) for f in futures[:3]]
    assert ai.stats()["streams_open"] == 3  # the limit is reached...
    assert not any(f.done() for f in futures[3:])  # ...and the rest wait for a slot
    texts, seen_open = [], []
    for stream in held:
        texts.append("".join(c.text for c in stream))
    for f in futures[3:]:
        stream = f.result(timeout=60)
        seen_open.append(ai.stats()["streams_open"])
        texts.append("".join(c.text for c in stream))
    assert len(set(texts)) == 1 and texts[0]
    assert max(seen_open) <= 3  # never passed
    assert ai.stats()["streams_open"] == 0


def test_a_streams_usage_is_counted_when_it_ends(make) -> None:
    """A stream's request is recorded at its first chunk; the usage its last chunk reports
    is added to the totals (and so to the cost) when the stream ends."""
    ai = make()
    msg = [{"role": "user", "content": "count my tokens"}]
    plain = ai.chat(msg, model="gpt-4o-mini").usage
    before = ai.stats()
    chunks = list(ai.stream_chat(msg, model="gpt-4o-mini"))
    assert chunks[-1].usage is not None
    after = ai.stats()
    assert after["completion_tokens"] - before["completion_tokens"] == plain.completion_tokens
    assert after["prompt_tokens"] - before["prompt_tokens"] == plain.prompt_tokens
    row = after["usage"]["gpt-4o-mini"]["openai-key-1"]
    assert row["completion_tokens"] == 2 * plain.completion_tokens and row["requests"] == 2
