"""API-key pools: choice (round robin or least loaded), per-key limits, cooldown, disabling.

State lives behind :class:`KeyPool`'s small interface (acquire / release / cooldown / disable /
sync / stats) so a shared implementation (e.g. Redis) can replace it later.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..config import Secret
from ..core import RateLimiter, TokenBucket
from ..errors import AuthenticationError

__all__ = ["KeyPool", "KeyState", "RateLimitInfo", "STRATEGIES"]

STRATEGIES = ("round_robin", "least_loaded")


@dataclass
class RateLimitInfo:
    """What a service's rate-limit headers said (None = not given)."""

    remaining_requests: float | None = None
    reset_requests: float | None = None
    remaining_tokens: float | None = None
    reset_tokens: float | None = None


@dataclass
class KeyState:
    secret: Secret | None
    label: str
    requests_bucket: TokenBucket | None = None
    tokens_bucket: TokenBucket | None = None
    limiter: RateLimiter | None = None
    in_flight: int = 0
    requests: int = 0
    succeeded: int = 0
    errors: int = 0
    tokens: int = 0
    last_used: float | None = None
    cooldown_until: float = 0.0
    cooldowns: int = 0
    disabled: str | None = None
    limiter_waits: int = field(default=0)

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "errors": self.errors,
            "tokens": self.tokens,
            "in_flight": self.in_flight,
            "last_used": self.last_used,
            "cooling_down_for": max(0.0, self.cooldown_until - now),
            "cooldowns": self.cooldowns,
            "disabled": self.disabled,
            "limiter_waits": self.limiter_waits,
        }


def reset_or_pace(reset: float | None, rate: float) -> float:
    """The server's reset time, or one refill period of a bucket of ``rate`` when it gave
    none (so an exhausted window without a reset is empty, not granting at once)."""
    return reset if reset is not None else 1.0 / rate


