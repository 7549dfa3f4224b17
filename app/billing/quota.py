"""Live token balances in Redis: the fast ledger. Key names are built here only.

Per key (`{p}` is BILLING_REDIS_PREFIX, `{id}` the key's row id):

  {p}:quota:{id}   string  tokens_quota as SQL has it (a cache; TTL LIVE_STATE_TTL)
  {p}:acct:{id}    hash    synced   tokens_used as last read from SQL (only ever a lower bound of it)
                           pending  billed tokens settled here whose usage record is not in SQL yet
                           held     billed tokens reserved by requests still running
                           qver     bumped by every quota change; a quota read from SQL is cached
                                    only if qver did not move meanwhile (no stale write after a top-up)
                           seen     last admission (ms), so reconcile can forget idle keys
  {p}:holds:{id}   zset    "request_id|amount" scored by the hold's deadline; doubles as the set of
                           requests in flight for the concurrency cap
  {p}:rl:{id}      zset    the rate-limit window (ratelimit.py)
Shared:
  {p}:outbox       hash    request_id -> usage record (JSON), until the worker has it in SQL
  {p}:done:{rid}   string  "settled" marker, so a request is billed once whatever calls settle twice
  {p}:live         set     key ids with live state, for reconcile

used = synced + pending, and a request is admitted against quota - used - held. Settling moves the
hold into pending and puts the record in the outbox in the same script; the worker writes outbox
records to SQL and then, in one script, drops them from the outbox and from pending and raises
synced to the tokens_used its transaction saw (reconcile.py). Because synced only ever moves up to
values SQL had, a state rebuilt from SQL after Redis lost its data, or restored from an old
snapshot, can only be missing usage that the next acknowledgement or reconcile adds back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.billing import ratelimit
from app.billing.errors import Stale
from app.billing.pricing import MAX_COMPLETION_UNITS, Admission
from app.billing.scripts import INT, NOW, Script
from app.models.multiplier import UNIT

ADMITTED, RATE_LIMITED, TOO_MANY_RUNNING, NO_QUOTA, NOT_LOADED, STALE = 0, 1, 2, 3, 4, 5
DONE_MARKER_SECONDS = 3600
_LOAD_ATTEMPTS = 3

# Store what load() read from SQL: the quota only if no change was made since it was read (qver),
# tokens_used only if it raises synced (a lower bound of SQL's tokens_used).
_LOAD_FN = """
local function load(acct, quota_key, quota, qver, used, cache_seconds)
  if quota ~= '' and (redis.call('HGET', acct, 'qver') or '0') == qver then
    if tonumber(cache_seconds) > 0 then
      redis.call('SET', quota_key, quota, 'EX', cache_seconds)
    else
      redis.call('SET', quota_key, quota)
    end
  end
  if used ~= '' then
    local synced = redis.call('HGET', acct, 'synced')
    if not synced or tonumber(used) > tonumber(synced) then redis.call('HSET', acct, 'synced', used) end
  end
end
"""

# pricing.admit's integer division in Lua, whose numbers are doubles: the float quotient, then
# corrected by exact products (every operand and product here stays below 2**53, see
# pricing.MAX_COMPLETION_UNITS), so a rounding of the division can never move a cap or a hold.
_FIXED_POINT = f"""
local UNIT, MAX_UNITS = {UNIT}, {MAX_COMPLETION_UNITS}
local function floordiv(a, b)
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end
local function ceildiv(a, b) return -floordiv(-a, b) end
"""

# KEYS: window, acct, quota, holds, live set, then the guard's keys, then the keys to read
# ARGV: 1 request id, 2 rpm, 3 window ms, 4 max concurrent (0 = no cap), 5 prompt cost,
#       6 completion multiplier (1/UNIT), 7 completion tokens wanted, 8 hold ms, 9 key id,
#       10 quota read from SQL ('' = none), 11 qver it was read under, 12 used read from SQL ('' = none),
#       13 quota cache seconds (0 = no expiry), 14 completion tokens to hold now (0 = all of the cap),
#       15 the guard's size, 16 how many keys to read, then the value each guard key must hold ('' = none)
# The guard comes first: when a value moved, the script returns {STALE} before it changes anything.
# Every other reply ends with the values of the keys to read ('' = none).
_ADMIT = Script(
    """
local guarded, reads = tonumber(ARGV[15]), tonumber(ARGV[16])
for i = 1, guarded do
  if (redis.call('GET', KEYS[5 + i]) or '') ~= ARGV[16 + i] then return {5} end
