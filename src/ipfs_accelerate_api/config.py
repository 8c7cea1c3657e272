"""Value objects for options, and credential discovery.

Every option object is immutable, keyword-only, compares by value and has a readable repr.
Defaults are the ``DEFAULT_*`` constants below.

Credentials are looked up, first hit wins:

1. explicit ``api_key=`` / ``api_keys=`` arguments;
2. environment: ``<PREFIX>_API_KEYS`` (comma-separated), ``<PREFIX>_API_KEY_1..N``,
   ``<PREFIX>_API_KEY``;
3. the credentials file ``~/.ipfs_api_credentials`` (or ``$IPFS_ACCEL_CREDENTIALS``): JSON keyed
   by backend name, each value a key, a list of keys, or ``{"api_key"|"api_keys", "base_url"}``.
   A file readable by group or others is refused (``chmod 600``).

Keys are wrapped in :class:`Secret`, whose ``str``/``repr`` never shows the key.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import ConfigurationError

__all__ = [
    "BreakerPolicy",
    "Credentials",
    "DEFAULT_BASE_DELAY",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_MAX_RETRIES",
    "RetryPolicy",
    "Secret",
    "Timeouts",
    "resolve_credentials",
]

DEFAULT_MAX_RETRIES = 3
DEFAULT_BASE_DELAY = 0.5
DEFAULT_MAX_DELAY = 8.0
#: A server's Retry-After longer than this is not waited for (the request fails instead).
DEFAULT_MAX_SERVER_DELAY = 120.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 120.0
CREDENTIALS_FILE_ENV = "IPFS_ACCEL_CREDENTIALS"
DEFAULT_CREDENTIALS_FILE = "~/.ipfs_api_credentials"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How failed attempts are retried.

    Retried: connection errors, timeouts, 408, 409, 429 and 5xx; never 400/401/403/404/422.
    The server's hint (``retry-after-ms``, ``Retry-After``, rate-limit reset headers) is
    honoured first (up to ``max_server_delay``); otherwise capped exponential backoff
    ``base_delay * 2**n`` up to ``max_delay`` with full jitter. ``deadline`` (seconds from
    submission) bounds the whole request, waits included.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    jitter: bool = True
    deadline: float | None = None
    max_server_delay: float = DEFAULT_MAX_SERVER_DELAY

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigurationError("RetryPolicy.max_retries must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("RetryPolicy delays must be >= 0")
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigurationError("RetryPolicy.deadline must be > 0 or None")

    def backoff(self, attempt: int, rand: float) -> float:
        """Delay before retry number ``attempt`` (1-based); ``rand`` in [0, 1)."""
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return cap * rand if self.jitter else cap


@dataclass(frozen=True, kw_only=True)
class BreakerPolicy:
    """Circuit-breaker settings, one breaker per backend endpoint."""

    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    half_open_max_calls: int = 1
    success_threshold: int = 1


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Per-attempt timeouts in seconds: ``connect``, ``read`` (between bytes), ``total``."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT
    total: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "read", "total"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"Timeouts.{name} must be > 0")


class Secret:
    """An API key. ``str()`` and ``repr()`` show a label, never the key; ``reveal()`` does."""

    __slots__ = ("_value", "label")

    def __init__(self, value: str, label: str = "key") -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError("an API key must be a non-empty string")
        self._value = value.strip()
        self.label = label

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"<Secret {self.label}>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("API keys are not picklable")


@dataclass(frozen=True)
class Credentials:
    keys: tuple[Secret, ...] = field(default=())
    base_url: str | None = None
    source: str = "none"


def _env_keys(prefix: str, env: Mapping[str, str]) -> list[str]:
    many = env.get(f"{prefix}_API_KEYS", "")
    if many.strip():
        return [k.strip() for k in many.split(",") if k.strip()]
    numbered = []
    i = 1
    while env.get(f"{prefix}_API_KEY_{i}", "").strip():
        numbered.append(env[f"{prefix}_API_KEY_{i}"].strip())
        i += 1
    if numbered:
        return numbered
    single = env.get(f"{prefix}_API_KEY", "").strip()
    return [single] if single else []


def _file_entry(name: str, env: Mapping[str, str]) -> tuple[list[str], str | None, str] | None:
    path = os.path.expanduser(env.get(CREDENTIALS_FILE_ENV) or DEFAULT_CREDENTIALS_FILE)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"refusing to read {path}: it is readable by group or others; run `chmod 600 {path}`"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read credentials file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"credentials file {path} must hold a JSON object")
    entry = data.get(name)
    if entry is None:
        return None
    if isinstance(entry, str):
        return [entry], None, path
    if isinstance(entry, list):
        return [str(k) for k in entry], None, path
    if isinstance(entry, dict):
        keys = entry.get("api_keys") or ([entry["api_key"]] if entry.get("api_key") else [])
        return [str(k) for k in keys], entry.get("base_url"), path
    raise ConfigurationError(f"credentials file {path}: entry {name!r} has an unknown shape")


def resolve_credentials(
    name: str,
    env_prefix: str,
    *,
    api_key: str | None = None,
    api_keys: Sequence[str] | None = None,
    required: bool = True,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Find the keys (and maybe a base URL) for backend ``name``; see the module docstring."""
    env = os.environ if env is None else env
    raw: list[str] = []
    base_url = None
    source = "none"
    if api_keys:
        raw, source = [str(k) for k in api_keys], "arguments"
    elif api_key:
        raw, source = [str(api_key)], "arguments"
    else:
        raw = _env_keys(env_prefix, env)
        if raw:
            source = "environment"
        else:
            found = _file_entry(name, env)
            if found:
                raw, base_url, source = found
    if not raw and required:
        raise ConfigurationError(
            f"no API key for {name}: pass api_key=... or api_keys=[...], or set "
            f"{env_prefix}_API_KEY (or {env_prefix}_API_KEYS=k1,k2 / {env_prefix}_API_KEY_1..N), "
            f"or add it to {DEFAULT_CREDENTIALS_FILE}"
        )
    keys = tuple(Secret(k, f"{name}-key-{i + 1}") for i, k in enumerate(raw))
    return Credentials(keys=keys, base_url=base_url, source=source)
