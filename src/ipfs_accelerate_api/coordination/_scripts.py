"""The Lua scripts that hold shared state in Redis, and their thin Python callers.

Each operation is one script, so each is one round trip and atomic. Time is Redis's own
(``TIME``, microseconds) so machines with skewed clocks agree; tests may pass ``now``
instead (:class:`Scripts` ``server_clock``). Every write refreshes the key's expiry.

State hash of a limited thing (an API key, a named limiter), fields:

* ``<bucket>`` / ``<bucket>@``: a token bucket's level and the time it was refilled to
  (absent: full; the bucket starts full on first use, as the local one does on creation);
* ``cooldown_until`` (µs), ``disabled`` (reason), and counters: ``requests``, ``succeeded``,
  ``errors``, ``tokens``, ``cooldowns``, ``limiter_waits``.

The bucket arithmetic is ``core/_pure/ratelimit.py``'s, line for line (refill only forward
in time, ``GRANT_EPSILON``, all-or-nothing across a request's buckets, ``sync`` only lowers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..core._pure.ratelimit import GRANT_EPSILON

__all__ = ["BucketSpec", "Scripts"]

_PRELUDE = """
local EPS = %r
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fmt(x) return string.format('%%.17g', x) end
-- a bucket's level at `now` from its stored level and time (refilled forward only; absent:
-- full), and the time it is refilled to
local function refill(tok, last, rate, cap, now)
  tok, last = tonumber(tok), tonumber(last)
  if tok == nil then return cap, now end
  if now > last then
    tok = math.min(cap, tok + (now - last) / 1e6 * rate)
    last = now
  end
  return tok, last
