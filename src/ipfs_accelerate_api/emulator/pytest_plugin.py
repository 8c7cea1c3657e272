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
    """A running emulator of every service, with default settings, for one test."""
    with Emulator() as emu:
        yield emu