class KeyPool:
    """Thread-safe pool of keys for one backend.

    Args:
        secrets: the keys (an empty sequence: one anonymous slot, for servers that need none).
        strategy: ``"round_robin"`` or ``"least_loaded"`` (fewest requests in flight).
        rpm, tpm: client-side limits *per key*, as token buckets (one second's burst).
        clock: for cooldowns, ``last_used`` and the buckets' refill.
    """

    def __init__(self, secrets: Sequence[Secret], *, strategy: str = "round_robin",
                 rpm: float | None = None, tpm: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"key_strategy must be one of {STRATEGIES}; got {strategy!r}")
        self.strategy = strategy
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0
        self._keys: list[KeyState] = []
        # The buckets read the same clock (None: the compiled twin's own fast monotonic clock).
        bucket_clock = None if clock is time.monotonic else clock
        for secret in secrets or [None]:  # type: ignore[attr-defined]
            label = secret.label if secret is not None else "anonymous"
            st = KeyState(secret, label)
            buckets = []
            if rpm:
                st.requests_bucket = TokenBucket(rpm / 60.0, max(1.0, rpm / 60.0),
                                               clock=bucket_clock)
                buckets.append(st.requests_bucket)
            if tpm:
                st.tokens_bucket = TokenBucket(tpm / 60.0, max(1.0, tpm / 60.0),
                                             clock=bucket_clock)
                buckets.append(st.tokens_bucket)
            if buckets:
                st.limiter = RateLimiter(buckets)
            self._keys.append(st)

    def __len__(self) -> int:
        return len(self._keys)

    def _costs(self, st: KeyState, tokens: float) -> list[float]:
        costs = []
        if st.requests_bucket is not None:
            costs.append(1.0)
        if st.tokens_bucket is not None:
            costs.append(min(float(tokens), st.tokens_bucket.capacity))
        return costs

    def acquire(self, est_tokens: float = 0.0) -> tuple[KeyState | None, float]:
        """A key to use now and 0, or None and the seconds until one could be had.
        Raises :class:`AuthenticationError` when every key has been disabled."""
        now = self._clock()
        with self._lock:
            if len(self._keys) == 1:  # the common case: one key, no choice to make
                k = self._keys[0]
                if k.disabled is None and k.cooldown_until <= now:
                    wait = 0.0 if k.limiter is None else k.limiter.try_acquire(self._costs(k, est_tokens))
                    if wait <= 0:
                        k.in_flight += 1
                        k.requests += 1
                        k.last_used = now
                        return k, 0.0
                    k.limiter_waits += 1
                    return None, wait
            alive = [k for k in self._keys if k.disabled is None]
            if not alive:
                reasons = "; ".join(f"{k.label}: {k.disabled}" for k in self._keys)
                raise AuthenticationError(f"every API key is disabled ({reasons})", status=401)
            n = len(self._keys)
            order = [self._keys[(self._next + i) % n] for i in range(n)]
            order = [k for k in order if k.disabled is None]
            if self.strategy == "least_loaded":
                order.sort(key=lambda k: k.in_flight)
            best_wait = float("inf")
            for k in order:
                if k.cooldown_until > now:
                    best_wait = min(best_wait, k.cooldown_until - now)
                    continue
                if k.limiter is not None:
                    wait = k.limiter.try_acquire(self._costs(k, est_tokens))
                    if wait > 0:
                        k.limiter_waits += 1
                        best_wait = min(best_wait, wait)
                        continue
                k.in_flight += 1
                k.requests += 1
                k.last_used = now
                self._next = (self._keys.index(k) + 1) % n
                return k, 0.0
            return None, best_wait

    def release(self, key: KeyState, *, ok: bool, est_tokens: float = 0.0,
                used_tokens: float | None = None) -> None:
        """The request on ``key`` finished; reconcile its token estimate with what was used."""
        with self._lock:
            key.in_flight -= 1
            if ok:
                key.succeeded += 1
            else:
                key.errors += 1
            if used_tokens is not None:
                key.tokens += int(used_tokens)
        if key.tokens_bucket is not None and used_tokens is not None:
            est = min(float(est_tokens), key.tokens_bucket.capacity)
            if used_tokens < est:
                key.tokens_bucket.refund(est - used_tokens)
            elif used_tokens > est:  # the server counted it all, even beyond what was left
                key.tokens_bucket.charge(used_tokens - est)

    def refund(self, key: KeyState, est_tokens: float) -> None:
        """Undo an acquire whose request was never sent."""
        with self._lock:
            key.in_flight -= 1
            key.requests -= 1
        if key.limiter is not None:
            key.limiter.refund(self._costs(key, est_tokens))

    def cooldown(self, key: KeyState, seconds: float) -> None:
        with self._lock:
            key.cooldown_until = max(key.cooldown_until, self._clock() + seconds)
            key.cooldowns += 1

    def disable(self, key: KeyState, reason: str) -> None:
        with self._lock:
            key.disabled = reason

    def ready_in(self, est_tokens: float = 0.0) -> float:
        """Seconds until :meth:`acquire` could give a key (0: now; ``inf``: every key is
        disabled), taking nothing."""
        now = self._clock()
        best = float("inf")
        with self._lock:
            for k in self._keys:
                if k.disabled is not None:
                    continue
                wait = max(0.0, k.cooldown_until - now)
                for bucket, cost in ((k.requests_bucket, 1.0), (k.tokens_bucket, est_tokens)):
                    if bucket is not None and cost > 0:
                        short = min(cost, bucket.capacity) - bucket.available()
                        if short > 0:
                            wait = max(wait, short / bucket.rate)
                best = min(best, wait)
                if best == 0.0:
                    break
        return best

    def headroom(self) -> float:
        """The share of its limits the best key has left now, 0..1 (1: no limits, or full),
        as the buckets hold it: our own count, lowered by what the service's headers said.
        0 when every key is cooling down or disabled."""
        now = self._clock()
        best = 0.0
        with self._lock:
            for k in self._keys:
                if k.disabled is not None or k.cooldown_until > now:
                    continue
                share = 1.0
                for bucket in (k.requests_bucket, k.tokens_bucket):
                    if bucket is not None:
                        share = min(share, max(0.0, bucket.available()) / bucket.capacity)
                best = max(best, share)
        return best

    def available(self) -> int:
        with self._lock:
            return sum(1 for k in self._keys if k.disabled is None)

    def sync(self, key: KeyState, info: RateLimitInfo) -> None:
        """Align the key's buckets with the server's rate-limit headers. An exhausted window
        without a reset time gets its next unit at the bucket's own pace (one refill period)."""
        for bucket, remaining, reset in ((key.requests_bucket, info.remaining_requests,
                                          info.reset_requests),
                                         (key.tokens_bucket, info.remaining_tokens,
                                          info.reset_tokens)):
            if bucket is not None and remaining is not None:
                bucket.sync(remaining, reset_or_pace(reset, bucket.rate))

    def stats(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        with self._lock:
            return {k.label: k.snapshot(now) for k in self._keys}