end
-- ARGV from `o`: n buckets of `width` values each, the first three (field, rate, capacity);
-- returns the HMGET field list for them (level, time) after `extra`
local function bucket_fields(o, n, width, extra)
  local fields = extra
  for b = 1, n do
    local name = ARGV[o + (b - 1) * width + 1]
    fields[#fields + 1] = name
    fields[#fields + 1] = name .. '@'
  end
  return fields
end
""" % GRANT_EPSILON

#: KEYS: the candidate state hashes, in the order to try. ARGV: now, ttl_ms, reserve (seconds;
#: -1 none), n buckets, then per bucket (field, rate/s, capacity, cost). Takes every cost from
#: the first candidate that is neither disabled nor cooling down and can pay them all, or, when
#: its buckets would refill within ``reserve`` seconds, takes them anyway as a reservation (the
#: levels go below zero, so later callers queue behind it). Returns {index (1-based, 0 for
#: none), wait in seconds (the reservation's, or the shortest), candidates disabled}.
ACQUIRE = _PRELUDE + """
local now, ttl, reserve, nb = clock(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = bucket_fields(4, nb, 4, {'disabled', 'cooldown_until'})
local best, disabled = nil, 0
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, unpack(fields))
  if v[1] then
    disabled = disabled + 1
  else
    local wait = 0
    local cd = tonumber(v[2]) or 0
    if cd > now then
      wait = (cd - now) / 1e6
    else
      local writes = {}
      for b = 1, nb do
        local o = 4 + (b - 1) * 4
        local rate, cap, cost = tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4])
        local tok, last = refill(v[2 * b + 1], v[2 * b + 2], rate, cap, now)
        if tok < cost - EPS then wait = math.max(wait, (cost - tok) / rate) end
        writes[#writes + 1] = ARGV[o + 1]; writes[#writes + 1] = fmt(tok - cost)
        writes[#writes + 1] = ARGV[o + 1] .. '@'; writes[#writes + 1] = fmt(last)
      end
      if wait == 0 or wait <= reserve then
        if nb > 0 then redis.call('HSET', key, unpack(writes)) end
        redis.call('HINCRBY', key, 'requests', 1)
        redis.call('PEXPIRE', key, ttl)
        return {i, fmt(wait), disabled}
      end
      redis.call('HINCRBY', key, 'limiter_waits', 1)
      redis.call('PEXPIRE', key, ttl)
    end
    if best == nil or wait < best then best = wait end
  end
end
return {0, fmt(best or -1), disabled}
"""

#: KEYS[1]: a state hash. ARGV: now, ttl_ms, cooldown seconds ('' none), disabled reason ('' none),
#: n buckets, per bucket (field, rate/s, capacity, op, a, b), then (counter, increment) pairs.
#: Ops: 'refund' a; 'take' a if it is there; 'charge' a even below zero (usage above the
#: estimate); 'sync' to a remaining with the window resetting
#: in b seconds (only ever lowers); 'peek'. Returns each listed bucket's level after its op.
UPDATE = _PRELUDE + """
local now, ttl = clock(ARGV[1]), tonumber(ARGV[2])
local key = KEYS[1]
local written = false
if ARGV[3] ~= '' then
  local cd = tonumber(redis.call('HGET', key, 'cooldown_until') or '0')
  redis.call('HSET', key, 'cooldown_until', fmt(math.max(cd, now + tonumber(ARGV[3]) * 1e6)))
  redis.call('HINCRBY', key, 'cooldowns', 1)
  written = true
end
if ARGV[4] ~= '' then
  redis.call('HSET', key, 'disabled', ARGV[4])
  written = true
end
local nb = tonumber(ARGV[5])
local v = {}
if nb > 0 then v = redis.call('HMGET', key, unpack(bucket_fields(5, nb, 6, {}))) end
local out, writes = {}, {}
for b = 1, nb do
  local o = 5 + (b - 1) * 6
  local name, rate, cap = ARGV[o + 1], tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  local op, a, c = ARGV[o + 4], tonumber(ARGV[o + 5]), tonumber(ARGV[o + 6])
  local tok, last = refill(v[2 * b - 1], v[2 * b], rate, cap, now)
  local new = tok
  if op == 'refund' then
    new = math.min(cap, tok + a)
  elseif op == 'take' then
    if tok >= a - EPS then new = tok - a end
  elseif op == 'charge' then
    new = tok - a
  elseif op == 'sync' then
    local target = a
    if a <= 0 then target = 1 - c * rate end
    if target < tok then new = target end
  end
  if op ~= 'peek' then
    writes[#writes + 1] = name; writes[#writes + 1] = fmt(new)
    writes[#writes + 1] = name .. '@'; writes[#writes + 1] = fmt(last)
  end
  out[b] = fmt(new)
end
if #writes > 0 then
  redis.call('HSET', key, unpack(writes))
  written = true
end
for i = 6 + nb * 6, #ARGV, 2 do
  redis.call('HINCRBY', key, ARGV[i], tonumber(ARGV[i + 1]))
  written = true
end
if written then redis.call('PEXPIRE', key, ttl) end
return out
"""

#: KEYS[1]: the breaker hash. ARGV: op, now, ttl_ms, failure_threshold, recovery (µs),
#: half_open_max_calls, success_threshold, probe lease (µs). ``core/_pure/breaker.py``'s state
#: machine, plus one thing a shared breaker needs: a probe slot taken longer than the lease
#: ago is given up (its process may have died), so the breaker cannot stay half-open forever.
#: Returns {old state, new state, op result (1/0), retry_after, trips, failures, successes,
#: rejected, consecutive failures}.
BREAKER = """
local CLOSED, OPEN, HALF = 0, 1, 2
local key, op = KEYS[1], ARGV[1]
local now
if ARGV[2] ~= '' then now = tonumber(ARGV[2]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000000 + tonumber(t[2]) end
local ttl, threshold, recovery = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local half_max, succ_needed, lease = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local names = {'state', 'opened_at', 'cf', 'probes', 'probe_ok', 'probe_at', 'trips',
               'failures', 'successes', 'rejected'}
local v = redis.call('HMGET', key, unpack(names))
local s = {}
for i, n in ipairs(names) do s[n] = tonumber(v[i]) or 0 end
local old, dirty = s.state, false
local function move(new)
  s.state = new
  if new == OPEN then s.opened_at = now; s.trips = s.trips + 1 end
  s.probes, s.probe_ok, s.cf = 0, 0, 0
  dirty = true
end
local function tick()
  if s.state == OPEN and now - s.opened_at >= recovery then move(HALF) end
  if s.state == HALF and s.probes > 0 and now - s.probe_at >= lease then
    s.probes = 0; dirty = true
  end
end
local result = 0
if op == 'allow' then
  tick()
  if s.state == CLOSED then result = 1
  elseif s.state == HALF and s.probes < half_max then
    s.probes = s.probes + 1; s.probe_at = now; result = 1; dirty = true
  else s.rejected = s.rejected + 1; dirty = true end
elseif op == 'success' then
  s.successes = s.successes + 1; dirty = true
  if s.state == CLOSED then s.cf = 0
  elseif s.state == HALF then
    if s.probes > 0 then s.probes = s.probes - 1 end
    s.probe_ok = s.probe_ok + 1
    if s.probe_ok >= succ_needed then move(CLOSED) end
  end
elseif op == 'failure' then
  s.failures = s.failures + 1; dirty = true
  if s.state == CLOSED then
    s.cf = s.cf + 1
    if s.cf >= threshold then move(OPEN) end
  elseif s.state == HALF then move(OPEN) end
elseif op == 'reset' then
  if s.state ~= CLOSED then move(CLOSED) end
  s.cf = 0; dirty = true
else
  tick()
end
local wait = 0
if s.state == OPEN then wait = math.max(0, s.opened_at + recovery - now) / 1e6
elseif s.state == HALF and s.probes >= half_max then wait = recovery / 1e6 end
if dirty then
  local flat = {}
  for _, n in ipairs(names) do flat[#flat + 1] = n; flat[#flat + 1] = string.format('%.17g', s[n]) end
  redis.call('HSET', key, unpack(flat))
  redis.call('PEXPIRE', key, ttl)
end
return {old, s.state, result, string.format('%.17g', wait), s.trips, s.failures, s.successes,
        s.rejected, s.cf}
"""

#: Longest reservation asked for (seconds): "as long as it takes", as a finite number.
MAX_RESERVE = 1e12

#: The counters and state fields that ``stats()`` reads back from a key's hash.
STAT_FIELDS = ("requests", "succeeded", "errors", "tokens", "cooldowns", "limiter_waits",
               "cooldown_until", "disabled")


@dataclass(frozen=True)
class BucketSpec:
    """One shared bucket: its field in the state hash, tokens per second, most held."""

    field: str
    rate: float
    capacity: float


@dataclass(frozen=True)
class BreakerParams:
    failure_threshold: int
    recovery_us: int
    half_open_max_calls: int
    success_threshold: int
    lease_us: int


class Scripts:
    """The scripts registered on one client (EVALSHA, reloaded after a Redis restart)."""

    def __init__(self, client: Any, *, ttl_ms: int,
                 server_clock: Callable[[], float] | None = None) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        self._server_clock = server_clock
        self._acquire = client.register_script(ACQUIRE)
        self._update = client.register_script(UPDATE)
        self._breaker = client.register_script(BREAKER)

    def now_arg(self) -> str:
        """'' (Redis's TIME) or the injected server clock, in microseconds."""
        return "" if self._server_clock is None else str(round(self._server_clock() * 1e6))

    def server_now(self, pipe: Any) -> Callable[[list[Any]], float]:
        """Queue a read of the server's time on ``pipe``; the returned function picks it (in
        seconds) out of the pipeline's results."""
        if self._server_clock is not None:
            now = self._server_clock()
            return lambda _results: now
        pipe.time()
        return lambda results: results[0][0] + results[0][1] / 1e6

    def acquire(self, keys: Sequence[str], specs: Sequence[BucketSpec], costs: Sequence[float],
                *, reserve: float | None = None) -> tuple[int, float, int]:
        """(index of the key granted, 1-based, or 0; wait; keys disabled). With ``reserve``, a
        grant may come with a wait: it is reserved, to be used after that many seconds."""
        reserve_arg = -1.0 if reserve is None else min(float(reserve), MAX_RESERVE)
        args: list[Any] = [self.now_arg(), self.ttl_ms, repr(reserve_arg), len(specs)]
        for spec, cost in zip(specs, costs):
            args += [spec.field, repr(spec.rate), repr(spec.capacity), repr(float(cost))]
        index, wait, disabled = self._acquire(keys=list(keys), args=args)
        return int(index), float(wait), int(disabled)

    def update(self, key: str, ops: Sequence[tuple[BucketSpec, str, float, float]] = (),
               counters: Mapping[str, int] | None = None, *, cooldown: float | None = None,
               disable: str | None = None) -> list[float]:
        """Apply bucket ops, counter increments, a cooldown and/or a disable to one key."""
        args: list[Any] = [self.now_arg(), self.ttl_ms, "" if cooldown is None else repr(cooldown),
                           disable or "", len(ops)]
        for spec, op, a, b in ops:
            args += [spec.field, repr(spec.rate), repr(spec.capacity), op, repr(a), repr(b)]
        for name, incr in (counters or {}).items():
            args += [name, int(incr)]
        return [float(x) for x in self._update(keys=[key], args=args)]

    def breaker(self, key: str, op: str, params: BreakerParams) -> list[Any]:
        args = [op, self.now_arg(), self.ttl_ms, params.failure_threshold, params.recovery_us,
                params.half_open_max_calls, params.success_threshold, params.lease_us]
        out = self._breaker(keys=[key], args=args)
        out[3] = float(out[3])
        return [int(x) if i != 3 else x for i, x in enumerate(out)]
