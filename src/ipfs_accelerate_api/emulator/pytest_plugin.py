"""pytest plugin (entry point ``pytest11``): the ``ai_emulator`` fixture.

    def test_my_app(ai_emulator):
        client = OpenAI(base_url=ai_emulator.base_url("openai"), api_key="test")
"""

from __future__ import annotations

from typing import Iterator

import pytest

from . import Emulator


@pytest.fixture
def ai_emulator() -> Iterator[Emulator]:
    """A running emulator of every service, with default settings, for one test.

    At teardown it fails the test if one of its handlers raised: the client then got a 500
    that the real service would not have sent (an emulator bug worth reporting)."""
    with Emulator() as emu:
        yield emu
    emu.assert_no_handler_errors()
