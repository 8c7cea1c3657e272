"""A :class:`~ipfs_accelerate_api.engine.keys.KeyPool` whose limits and key health live in Redis.

Shared: each key's request and token buckets, its cooldown (a 429's Retry-After), whether it
is disabled (401/403) and its counters (requests, succeeded, errors, tokens, cooldowns,
limiter waits). Per process: requests in flight (a crashed process cannot leak a count) and
the round-robin cursor. While Redis is away the inherited local pool does everything.
Redis key names carry a keyed hash of each API key, never the key.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Sequence

from ..config import Secret
from ..engine.keys import KeyPool, KeyState, RateLimitInfo, reset_or_pace
from ..errors import AuthenticationError
from ._link import Link
from ._scripts import STAT_FIELDS, BucketSpec, Scripts

__all__ = ["SharedKeyPool", "key_id"]

REQUESTS, TOKENS = "rq", "tk"  # bucket fields, by role: processes with other limits still agree


def key_id(secret: Secret | None) -> str:
    """A stable, non-reversible name for an API key in Redis (the same in every process)."""
    if secret is None:
        return "anonymous"
    return hashlib.blake2b(secret.reveal().encode(), digest_size=8,
                           person=b"ipfs-accel-key").hexdigest()


class SharedKeyPool(KeyPool):
    """Made by :meth:`Coordination.key_pool`; the engine uses it as it uses a ``KeyPool``."""

    def __init__(self, link: Link, scripts: Scripts, prefix: str, secrets: Sequence[Secret], *,
                 strategy: str = "round_robin", rpm: float | None = None,
                 tpm: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(secrets, strategy=strategy, rpm=rpm, tpm=tpm, clock=clock)
        self._link, self._scripts = link, scripts
        self._rkey = {id(k): f"{prefix}:key:{key_id(k.secret)}" for k in self._keys}
        first = self._keys[0]
        self._specs = [BucketSpec(field, b.rate, b.capacity) for field, b in
                       ((REQUESTS, first.requests_bucket), (TOKENS, first.tokens_bucket)) if b]

    def __repr__(self) -> str:
        return (f"<SharedKeyPool keys={len(self._keys)} "
                f"{'redis' if self._link.up else 'local'}>")

    def _spec(self, field: str) -> BucketSpec | None:
        return next((s for s in self._specs if s.field == field), None)

    # -- the engine's interface -----------------------------------------------------------
    def acquire(self, est_tokens: float = 0.0) -> tuple[KeyState | None, float]:
        return self._link.run(lambda: self._acquire_shared(est_tokens),
                              lambda: KeyPool.acquire(self, est_tokens))

    def _acquire_shared(self, est_tokens: float) -> tuple[KeyState | None, float]:
        with self._lock:
            n = len(self._keys)
            order = [self._keys[(self._next + i) % n] for i in range(n)]
        order = [k for k in order if k.disabled is None]
        if self.strategy == "least_loaded":
            order.sort(key=lambda k: k.in_flight)
        if not order:
            return KeyPool.acquire(self, est_tokens)  # raises: every key disabled here
        index, wait, disabled = self._scripts.acquire(
            [self._rkey[id(k)] for k in order], self._specs, self._costs(order[0], est_tokens))
        if index:
            k = order[index - 1]
            with self._lock:
                k.in_flight += 1
                k.requests += 1
                k.last_used = self._clock()
                self._next = (self._keys.index(k) + 1) % n
            return k, 0.0
        if disabled == len(order):
            raise AuthenticationError(f"every API key is disabled ({self._reasons()})", status=401)
        return None, wait

    def _reasons(self) -> str:
        return "; ".join(f"{k}: {v['disabled']}" for k, v in self.stats().items())

    def release(self, key: KeyState, *, ok: bool, est_tokens: float = 0.0,
                used_tokens: float | None = None) -> None:
        self._link.run(lambda: self._release_shared(key, ok, est_tokens, used_tokens),
                       lambda: KeyPool.release(self, key, ok=ok, est_tokens=est_tokens,
                                               used_tokens=used_tokens))

    def _release_shared(self, key: KeyState, ok: bool, est_tokens: float,
                        used_tokens: float | None) -> None:
        ops: list[tuple[BucketSpec, str, float, float]] = []
        tokens = self._spec(TOKENS)
        if tokens is not None and used_tokens is not None:  # reconcile the estimate
            est = min(float(est_tokens), tokens.capacity)
            if used_tokens < est:
                ops.append((tokens, "refund", est - used_tokens, 0.0))
            elif used_tokens > est:
                ops.append((tokens, "charge", used_tokens - est, 0.0))  # in full, as locally
        counters = {"succeeded" if ok else "errors": 1}
        if used_tokens:
            counters["tokens"] = int(used_tokens)
        self._scripts.update(self._rkey[id(key)], ops, counters)  # first: a failure falls back whole
        with self._lock:
            key.in_flight -= 1
            key.succeeded += ok
            key.errors += not ok
            key.tokens += int(used_tokens or 0)

    def refund(self, key: KeyState, est_tokens: float) -> None:
        def shared() -> None:
            costs = self._costs(key, est_tokens)
            self._scripts.update(self._rkey[id(key)],
                                 [(s, "refund", c, 0.0) for s, c in zip(self._specs, costs) if c],
                                 {"requests": -1})
            with self._lock:
                key.in_flight -= 1
                key.requests -= 1

        self._link.run(shared, lambda: KeyPool.refund(self, key, est_tokens))

    def cooldown(self, key: KeyState, seconds: float) -> None:
        KeyPool.cooldown(self, key, seconds)  # also locally: it holds if Redis goes away
        self._link.run(lambda: self._scripts.update(self._rkey[id(key)], cooldown=seconds),
                       lambda: None)

    def disable(self, key: KeyState, reason: str) -> None:
        KeyPool.disable(self, key, reason)
        if key.secret is not None:  # a server's message may quote the key
            reason = reason.replace(key.secret.reveal(), "***")
        self._link.run(lambda: self._scripts.update(self._rkey[id(key)], disable=reason or "?"),
                       lambda: None)

    def available(self) -> int:
        def shared() -> int:
            pipe = self._scripts.client.pipeline(transaction=False)
            for k in self._keys:
                pipe.hexists(self._rkey[id(k)], "disabled")
            gone = pipe.execute()
            return sum(1 for k, off in zip(self._keys, gone) if not off and k.disabled is None)

        return self._link.run(shared, lambda: KeyPool.available(self))

    def sync(self, key: KeyState, info: RateLimitInfo) -> None:
        ops = []
        for field, remaining, reset in ((REQUESTS, info.remaining_requests, info.reset_requests),
                                        (TOKENS, info.remaining_tokens, info.reset_tokens)):
            spec = self._spec(field)
            if spec is not None and remaining is not None:
                ops.append((spec, "sync", max(0.0, remaining),
                            max(0.0, reset_or_pace(reset, spec.rate))))
        if ops:
            self._link.run(lambda: self._scripts.update(self._rkey[id(key)], ops),
                           lambda: KeyPool.sync(self, key, info))

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per key label: the shared counters and key health (``"shared": True``), with this
        process's requests in flight; the local pool's numbers while Redis is away."""
        return self._link.run(self._stats_shared, self._stats_local)

    def _stats_local(self) -> dict[str, dict[str, Any]]:
        out = KeyPool.stats(self)
        for snap in out.values():
            snap["shared"] = False
        return out

    def _stats_shared(self) -> dict[str, dict[str, Any]]:
        pipe = self._scripts.client.pipeline(transaction=False)
        now = self._scripts.server_now(pipe)
        for k in self._keys:
            pipe.hmget(self._rkey[id(k)], STAT_FIELDS)
        results = pipe.execute()
        t = now(results)
        out = {}
        for k, values in zip(self._keys, results[-len(self._keys):]):
            row = dict(zip(STAT_FIELDS, values))
            snap = k.snapshot(self._clock())
            for name in ("requests", "succeeded", "errors", "tokens", "cooldowns", "limiter_waits"):
                snap[name] = int(row[name] or 0)
            snap["cooling_down_for"] = max(0.0, float(row["cooldown_until"] or 0) / 1e6 - t)
            snap["disabled"] = None if row["disabled"] is None else row["disabled"].decode()
            snap["shared"] = True
            out[k.label] = snap
        return out
