"""The Redis connection, and the rule that it is never a point of failure.

Every shared operation goes through :meth:`Link.run` with its local fallback. While Redis
answers, the shared path runs; the first failure (unreachable, slow past the socket timeout,
or answering errors such as READONLY or OOM) switches the link to *local*: one warning is
logged, every later call takes the fallback at once (no request waits on a dead Redis), and a
background thread writes a probe key with capped exponential backoff until Redis takes it,
then the link rejoins. The password of the URL never leaves this module: :func:`redact_url`
is what logs, reprs and errors show.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any, Callable, TypeVar
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigurationError

__all__ = ["DEFAULT_SOCKET_TIMEOUT", "Link", "REDIS_EXTRA", "redact_url"]

log = logging.getLogger("ipfs_accelerate_api.coordination")

T = TypeVar("T")

REDIS_EXTRA = "pip install 'ipfs-accelerate-api[redis]'"
#: Seconds a Redis command (or connect) may take before the link falls back to local state.
DEFAULT_SOCKET_TIMEOUT = 0.1
#: First and longest pause between background checks while Redis is away.
DEFAULT_RECHECK_MIN = 0.1
DEFAULT_RECHECK_MAX = 5.0
#: The probe key's expiry (it only proves that Redis takes writes).
PROBE_TTL_MS = 10_000


def import_redis() -> Any:
    """The redis client package, or a ConfigurationError naming the extra to install."""
    try:
        import redis
    except ImportError:
        raise ConfigurationError(
            f"coordination through Redis needs the redis client: {REDIS_EXTRA}") from None
    return redis


def redact_url(url: str) -> str:
    """``url`` with its user info and any ``password=`` query value replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        query = "&".join(f"{k}=***" if k.lower() in ("password", "username") else f"{k}={v}"
                         for k, v in parse_qsl(parts.query, keep_blank_values=True))
    except ValueError:
        return "<unparsable redis url>"
    return f"{parts.scheme}://{netloc}{parts.path}{'?' + query if query else ''}"


def _url_secrets(url: str) -> list[str]:
    """The strings of ``url`` that must never be shown (to scrub them from error texts)."""
    try:
        parts = urlsplit(url)
        found = [parts.username, parts.password]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() in ("password", "username")]
    except ValueError:
        return [url]
    return [s for s in found if s]


class Link:
    """A redis client plus the up/down state that decides between shared and local.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` (or ``rediss://``, ``unix://``).
        socket_timeout: seconds a command or a connect may take before falling back.
        recheck_min, recheck_max: backoff of the background check while Redis is away.
        probe_key: the key the background check writes (with an expiry).
    """

    def __init__(self, url: str, *, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
                 recheck_min: float = DEFAULT_RECHECK_MIN, recheck_max: float = DEFAULT_RECHECK_MAX,
                 probe_key: str) -> None:
        if not isinstance(url, str):
            raise ConfigurationError("coordination URL must be a string like redis://host:6379/0")
        if not (socket_timeout > 0 and 0 < recheck_min <= recheck_max):
            raise ConfigurationError("socket_timeout and recheck_min <= recheck_max must be > 0")
        self.url = redact_url(url)
        self._secrets = _url_secrets(url)
        redis = import_redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            pool = redis.ConnectionPool.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 0), health_check_interval=0)  # fail fast: no retries
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"bad coordination URL {self.url}: {self.scrub(str(exc))}") from None  # not chained: it may quote the URL
        self.client = redis.Redis(connection_pool=pool)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._probe_key = probe_key
        self._recheck = (recheck_min, recheck_max)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._up = True
        self.fallbacks = 0
        self.rejoins = 0

    @property
    def up(self) -> bool:
        """True while the shared (Redis) path is in use."""
        return self._up

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def run(self, shared: Callable[[], T], local: Callable[[], T]) -> T:
        """``shared()`` while Redis is up; ``local()`` while it is away or when it fails now."""
        if self._up:
            try:
                return shared()
            except self._errors as exc:
                self._lost(exc)
        return local()

    def _lost(self, exc: BaseException) -> None:
        with self._lock:
            if not self._up or self._stop.is_set():
                return
            self._up = False
            self.fallbacks += 1
            self._thread = threading.Thread(target=self._watch, name="ipfs-accel-redis-check",
                                            daemon=True)
            self._thread.start()
        log.warning("coordination: Redis at %s failed (%s: %s); using local limits, breaker and "
                    "key state until it answers again", self.url, type(exc).__name__,
                    self.scrub(str(exc)))

    def _watch(self) -> None:
        delay = self._recheck[0]
        while not self._stop.wait(delay * random.uniform(0.5, 1.0)):
            try:
                self.client.set(self._probe_key, "1", px=PROBE_TTL_MS)  # a write: READONLY/OOM fail
            except self._errors as exc:
                log.debug("coordination: Redis at %s still failing (%s)", self.url,
                          type(exc).__name__)
                delay = min(self._recheck[1], delay * 2)
                continue
            with self._lock:
                self._up = True
                self.rejoins += 1
            log.info("coordination: Redis at %s answers again; shared state resumes", self.url)
            return

    def close(self) -> None:
        """Stop the background check and close the connections (later calls run locally)."""
        self._stop.set()
        self._up = False
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2)
        self.client.connection_pool.disconnect()
