"""A real redis-server for the coordination tests.

The session's server is started once on a free loopback port with its own directory and
stopped by pid; each test gets its own namespace in it. Tests that stop, kill or break Redis
take ``own_redis``, a server of their own. Without ``redis-server`` (or the ``redis`` client)
these tests skip, unless ``IPFS_ACCEL_REQUIRE_REDIS=1`` (set by ``.ci/run``) makes that a
failure.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from typing import Any, Callable, Iterator

import pytest

from ipfs_accelerate_api.coordination.testing import RedisServer, find_redis_server

REQUIRE_ENV = "IPFS_ACCEL_REQUIRE_REDIS"
#: Generous for tests that count exactly: a busy 2-core machine must not look like an outage.
PATIENT_TIMEOUT = 2.0
#: How long a test waits for its worker processes at most.
PROCESS_TIMEOUT = 60.0


def _missing(what: str) -> None:
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{what} is required ({REQUIRE_ENV} is set) but not available")
    pytest.skip(f"{what} not available")


def _server(directory: Any, **kw: Any) -> RedisServer:
    if find_redis_server() is None:
        _missing("redis-server")
    try:
        import redis  # noqa: F401
    except ImportError:
        _missing("the redis client (pip install 'ipfs-accelerate-api[redis]')")
    return RedisServer(directory, **kw).start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = _server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Any) -> Iterator[RedisServer]:
    """A server this test may pause, kill, restart or misconfigure."""
    server = _server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def coordinate(redis_server: RedisServer, namespace: str) -> Iterator[Callable[..., Any]]:
    """Make Coordinations on the session server, in this test's namespace; all are closed
    afterwards, and none may have fallen back to local state (that would hide a bug)."""
    from ipfs_accelerate_api.coordination import Coordination

    made: list[Coordination] = []

    def factory(**options: Any) -> Coordination:
        options.setdefault("namespace", namespace)
        options.setdefault("socket_timeout", PATIENT_TIMEOUT)
        c = Coordination.from_url(redis_server.url, **options)
        made.append(c)
        return c

    yield factory
    for c in made:
        fallbacks = c.stats()["fallbacks"]
        c.close()
        assert fallbacks == 0, "a coordination fell back to local state during the test"


class Processes:
    """Worker processes (spawned: no threads forked) and a queue they report on."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.results = self.ctx.Queue()
        self.procs: list[Any] = []

    def event(self) -> Any:
        return self.ctx.Event()

    def start(self, target: Callable[..., Any], *args: Any) -> None:
        p = self.ctx.Process(target=target, args=(self.results, *args), daemon=True)
        p.start()
        self.procs.append(p)

    def collect(self, tag: str, n: int | None = None) -> list[Any]:
        """The next ``n`` (default: one per process) reports tagged ``tag``."""
        out = []
        for _ in range(len(self.procs) if n is None else n):
            got_tag, value = self.results.get(timeout=PROCESS_TIMEOUT)
            if got_tag == "error":
                raise AssertionError(f"worker failed:\n{value}")
            assert got_tag == tag, (got_tag, tag)
            out.append(value)
        return out

    def stop(self) -> None:
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()  # by pid
                p.join(5)
        self.results.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop()
