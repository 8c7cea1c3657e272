"""``async for chunk in backend.astream_chat(...)``: the event loop never blocks on the socket.

Proven without timing: the held stream's second chunk is only sent once another task on the
same loop has run; a loop blocked in a socket read would never run it (the server gives up
after a while and the test sees it).
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import ipfs_accelerate_api as ia
from ipfs_accelerate_api import RetryPolicy
from ipfs_accelerate_api.errors import StreamInterrupted

from .conftest import MSG
from .hostile import HostileServer


@pytest.fixture
def hostile():
    with HostileServer(drip=0.01, hold=10.0) as server:
        yield server


def _backend(url: str) -> object:
    return ia.backend("openai", base_url=url, api_key="sk-test", retry=RetryPolicy(max_retries=0))


def test_draining_a_stream_leaves_the_loop_free(hostile) -> None:
    async def main() -> list[str]:
        with _backend(hostile.url + "/held-stream") as ai:
            texts = []

            async def release() -> None:
                hostile.release.set()  # runs only while the stream's consumer is awaiting

            async for chunk in ai.astream_chat(MSG, model="m"):
                texts.append(chunk.text)
                if len(texts) == 1:
                    asyncio.get_running_loop().create_task(release())
            return texts

    texts = asyncio.run(asyncio.wait_for(main(), 60))
    assert texts == ["tick ", "tick "]
    assert hostile.released_in_time is True


def test_leaving_the_loop_early_closes_the_stream(hostile) -> None:
    hostile.max_pieces = 5000

    async def main() -> str:
        with _backend(hostile.url + "/slow-stream") as ai:
            stream = ai.astream_chat(MSG, model="m")
            async for chunk in stream:
                break
            await stream.aclose()
            return chunk.text

    assert asyncio.run(asyncio.wait_for(main(), 60)) == "tick "
    (_, sent, total), = hostile.wait_written(1)
    assert sent < total
    alive = [t.name for t in threading.enumerate() if t.name == "ipfs-accel-astream"]
    assert alive == []


def test_concurrent_async_streams_match_the_sync_text(emu) -> None:
    ai = ia.backend("openai", base_url=emu.base_url("openai"), api_key="sk-test")
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(20)]
    expected = ["".join(c.text for c in ai.stream_chat(p, model="gpt-4o-mini")) for p in prompts]

    async def one(p):
        return "".join([c.text async for c in ai.astream_chat(p, model="gpt-4o-mini")])

    async def main():
        return await asyncio.gather(*(one(p) for p in prompts))

    try:
        assert asyncio.run(asyncio.wait_for(main(), 120)) == expected
    finally:
        ai.close()


def test_a_broken_async_stream_raises_with_the_text_so_far(hostile) -> None:
    hostile.ctype = "text/event-stream"
    hostile.body = (b'data: {"choices": [{"delta": {"content": "part"}}]}\n\n'
                    b'data: {"error": {"message": "overloaded"}}\n\n')

    async def main():
        with _backend(hostile.url) as ai:
            async for _ in ai.astream_chat(MSG, model="m"):
                pass

    with pytest.raises(StreamInterrupted) as info:
        asyncio.run(asyncio.wait_for(main(), 60))
    assert info.value.partial_text == "part"
