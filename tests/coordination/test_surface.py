"""How coordination is asked for, what it costs when not asked for, and what it never shows."""

from __future__ import annotations

import logging
import subprocess
import sys
import traceback

import pytest

from ipfs_accelerate_api import backend
from ipfs_accelerate_api.emulator import Emulator
from ipfs_accelerate_api.errors import AuthenticationError, ConfigurationError

PASSWORD_CANARY = "pw-canary-7f3a9c"
KEY_CANARY = "sk-canary-0d5e1b77"


@pytest.fixture
def emu():
    with Emulator() as e:
        yield e


def test_importing_the_package_does_not_import_redis() -> None:
    code = ("import sys, ipfs_accelerate_api, ipfs_accelerate_api.backends.base, "
            "ipfs_accelerate_api.coordination; sys.exit('redis' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


def test_without_the_redis_client_asking_for_it_names_the_extra(monkeypatch, emu) -> None:
    from ipfs_accelerate_api.coordination import Coordination

    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    with pytest.raises(ConfigurationError, match=r"ipfs-accelerate-api\[redis\]"):
        Coordination.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match=r"ipfs-accelerate-api\[redis\]"):
        backend("openai", base_url=emu.base_url("openai"), api_key="sk-x",
                coordination=f"redis://:{PASSWORD_CANARY}@127.0.0.1:1/0")


@pytest.mark.parametrize("bad", [f"http://:{PASSWORD_CANARY}@127.0.0.1:1/0",
                                 f"redis://:{PASSWORD_CANARY}@127.0.0.1:notaport/0", 42])
def test_a_bad_url_is_a_configuration_error_without_the_password(bad) -> None:
    pytest.importorskip("redis")
    from ipfs_accelerate_api.coordination import Coordination

    with pytest.raises(ConfigurationError) as info:
        Coordination.from_url(bad)
    assert PASSWORD_CANARY not in "".join(traceback.format_exception(info.value))


def test_the_url_password_never_shows(tmp_path, caplog) -> None:
    """In reprs, stats, the warning of a failing Redis and the errors Redis sends back."""
    from ipfs_accelerate_api.coordination import Coordination, redact_url
    from ipfs_accelerate_api.coordination.testing import RedisServer

    from .conftest import _server

    server: RedisServer = _server(tmp_path, password=PASSWORD_CANARY)
    try:
        caplog.set_level(logging.DEBUG, logger="ipfs_accelerate_api")
        patient = {"socket_timeout": 2.0}
        good = Coordination.from_url(server.url, **patient)
        wrong = Coordination.from_url(server.url.replace(PASSWORD_CANARY, PASSWORD_CANARY + "x"),
                                      **patient)
        query = Coordination.from_url(
            f"redis://127.0.0.1:{server.port}/0?password={PASSWORD_CANARY}", **patient)
        dead = Coordination.from_url(f"redis://user:{PASSWORD_CANARY}@127.0.0.1:1/0", **patient)
        shown = []
        for c in (good, wrong, query, dead):
            pool = c.key_pool("openai", "http://e", rpm=60)
            pool.acquire()
            breaker = c.breaker("openai", "http://e")
            breaker.allow()
            shown += [repr(c), str(c.stats()), c.url, repr(pool), repr(breaker), str(pool.stats())]
        assert good.healthy and query.healthy and not wrong.healthy and not dead.healthy
        shown += [r.getMessage() for r in caplog.records]
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
        assert all(PASSWORD_CANARY not in text for text in shown)
        assert redact_url(server.url) == f"redis://***@127.0.0.1:{server.port}/0"
        for c in (good, wrong, query, dead):
            c.close()
    finally:
        server.stop()


def test_api_keys_never_reach_redis(coordinate, redis_server, emu) -> None:
    """Neither in key names nor in values, a disabled key's reason included."""
    emu.config("openai").keys = ["sk-the-good-one"]
    coord = coordinate()
    ai = backend("openai", base_url=emu.base_url("openai"), api_keys=[KEY_CANARY, "sk-the-good-one"],
                 rpm=600, tpm=100_000, coordination=coord)
    try:
        for _ in range(4):
            ai.list_models()
        stats = ai.stats()["keys"]
        assert stats["openai-key-1"]["disabled"].startswith("401")
        assert stats["openai-key-2"]["requests"] >= 4 and stats["openai-key-2"]["shared"]
    finally:
        ai.close()
    client = coord.client
    names = list(client.scan_iter(f"{coord.namespace}:*"))
    assert names
    dump = b" ".join(names + [v for n in names if client.type(n) == b"hash"
                              for kv in client.hgetall(n).items() for v in kv])
    assert KEY_CANARY.encode() not in dump and b"sk-the-good-one" not in dump


def test_every_key_is_namespaced_and_expires(coordinate) -> None:
    from ipfs_accelerate_api.config import Secret

    coord = coordinate(state_ttl=120)
    pool = coord.key_pool("openai", "http://e", [Secret("sk-a", "a")], rpm=60, tpm=600)
    k, _ = pool.acquire(10)
    pool.release(k, ok=False, est_tokens=10, used_tokens=3)
    pool.cooldown(k, 1.0)
    pool.disable(k, "401")
    breaker = coord.breaker("openai", "http://e")
    breaker.allow()
    breaker.record_failure()
    coord.rate_limiter("named", [(1.0, None)]).try_acquire([1])
    names = list(coord.client.scan_iter(f"{coord.namespace}:*"))
    assert len(names) == 3  # one key's state, the breaker, the limiter
    for name in names:
        assert 0 < coord.client.pttl(name) <= 120_000


def test_backends_share_one_coordination_and_namespaces_separate(coordinate, emu) -> None:
    shared = coordinate()
    other = coordinate(namespace=shared.namespace + "-other")
    url = emu.base_url("openai")
    made = [backend("openai", base_url=url, api_key="sk-x", rpm=60, coordination=c)
            for c in (shared, shared, other)]
    try:
        made[0].list_models()  # capacity 1 at 1/s: the bucket is now empty...
        assert made[1].engine.keys.acquire() == (None, pytest.approx(1.0, abs=0.2))  # ...for both
        k, _wait = made[2].engine.keys.acquire()  # another namespace: its own bucket
        assert k is not None
        assert made[1].stats()["keys"]["openai-key-1"]["requests"] == 1
    finally:
        for b in made:
            b.close()
    assert shared.healthy  # closing a backend leaves a Coordination it was given open


def test_a_url_makes_a_coordination_the_backend_owns(redis_server, emu) -> None:
    ai = backend("openai", base_url=emu.base_url("openai"), api_key="sk-x", rpm=600,
                 coordination=redis_server.url)
    assert ai.list_models()
    assert ai.stats()["keys"]["openai-key-1"]["shared"] is True
    assert ai.stats()["breaker"]["shared"] is True
    ai.close()
    with pytest.raises(ConfigurationError):
        backend("openai", base_url=emu.base_url("openai"), api_key="sk-x", coordination=object())


def test_every_key_disabled_is_an_authentication_error_everywhere(coordinate, emu) -> None:
    emu.config("openai").keys = ["sk-real"]
    url = emu.base_url("openai")
    a = backend("openai", base_url=url, api_key="sk-wrong", coordination=coordinate())
    b = backend("openai", base_url=url, api_key="sk-wrong", coordination=coordinate())
    try:
        with pytest.raises(AuthenticationError):
            a.list_models()
        with pytest.raises(AuthenticationError, match="every API key is disabled"):
            b.list_models()  # never sent: the other process already learned it
        assert emu.stats("openai")["requests"] == 1
    finally:
        a.close()
        b.close()