end
local function admit()
"""
    + NOW
    + INT
    + _FIXED_POINT
    + _LOAD_FN
    + """
local rid, rpm, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
"""
    + ratelimit.WINDOW_CHECK
    + """
local acct, holds = KEYS[2], KEYS[4]
local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
if #expired > 0 then
  local freed = 0
  for _, member in ipairs(expired) do freed = freed + tonumber(string.match(member, '|(%d+)$')) end
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  redis.call('HINCRBY', acct, 'held', int(-freed))
end
local max_running = tonumber(ARGV[4])
if max_running > 0 then
  local running = redis.call('ZCARD', holds)
  if running >= max_running then return {2, running, count, 0, now, now} end
end
load(acct, KEYS[3], ARGV[10], ARGV[11], ARGV[12], ARGV[13])
local quota = redis.call('GET', KEYS[3])
local state = redis.call('HMGET', acct, 'synced', 'pending', 'held', 'qver')
if not quota or not state[1] then return {4, state[4] or '0', count, 0, 0, now} end
"""
    + ratelimit.WINDOW_RECORD
    + """
local used = tonumber(state[1]) + tonumber(state[2] or '0')
local held = tonumber(state[3] or '0')
local prompt_cost, multiplier = tonumber(ARGV[5]), tonumber(ARGV[6])
local wanted = math.min(tonumber(ARGV[7]), floordiv(MAX_UNITS, multiplier))
local room = tonumber(quota) - used - held - prompt_cost
local cap = 0
if room > 0 then
  if room >= ceildiv(wanted * multiplier, UNIT) then cap = wanted else cap = floordiv(room * UNIT, multiplier) end
end
if cap < 1 then
  return {3, int(used), int(held), redis.call('ZCARD', holds), quota, count, blocking, now, now}
end
local upfront = cap
if tonumber(ARGV[14]) > 0 and tonumber(ARGV[14]) < cap then upfront = tonumber(ARGV[14]) end
local amount = prompt_cost + ceildiv(upfront * multiplier, UNIT)
redis.call('ZADD', holds, now + tonumber(ARGV[8]), rid .. '|' .. int(amount))
redis.call('HINCRBY', acct, 'held', int(amount))
redis.call('HSET', acct, 'seen', now)
redis.call('SADD', KEYS[5], ARGV[9])
return {0, int(cap), int(amount), count, blocking, now, now}
end
local reply = admit()
for i = 1, reads do reply[#reply + 1] = redis.call('GET', KEYS[5 + guarded + i]) or '' end
return reply
"""
)

# KEYS: done marker, holds, acct, outbox
# ARGV: 1 request id, 2 hold member, 3 held amount, 4 billed, 5 record JSON ('' = none), 6 marker seconds
_SETTLE = Script(
    INT
    + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[6]) then return -1 end
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then redis.call('HINCRBY', KEYS[3], 'held', int(-tonumber(ARGV[3]))) end
if ARGV[5] == '' then return 0 end
redis.call('HINCRBY', KEYS[3], 'pending', ARGV[4])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
return redis.call('HLEN', KEYS[4])
"""
)

# KEYS: acct, quota, holds
# ARGV: 1 request id, 2 amount held now, 3 billed tokens wanted on top, 4 fewest worth taking,
#       5 hold ms, 6 quota read from SQL ('' = none), 7 qver it was read under, 8 used read from SQL,
#       9 quota cache seconds
# Returns the billed tokens added to the hold (0: the balance cannot cover the fewest), or -1
# when the live state must be loaded from SQL first. A hold that expired meanwhile is taken again.
_EXTEND = Script(
    NOW
    + INT
    + _LOAD_FN
    + """
local acct, holds = KEYS[1], KEYS[3]
load(acct, KEYS[2], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
local quota = redis.call('GET', KEYS[2])
local state = redis.call('HMGET', acct, 'synced', 'pending', 'held', 'qver')
if not quota or not state[1] then return {-1, state[4] or '0'} end
local old = tonumber(ARGV[2])
local member = ARGV[1] .. '|' .. ARGV[2]
local present = redis.call('ZREM', holds, member)
local free = tonumber(quota) - tonumber(state[1]) - tonumber(state[2] or '0') - tonumber(state[3] or '0')
if present == 0 then free = free - old end
local grant = tonumber(ARGV[3])
if free < grant then grant = free end
if grant < tonumber(ARGV[4]) then
  if present == 1 then redis.call('ZADD', holds, now + tonumber(ARGV[5]), member) end
  return {0, 0}
end
redis.call('ZADD', holds, now + tonumber(ARGV[5]), ARGV[1] .. '|' .. int(old + grant))
if present == 1 then
  redis.call('HINCRBY', acct, 'held', int(grant))
else
  redis.call('HINCRBY', acct, 'held', int(old + grant))
end
return {int(grant), 0}
"""
)

