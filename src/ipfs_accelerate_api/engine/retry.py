"""Retry decisions and the server's timing hints (one place for every backend)."""

from __future__ import annotations

import math
import re
import time
from email.utils import parsedate_to_datetime
from typing import Mapping

from ..errors import (
    AcceleratorError,
    APIConnectionError,
    APIStatusError,
    ResponseFormatError,
    StreamInterrupted,
)

__all__ = ["RETRYABLE_STATUSES", "is_retryable", "parse_duration", "server_delay"]

#: Statuses worth another attempt; 400/401/403/404/422 never are.
RETRYABLE_STATUSES = frozenset({408, 409, 429})

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float | None:
    """A Go-style duration (``6m0s``, ``1.5s``, ``12ms``, ``2m59.56s``) or plain seconds;
    None for anything else, including negative and non-finite numbers (``-1``, ``inf``,
    ``nan``: a reset that never comes would stall a key for good)."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        value = sum(float(n) * _UNITS[u] for n, u in parts)
    return value if 0 <= value < math.inf else None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def server_delay(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``retry-after`` (seconds
    or an HTTP date), then the longest exhausted ``x-ratelimit-reset-*``. None if no hint."""
    h = _lower(headers)
    ms = h.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = h.get("retry-after")
    if ra:
        try:
            return max(0.0, float(ra))
        except ValueError:
            try:
                when = parsedate_to_datetime(ra).timestamp()
                return max(0.0, when - (time.time() if now is None else now))
            except (TypeError, ValueError, IndexError):
                pass
    waits = []
    for kind in ("requests", "tokens"):
        remaining = h.get(f"x-ratelimit-remaining-{kind}")
        reset = h.get(f"x-ratelimit-reset-{kind}")
        if remaining is not None and reset and remaining.strip() in ("0", "0.0"):
            d = parse_duration(reset)
            if d is not None:
                waits.append(d)
    return max(waits) if waits else None


def is_retryable(exc: BaseException) -> bool:
    """Connection errors, timeouts, 408/409/429/5xx and malformed answers; the server's
    ``x-should-retry`` header overrides the status-based decision."""
    if isinstance(exc, StreamInterrupted):
        return False
    if isinstance(exc, APIStatusError):
        override = _lower(exc.headers).get("x-should-retry")
        if override in ("true", "false"):
            return override == "true"
        status = exc.status or 0
        return status in RETRYABLE_STATUSES or status >= 500
    return isinstance(exc, (APIConnectionError, ResponseFormatError))


def counts_against_breaker(exc: AcceleratorError) -> bool:
    """Connection errors, timeouts, 408 and 5xx are the endpoint failing; 4xx are not."""
    if isinstance(exc, APIStatusError):
        return (exc.status or 0) >= 500 or exc.status == 408
    return isinstance(exc, APIConnectionError)
