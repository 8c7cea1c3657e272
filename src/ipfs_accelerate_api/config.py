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

import dataclasses
import json
import math
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, TypeVar

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
    "check_header_value",
    "coerce_option",
    "resolve_credentials",
]

DEFAULT_MAX_RETRIES = 3
DEFAULT_BASE_DELAY = 0.5
DEFAULT_MAX_DELAY = 8.0
#: A server's Retry-After longer than this is not waited for (the request fails instead).
DEFAULT_MAX_SERVER_DELAY = 120.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 120.0
#: The longest wait for a stream's next event (comments and keep-alive lines do not count).
DEFAULT_STREAM_IDLE = 60.0
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
        _check_int(self, "max_retries", 0)
        for name in ("base_delay", "max_delay", "max_server_delay"):
            _check_seconds(self, name, allow_zero=True)
        _check_seconds(self, "deadline", optional=True)
        if not isinstance(self.jitter, bool):
            raise ConfigurationError("RetryPolicy.jitter must be True or False")

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

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "half_open_max_calls", "success_threshold"):
            _check_int(self, name, 1)
        _check_seconds(self, "recovery_timeout", allow_zero=True)


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Timeouts in seconds.

    - ``connect``: opening the connection (TCP and TLS).
    - ``read``: the longest wait for the next bytes from the server.
    - ``total``: the whole attempt, connect, headers and body together (``None``: no bound).
      A stream's attempt ends with its first event; the rest is bounded by the two below.
    - ``stream_idle``: the longest wait for a stream's next event; comments and keep-alive
      lines do not count as events (``None``: no bound).
    - ``stream_total``: the whole stream, from the request to its last event (``None``).

    A stream bound that fires raises :class:`~ipfs_accelerate_api.errors.StreamTimeoutError`
    (a :class:`StreamInterrupted` carrying ``partial_text``, and an ``APITimeoutError``).
    """

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT
    total: float | None = None
    stream_idle: float | None = DEFAULT_STREAM_IDLE
    stream_total: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "read"):
            _check_seconds(self, name)
        for name in ("total", "stream_idle", "stream_total"):
            _check_seconds(self, name, optional=True)


def _check_seconds(obj: Any, name: str, *, optional: bool = False, allow_zero: bool = False) -> None:
    """A duration option: a finite number of seconds, > 0 (or >= 0), or None if optional."""
    value = getattr(obj, name)
    where = f"{type(obj).__name__}.{name}"
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{where} must be a number of seconds"
                                 f"{' or None' if optional else ''}, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{where} must be a finite number {'>=' if allow_zero else '>'} 0"
                                 f"{' or None' if optional else ''}, got {value!r}")


def _check_int(obj: Any, name: str, minimum: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{type(obj).__name__}.{name} must be an integer >= {minimum}, got {value!r}")


_Option = TypeVar("_Option")


def coerce_option(value: Any, cls: type[_Option], name: str) -> _Option | None:
    """An option given as an instance of ``cls``, a mapping of its fields, or None.

    ``retry={"max_retries": 5}`` is the same as ``retry=RetryPolicy(max_retries=5)``; an
    unknown field or any other type is a clear error.
    """
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ConfigurationError(f"{name}: unknown {cls.__name__} field(s) {unknown}; "
                                     f"known: {sorted(known)}")
        return cls(**value)
    raise TypeError(f"{name} must be a {cls.__name__} (or a mapping of its fields), "
                    f"got {type(value).__name__}")


def check_header_value(value: str, what: str) -> str:
    """``value`` if it can travel in an HTTP header: printable ASCII only (no CR, LF or other
    control character). The error names ``what``, never the value (it may be a secret)."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string, got {type(value).__name__}")
    if not value.isascii() or not value.isprintable():
        bad = next(c for c in value if not (c.isascii() and c.isprintable()))
        kind = ("a line break" if bad in "\r\n" else
                "a control character" if bad.isascii() else "a non-ASCII character")
        raise ConfigurationError(f"{what} contains {kind}; HTTP headers allow printable "
                                 "ASCII only (check for a stray newline or a pasted quote)")
    return value


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
    #: Where each key came from: ``"argument"``, the environment variable's name, or the
    #: credentials file's path (one per key, in order).
    origins: tuple[str, ...] = field(default=())


def _env_keys(prefix: str, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(key, the variable it came from) for ``prefix``: ``<P>_API_KEYS`` (comma-separated),
    else ``<P>_API_KEY_1..N``, else ``<P>_API_KEY``."""
    many = env.get(f"{prefix}_API_KEYS", "")
    if many.strip():
        return [(k.strip(), f"{prefix}_API_KEYS") for k in many.split(",") if k.strip()]
    numbered = []
    i = 1
    while env.get(f"{prefix}_API_KEY_{i}", "").strip():
        numbered.append((env[f"{prefix}_API_KEY_{i}"].strip(), f"{prefix}_API_KEY_{i}"))
        i += 1
    if numbered:
        return numbered
    single = env.get(f"{prefix}_API_KEY", "").strip()
    return [(single, f"{prefix}_API_KEY")] if single else []


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
    env_prefix: str | Sequence[str],
    *,
    api_key: str | None = None,
    api_keys: Sequence[str] | None = None,
    required: bool = True,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Find the keys (and maybe a base URL) for backend ``name``; see the module docstring.
    ``env_prefix`` may be several prefixes, tried in order (``("GEMINI", "GOOGLE")``)."""
    env = os.environ if env is None else env
    prefixes = (env_prefix,) if isinstance(env_prefix, str) else tuple(env_prefix)
    raw: list[str] = []
    origins: list[str] = []
    base_url = None
    source = "none"
    if api_keys:
        raw, source = [str(k) for k in api_keys], "arguments"
        origins = ["argument"] * len(raw)
    elif api_key:
        raw, source, origins = [str(api_key)], "arguments", ["argument"]
    else:
        for prefix in prefixes:
            pairs = _env_keys(prefix, env)
            if pairs:
                raw, origins = [k for k, _ in pairs], [v for _, v in pairs]
                source = "environment"
                break
        else:
            found = _file_entry(name, env)
            if found:
                raw, base_url, source = found
                origins = [source] * len(raw)
    if not raw and required:
        first = prefixes[0]
        others = "".join(f" or {p}_API_KEY" for p in prefixes[1:])
        raise ConfigurationError(
            f"no API key for {name}: pass api_key=... or api_keys=[...], or set "
            f"{first}_API_KEY{others} (or {first}_API_KEYS=k1,k2 / {first}_API_KEY_1..N), "
            f"or add it to {DEFAULT_CREDENTIALS_FILE}"
        )
    keys = tuple(Secret(k, f"{name}-key-{i + 1}") for i, k in enumerate(raw))
    return Credentials(keys=keys, base_url=base_url, source=source, origins=tuple(origins))