# A quota change in SQL: drop the cached quota and move qver, so that a reader that fetched the
# old value from SQL before the change cannot cache it afterwards.
_FORGET_QUOTA = Script(
    """
redis.call('HINCRBY', KEYS[1], 'qver', 1)
return redis.call('DEL', KEYS[2])
"""
)


@dataclass(frozen=True, slots=True)
class Ask:
    """One request's claim: rate and concurrency limits, and the billed tokens it may need."""

    prompt_cost: int  # billed tokens for the prompt bound (pricing.prompt_cost)
    completion_multiplier: int  # in 1/UNIT, times n for a non-stream request
    wanted: int  # completion tokens the client asked for, or the default allowance
    rpm: int  # 0 or less: no rate limit
    max_running: int  # 0: no concurrency cap
    hold_ms: int  # a hold left by a process that died is freed after this
    upfront: int = 0  # completion tokens to hold at once (0: the whole cap); extend() adds the rest


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # ADMITTED, RATE_LIMITED, TOO_MANY_RUNNING or NO_QUOTA
    window: ratelimit.RateWindow
    admission: Admission | None = None
    used: int = 0  # NO_QUOTA: billed tokens settled
    held: int = 0  # NO_QUOTA: billed tokens held by requests still running
    quota: int = 0  # NO_QUOTA: the key's quota
    running: int = 0  # NO_QUOTA, TOO_MANY_RUNNING: requests in flight
    reads: tuple[bytes, ...] = ()  # the values of the keys admit() was asked to read ('' = none)


def quota_key(prefix: str, key_id: int) -> str:
    return f"{prefix}:quota:{key_id}"


def acct_key(prefix: str, key_id: int) -> str:
    return f"{prefix}:acct:{key_id}"


def holds_key(prefix: str, key_id: int) -> str:
    return f"{prefix}:holds:{key_id}"


def outbox_key(prefix: str) -> str:
    return f"{prefix}:outbox"


def dead_letter_key(prefix: str) -> str:
    return f"{prefix}:outbox:dead"


def live_set_key(prefix: str) -> str:
    return f"{prefix}:live"


def done_key(prefix: str, request_id: str) -> str:
    return f"{prefix}:done:{request_id}"


def hold_member(request_id: str, amount: int) -> str:
    return f"{request_id}|{amount}"


def live_ttl(config: Mapping[str, Any]) -> int:
    """How long a process may trust a cached quota. Embedded mode (no REDIS_URL) has one
    in-process Redis per process, so the CLI's top-ups reach the server only through SQL: a few
    seconds. With a shared Redis every change invalidates the cache, so a day is only a backstop."""
    configured = int(config.get("LIVE_STATE_TTL") or 0)
    if configured > 0:
        return configured
    return 86_400 if config.get("REDIS_URL") else 3


def key_cache_seconds(config: Mapping[str, Any]) -> int:
    """How long a cached KeyInfo lives: KEY_CACHE_SECONDS, and no longer than a cached quota, so
    that in embedded mode a revoke made by the CLI (another process) takes effect within seconds."""
    return max(1, int(min(config.get("KEY_CACHE_SECONDS") or 30, live_ttl(config))))


def credit(redis: Any, prefix: str, key_id: int, tokens: int) -> None:
    """The key's quota changed in SQL by `tokens` (either sign; already committed).

    Every process sees the new quota on its next request: the cached value is dropped and read
    again from SQL, which is exact however many changes race with each other and with readers."""
    forget_quota(redis, prefix, key_id)


def forget_quota(redis: Any, prefix: str, key_id: int) -> None:
    _FORGET_QUOTA(redis, [acct_key(prefix, key_id), quota_key(prefix, key_id)], [])


