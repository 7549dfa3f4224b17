"""Per-key requests per minute: a moving window in Redis, shared by every process and machine.

The window is a sorted set per key of admitted request ids scored by their arrival in
milliseconds of Redis's own clock (so machines with skewed clocks agree). A request is admitted
when fewer than `limit` requests arrived in the last minute. Refused requests are not recorded, so
clients that retry a 429 (the OpenAI SDK does, twice; SillyTavern five times) do not dig
themselves deeper. A limit of 0 or less means no limit.

The Lua window check is shared with quota.py's admission script, so the rate limit, the
concurrency cap and the reservation cost one round trip together. Every script ends its reply with
the window tail {count, blocking, newest, now}; the maths that turns it into headers and
Retry-After is pure and lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.billing.scripts import NOW, Script

WINDOW_MS = 60_000

# Lua fragment. Expects KEYS[1] = the window, locals `now` (ms), `rid`, `rpm`, `window`.
# Leaves `count`; returns {1, count, blocking, newest, now} when the window is full, where
# `blocking` is the arrival of the request whose leaving frees the next slot. A request already in
# the window (admission asked again, with a tighter prompt count) is not counted twice.
WINDOW_CHECK = """
local count = 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  count = redis.call('ZCARD', KEYS[1])
  if count >= rpm and not redis.call('ZSCORE', KEYS[1], rid) then
    local blocking = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')[2]
    local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
    return {1, count, tonumber(blocking), tonumber(newest), now}
  end
end
"""

# Lua fragment: record the admitted request; leaves `blocking` for the reply's window tail.
WINDOW_RECORD = """
local blocking = 0
if rpm > 0 then
  if redis.call('ZADD', KEYS[1], 'NX', now, rid) == 1 then count = count + 1 end
  redis.call('PEXPIRE', KEYS[1], window)
  if count >= rpm then
    blocking = tonumber(redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')[2])
  end
end
"""

_HIT = Script(
    NOW
    + "local rid, rpm, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    + WINDOW_CHECK
    + WINDOW_RECORD
    + "return {0, count, blocking, now, now}\n"
)

# Read-only: the window as it is, for headers on requests that do not count (/v1/models).
_PEEK = Script(
    NOW
    + """
local rpm, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local since = '(' .. (now - window)
local count = redis.call('ZCOUNT', KEYS[1], since, '+inf')
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2] or 0
local blocking = 0
if rpm > 0 and count >= rpm then
  blocking = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', count - rpm, 1)[2]
end
return {0, count, tonumber(blocking), tonumber(newest), now}
"""
)


@dataclass(frozen=True, slots=True)
class RateWindow:
    limit: int
    remaining: int
    reset_ms: int  # until the window is empty again (OpenAI: "resets to its initial state")
    retry_after_ms: int  # until a slot frees; 0 while slots are free
    limited: bool = False  # this request was refused


def window_key(prefix: str, key_id: int) -> str:
    return f"{prefix}:rl:{key_id}"


def window_state(
    limit: int,
    count: int,
    blocking_ms: int,
    newest_ms: int,
    now_ms: int,
    *,
    limited: bool = False,
    window_ms: int = WINDOW_MS,
) -> RateWindow:
    """Headers' view of a window holding `count` requests, the newest at `newest_ms`."""
    remaining = max(0, limit - count)
    reset = max(0, newest_ms + window_ms - now_ms) if count else 0
    retry = max(1, blocking_ms + window_ms - now_ms) if remaining == 0 and blocking_ms else 0
    return RateWindow(limit=limit, remaining=remaining, reset_ms=reset, retry_after_ms=retry, limited=limited)


def from_tail(limit: int, tail: list[Any], *, limited: bool = False) -> RateWindow:
    """A RateWindow from a script reply's window tail {count, blocking, newest, now}."""
    count, blocking, newest, now = (int(v) for v in tail[-4:])
    return window_state(limit, count, blocking, newest, now, limited=limited)


def retry_after_seconds(window: RateWindow) -> int:
    """Retry-After is whole seconds (RFC 9110); round up so a client never comes back too early."""
    return max(1, -(-window.retry_after_ms // 1000))


def go_duration(ms: int) -> str:
    """A duration as Go prints it, which is what OpenAI's x-ratelimit-reset-* carry: 20s, 6m0s, 1.5s, 250ms."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def headers(window: RateWindow) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(window.limit),
        "x-ratelimit-remaining-requests": str(window.remaining),
        "x-ratelimit-reset-requests": go_duration(window.reset_ms),
    }


def hit(redis: Any, prefix: str, key_id: int, request_id: str, limit: int) -> RateWindow:
    """Count one request unless the window is full (then `limited` is set and nothing is counted)."""
    reply = _HIT(redis, [window_key(prefix, key_id)], [request_id, limit, WINDOW_MS])
    return from_tail(limit, reply, limited=int(reply[0]) == 1)


def peek(redis: Any, prefix: str, key_id: int, limit: int) -> RateWindow:
    """The window as it is, without counting anything."""
    return from_tail(limit, _PEEK(redis, [window_key(prefix, key_id)], [limit, WINDOW_MS]))
