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


def _build(emu, made: list, name: str, key: str, service: str | None, options: dict):
    if "base_url" not in options:  # aliases ("google") have no emulator service of their own
        options["base_url"] = emu.base_url(service or name)
    if "api_keys" not in options:
        options.setdefault("api_key", key)
    options.setdefault("retry", FAST_RETRY)
    b = backend(name, **options)
    made.append(b)
    return b


def backend_factory(emu, name: str, key: str = "sk-test", service: str | None = None):
    """A factory of ``name`` backends against the emulator's ``service`` (``name`` unless
    told), with ``key`` unless the options give keys; yields it, then closes all it made."""
    made: list = []
    yield lambda **options: _build(emu, made, name, key, service, options)
    for b in made:
        b.close()


@pytest.fixture
def backends(emu):
    """Create backends of any service against the emulator: ``backends(name, **options)``;
    all are closed after the test."""
    made: list = []
    yield lambda name, **options: _build(emu, made, name, "sk-test", None, options)
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


def concurrently(call, items, threads: int = 16) -> list:
    """``call(item)`` for every item, each from a pool of ``threads``: the results, or the
    exception each raised, in item order (for tests of calls combined by the batcher)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(item):
        try:
            return call(item)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, items))


#: In a rules table: the field is removed (see :func:`merge`).
DROP = object()


def merge(base: dict, change: dict) -> dict:
    """``base`` with the fields of ``change`` set (or removed where they are ``DROP``)."""
    out = dict(base)
    for k, v in change.items():
        if v is DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


MSG = [{"role": "user", "content": "hello there"}]
