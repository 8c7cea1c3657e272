"""Shared rate limits, breaker state and key health for many processes, through Redis.

    ai = backend("openai", rpm=500, coordination="redis://host:6379/0")

    coord = Coordination.from_url("redis://host:6379/0", namespace="prod")
    a = backend("openai", rpm=500, coordination=coord)   # these share one connection pool
    b = backend("openai", rpm=500, coordination=coord)

What is shared, per backend and endpoint (``base_url``): each key's token buckets (requests
and tokens per minute) refilled on Redis's own clock, one atomic Lua script per acquire; the
circuit breaker; key cooldowns (429 Retry-After), disabled keys (401/403) and per-key counters,
which ``stats()`` reads from any process. Every Redis key lives under ``<namespace>:`` and has
an expiry.

Redis is a speed-up, never a point of failure: commands time out after ``socket_timeout``
(0.1 s), then every process carries on with its local primitives (one warning, no waiting on
a dead Redis), checks again in the background with backoff and rejoins when Redis takes
writes again. The URL's password is never shown. Needs ``pip install
'ipfs-accelerate-api[redis]'``; the redis client is imported only when a Coordination is made.

::

    Coordination --- Link (client, up/down, background re-check)
                 |-- Scripts (the Lua: ACQUIRE, UPDATE, BREAKER)
                 |-- key_pool()     -> SharedKeyPool(KeyPool)       the engine's key_pool=
                 |-- breaker()      -> SharedCircuitBreaker         the engine's circuit=
                 '-- rate_limiter() -> SharedRateLimiter            RateLimiter's interface
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..config import BreakerPolicy, Secret
from ..errors import ConfigurationError
from ._breaker import DEFAULT_PROBE_LEASE, SharedCircuitBreaker
from ._keys import SharedKeyPool
from ._limiter import SharedRateLimiter
from ._link import (
    DEFAULT_RECHECK_MAX,
    DEFAULT_RECHECK_MIN,
    DEFAULT_SOCKET_TIMEOUT,
    REDIS_EXTRA,
    Link,
    redact_url,
)
from ._scripts import Scripts

__all__ = [
    "Coordination",
    "DEFAULT_NAMESPACE",
    "DEFAULT_PROBE_LEASE",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_STATE_TTL",
    "REDIS_EXTRA",
    "SharedCircuitBreaker",
    "SharedKeyPool",
    "SharedRateLimiter",
    "attach",
    "redact_url",
]

DEFAULT_NAMESPACE = "ipfs-accel"
#: Seconds a shared key lives after its last write (counters included): idle state goes away.
DEFAULT_STATE_TTL = 86_400.0

_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


def _name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(f"{kind} must be letters, digits and _.:- ; got {value!r}")
    return value


class Coordination:
    """One Redis connection pool and the shared state built on it; share it between backends.

    Args:
        url: ``redis://[:password@]host[:port][/db]`` (also ``rediss://``, ``unix://``).
        namespace: prefix of every Redis key (separate deployments on one Redis).
        socket_timeout: seconds a Redis command may take before falling back to local state.
        state_ttl: seconds shared state lives after its last write.
        probe_lease: seconds a half-open probe may stay out before another process may probe.
        recheck_min, recheck_max: backoff of the background check while Redis is away.
        server_clock: tests only: seconds to use instead of Redis's ``TIME``.
    """

    def __init__(self, url: str, *, namespace: str = DEFAULT_NAMESPACE,
                 socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
                 state_ttl: float = DEFAULT_STATE_TTL, probe_lease: float = DEFAULT_PROBE_LEASE,
                 recheck_min: float = DEFAULT_RECHECK_MIN, recheck_max: float = DEFAULT_RECHECK_MAX,
                 server_clock: Callable[[], float] | None = None) -> None:
        self.namespace = _name("namespace", namespace)
        if not state_ttl > 0:
            raise ConfigurationError("state_ttl must be > 0")
        self._link = Link(url, socket_timeout=socket_timeout, recheck_min=recheck_min,
                          recheck_max=recheck_max, probe_key=f"{namespace}:probe")
        self._scripts = Scripts(self._link.client, ttl_ms=round(state_ttl * 1000),
                                server_clock=server_clock)
        self._probe_lease = probe_lease

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Coordination:
        """``Coordination(url, **options)``: see the class for the options."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return (f"<Coordination {self._link.url} namespace={self.namespace!r} "
                f"{'redis' if self._link.up else 'local'}>")

    @property
    def url(self) -> str:
        """The URL with its password replaced by ``***``."""
        return self._link.url

    @property
    def healthy(self) -> bool:
        """True while shared state is in use; False while running on local state."""
        return self._link.up

    @property
    def client(self) -> Any:
        """The underlying ``redis.Redis`` client."""
        return self._link.client

    def stats(self) -> dict[str, Any]:
        return {"url": self._link.url, "namespace": self.namespace,
                "mode": "redis" if self._link.up else "local",
                "fallbacks": self._link.fallbacks, "rejoins": self._link.rejoins}

    def prefix(self, backend: str, endpoint: str) -> str:
        """The key prefix of one backend endpoint (a hash tag keeps it in one cluster slot)."""
        digest = hashlib.blake2b(endpoint.encode(), digest_size=6).hexdigest()
        return f"{self.namespace}:{{{_name('backend name', backend)}:{digest}}}"

    def key_pool(self, backend: str, endpoint: str, secrets: Sequence[Secret] = (), *,
                 strategy: str = "round_robin", rpm: float | None = None,
                 tpm: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> SharedKeyPool:
        """The shared key pool of ``backend`` at ``endpoint`` (pass it as ``key_pool=``)."""
        return SharedKeyPool(self._link, self._scripts, self.prefix(backend, endpoint), secrets,
                             strategy=strategy, rpm=rpm, tpm=tpm, clock=clock)

    def breaker(self, backend: str, endpoint: str, policy: BreakerPolicy | None = None, *,
                clock: Callable[[], float] | None = None) -> SharedCircuitBreaker:
        """The shared breaker of ``backend`` at ``endpoint`` (pass it as ``circuit=``)."""
        return SharedCircuitBreaker(self._link, self._scripts,
                                    self.prefix(backend, endpoint) + ":breaker", policy,
                                    probe_lease=self._probe_lease, clock=clock)

    def rate_limiter(self, name: str, rates: Sequence[tuple[float, float | None]], *,
                     clock: Callable[[], float] | None = None,
                     sleep: Callable[[float], object] | None = None) -> SharedRateLimiter:
        """A shared limiter called ``name``: one ``(rate per second, capacity)`` per bucket."""
        key = f"{self.namespace}:{{limiter:{_name('limiter name', name)}}}"
        return SharedRateLimiter(self._link, self._scripts, key, rates, clock=clock, sleep=sleep)

    def close(self) -> None:
        """Close the connections; anything still using this object runs on local state."""
        self._link.close()

    def __enter__(self) -> Coordination:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class Attached:
    """What a backend gets from :func:`attach`: the engine's seams and how to let go."""

    key_pool: SharedKeyPool
    circuit: SharedCircuitBreaker
    owned: Coordination | None

    def close(self) -> None:
        if self.owned is not None:
            self.owned.close()


def attach(coordination: str | Coordination, backend: str, endpoint: str,
           keys: Sequence[Secret], *, key_strategy: str = "round_robin",
           rpm: float | None = None, tpm: float | None = None,
           breaker: BreakerPolicy | None = None) -> Attached:
    """Shared key pool and breaker for one backend; a URL makes a Coordination it owns."""
    if isinstance(coordination, str):
        coord, owned = Coordination.from_url(coordination), True
    elif isinstance(coordination, Coordination):
        coord, owned = coordination, False
    else:
        raise ConfigurationError("coordination= takes a redis:// URL or a Coordination; "
                                 f"got {type(coordination).__name__}")
    return Attached(coord.key_pool(backend, endpoint, keys, strategy=key_strategy, rpm=rpm, tpm=tpm),
                    coord.breaker(backend, endpoint, breaker), coord if owned else None)
