from __future__ import annotations

import pytest

from ipfs_accelerate_api import RetryPolicy, backend
from ipfs_accelerate_api.emulator import Emulator
from ipfs_accelerate_api.engine import Engine

FAST_RETRY = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01)


@pytest.fixture
def emu():
    """The emulator every API test talks to; no handler of it may raise during the test."""
    with Emulator(seed=1) as e:
        yield e
    e.assert_no_handler_errors()


@pytest.fixture
def backends(emu):
    """Create backends of any service against the emulator; all are closed after the test."""
    made = []

    def factory(name, **options):
        if "base_url" not in options:
            options["base_url"] = emu.base_url(name)
        if "api_keys" not in options:
            options.setdefault("api_key", "sk-test")
        options.setdefault("retry", FAST_RETRY)
        b = backend(name, **options)
        made.append(b)
        return b

    yield factory
    for b in made:
        b.close()


@pytest.fixture
def make(backends):
    """Create backends (OpenAI unless named) against the emulator; all are closed after the test."""
    return lambda service="openai", **options: backends(service, **options)


@pytest.fixture
def engines():
    """Create Engines for plain operations (no HTTP); all are closed after the test."""
    made = []

    def factory(name: str = "test", **options):
        e = Engine(name, **options)
        made.append(e)
        return e

    yield factory
    for e in made:
        e.close()


#: A request-table value that removes the field (see ``merge``).
DROP = object()


def merge(base, change):
    """``base`` with the fields of ``change`` set (or removed, where the value is ``DROP``)."""
    out = dict(base)
    for k, v in change.items():
        if v is DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


MSG = [{"role": "user", "content": "hello there"}]