def admit(
    redis: Any,
    prefix: str,
    key_id: int,
    request_id: str,
    ask: Ask,
    load: Callable[[], tuple[int, int]],
    cache_seconds: int,
    guard: Sequence[tuple[str, bytes]] = (),
    reads: Sequence[str] = (),
) -> Decision:
    """Rate limit, concurrency cap and reservation in one atomic script: one round trip.

    When the key has no live state (first use, or Redis lost its data) `load()` returns
    (tokens_quota, tokens_used) from SQL and the script runs again with them. `guard` is pairs of
    (Redis key, the value the caller decided on, b"" for none): when one moved, raises Stale
    with nothing changed. The values of the `reads` keys come back in Decision.reads."""
    keys = [
        ratelimit.window_key(prefix, key_id),
        acct_key(prefix, key_id),
        quota_key(prefix, key_id),
        holds_key(prefix, key_id),
        live_set_key(prefix),
        *(name for name, _ in guard),
        *reads,
    ]
    args: list[Any] = [
        request_id,
        ask.rpm,
        ratelimit.WINDOW_MS,
        ask.max_running,
        ask.prompt_cost,
        max(1, ask.completion_multiplier),
        ask.wanted,
        ask.hold_ms,
        key_id,
        "",
        "",
        "",
        cache_seconds,
        ask.upfront,
        len(guard),
        len(reads),
        *(value for _, value in guard),
    ]
    for _ in range(_LOAD_ATTEMPTS):
        reply = _ADMIT(redis, keys, args)
        status = int(reply[0])
        if status == STALE:
            raise Stale()
        if status != NOT_LOADED:
            values = tuple(reply[len(reply) - len(reads) :])
            return dataclasses.replace(_decision(ask.rpm, reply[: len(reply) - len(reads)]), reads=values)
        quota, used = load()
        args[9:12] = [quota, _text(reply[1]), used]
    raise RuntimeError(f"the live balance of key {key_id} kept changing while it was loaded")


def _decision(rpm: int, reply: list[Any]) -> Decision:
    status = int(reply[0])
    window = ratelimit.from_tail(rpm, reply, limited=status == RATE_LIMITED)
    if status == ADMITTED:
        return Decision(status, window, admission=Admission(cap=int(reply[1]), amount=int(reply[2])))
    if status == NO_QUOTA:
        return Decision(
            status, window, used=int(reply[1]), held=int(reply[2]), running=int(reply[3]), quota=int(reply[4])
        )
    if status == TOO_MANY_RUNNING:
        return Decision(status, window, running=int(reply[1]))
    return Decision(status, window)


def extend(
    redis: Any,
    prefix: str,
    key_id: int,
    request_id: str,
    held: int,
    wanted: int,
    fewest: int,
    hold_ms: int,
    load: Callable[[], tuple[int, int]],
    cache_seconds: int,
) -> int:
    """Add up to `wanted` billed tokens to a running request's hold of `held`, from what the key
    has free; at least `fewest`, or nothing. Returns the tokens added. The hold's deadline moves
    on too, so a long answer keeps its hold however long it runs."""
    keys = [acct_key(prefix, key_id), quota_key(prefix, key_id), holds_key(prefix, key_id)]
    args: list[Any] = [request_id, held, wanted, max(1, fewest), hold_ms, "", "", "", cache_seconds]
    for _ in range(_LOAD_ATTEMPTS):
        granted, qver = _EXTEND(redis, keys, args)
        if int(granted) >= 0:
            return int(granted)
        quota, used = load()
        args[5:8] = [quota, _text(qver), used]
    raise RuntimeError(f"the live balance of key {key_id} kept changing while it was loaded")


def settle(redis: Any, prefix: str, key_id: int, request_id: str, held: int, billed: int, record_json: str) -> int:
    """Free the request's hold, add `billed` to pending and queue its usage record, once per
    request id. Returns the outbox length, or -1 if this request was settled before."""
    keys = [
        done_key(prefix, request_id),
        holds_key(prefix, key_id),
        acct_key(prefix, key_id),
        outbox_key(prefix),
    ]
    member = hold_member(request_id, held)
    return int(_SETTLE(redis, keys, [request_id, member, held, billed, record_json, DONE_MARKER_SECONDS]))


@dataclass(frozen=True, slots=True)
class LiveUsage:
    synced: int | None  # None: no live state (never used, or Redis lost it)
    pending: int
    held: int


def live_usage(redis: Any, prefix: str, key_id: int) -> LiveUsage:
    synced, pending, held = redis.hmget(acct_key(prefix, key_id), "synced", "pending", "held")
    return LiveUsage(
        synced=int(synced) if synced is not None else None,
        pending=int(pending or 0),
        held=int(held or 0),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
