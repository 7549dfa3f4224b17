"""The pool's live state in Redis, shared by every process and node: which upstream accounts are
disabled, each account's circuit breaker, and the requests each has in flight.

Per upstream account:
  {prefix}:up:{id}          hash: disabled (the reason), failures, open_until, backoff
  {prefix}:up:{id}:leases   sorted set: one member per request in flight, scored by when its lease
                            runs out, so a process that dies mid-request frees its slots by itself
  {prefix}:up:{id}:trial    the one request a half-open breaker lets through
  {prefix}:up:epoch         bumped by every change to any account's state hash

Every request reads the epoch before it picks a target (a chat completion in its admission
script, other requests with the key's MGET, app.api.auth), and a process keeps the state hashes it
last read (StateCache): while the epoch has not moved they are what Redis holds,
so the common request reads no state at all. A breaker's open → half-open step needs no write:
it follows from open_until and the clock. A request that succeeds on a healthy account without a
limit writes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from app.routing.pool import HALF_OPEN, Breaker, BreakerPolicy, Candidate, after_failure, breaker_state
from app.routing.routes import TargetInfo

log = logging.getLogger(__name__)

OK = "ok"
DISABLED = "disabled"

# Take a slot if fewer than ARGV[1] leases are live. KEYS[1] leases; ARGV: limit, now, expires, member.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[3]) - tonumber(ARGV[2])) * 1000))
return 1
"""


def state_key(prefix: str, upstream_id: int) -> str:
    return f"{prefix}:up:{upstream_id}"


def leases_key(prefix: str, upstream_id: int) -> str:
    return f"{prefix}:up:{upstream_id}:leases"


def trial_key(prefix: str, upstream_id: int) -> str:
    return f"{prefix}:up:{upstream_id}:trial"


def epoch_key(prefix: str) -> str:
    return f"{prefix}:up:epoch"


class StateCache:
    """The account states this process last read, valid while the epoch they were read under is
    the one Redis holds (one per app: app.extensions["pool_states"])."""

    def __init__(self) -> None:
        self._epoch: Any = None
        self._states: dict[int, dict[str, str]] = {}
        self._lock = threading.Lock()

    def get(self, epoch: Any, upstream_ids: Sequence[int]) -> list[dict[str, str]] | None:
        states = self._states
        if epoch is None or epoch != self._epoch or any(i not in states for i in upstream_ids):
            return None
        return [states[i] for i in upstream_ids]

    def put(self, epoch: Any, states: dict[int, dict[str, str]]) -> None:
        """States read after `epoch` was: at least as new as it."""
        if epoch is None:
            return
        with self._lock:
            if epoch != self._epoch:
                self._epoch, self._states = epoch, {}
            self._states = {**self._states, **states}


def init_pool_states(app: Any) -> None:
    """One StateCache per app, so that apps in one process never share what they read."""
    app.extensions["pool_states"] = StateCache()


def candidates(
    redis: Any,
    prefix: str,
    targets: Sequence[TargetInfo],
    now: float,
    epoch: Any = None,
    cache: StateCache | None = None,
) -> list[Candidate[TargetInfo]]:
    """The targets with their live state: at most one round trip, none when `cache` holds the
    states for `epoch` (read with the request's key) and no target counts requests in flight."""
    ids = [t.upstream_id for t in targets]
    limited = [t.upstream_id for t in targets if t.max_concurrency]
    cached = cache.get(epoch, ids) if cache is not None else None
    states, counts = _read(redis, prefix, ids if cached is None else [], limited, now)
    if cached is not None:
        states = cached
    elif cache is not None:
        cache.put(epoch, dict(zip(ids, states, strict=True)))
    out = []
    for target, state in zip(targets, states, strict=True):
        in_flight = counts.get(target.upstream_id, 0)
        breaker = breaker_from(state)
        out.append(
            Candidate(
                target=target,
                priority=target.priority,
                weight=target.weight,
                disabled=bool(state.get("disabled")),
                breaker=breaker_state(breaker, now),
                failures=breaker.failures,
                in_flight=in_flight,
                limit=target.max_concurrency,
            )
        )
    return out


def _read(
    redis: Any, prefix: str, state_ids: Sequence[int], limited: Sequence[int], now: float
) -> tuple[list[dict[str, str]], dict[int, int]]:
    """The state hashes of `state_ids` and the live leases of `limited`, in at most one round trip."""
    if not state_ids and not limited:
        return [], {}
    if len(state_ids) == 1 and not limited:  # the common case, without a pipeline's cost
        return [_decoded(redis.hgetall(state_key(prefix, state_ids[0])))], {}
    pipe = redis.pipeline(transaction=False)
    for upstream_id in state_ids:
        pipe.hgetall(state_key(prefix, upstream_id))
    for upstream_id in limited:
        pipe.zcount(leases_key(prefix, upstream_id), now, "+inf")
    replies = pipe.execute()
    states = [_decoded(r) for r in replies[: len(state_ids)]]
    return states, {i: int(n) for i, n in zip(limited, replies[len(state_ids) :], strict=True)}


def _decoded(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def breaker_from(state: dict[str, str]) -> Breaker:
    return Breaker(
        failures=int(state.get("failures") or 0),
        open_until=float(state.get("open_until") or 0),
        backoff=float(state.get("backoff") or 0),
    )


def acquire(redis: Any, prefix: str, target: TargetInfo, member: str, now: float, lease_seconds: float) -> bool:
    """A slot on the target's account for `member`, or False when it has none free (or, for a
    half-open breaker, when another request is already its trial)."""
    if target.max_concurrency is None:
        return True
    key = leases_key(prefix, target.upstream_id)
    return bool(redis.eval(_ACQUIRE, 1, key, target.max_concurrency, now, now + lease_seconds, member))


def claim_trial(redis: Any, prefix: str, upstream_id: int, seconds: float) -> bool:
    return bool(redis.set(trial_key(prefix, upstream_id), "1", nx=True, px=max(1, int(seconds * 1000))))


def release(redis: Any, prefix: str, target: TargetInfo, member: str) -> None:
    if target.max_concurrency is not None:
        redis.zrem(leases_key(prefix, target.upstream_id), member)


def record_failure(redis: Any, prefix: str, upstream_id: int, now: float, policy: BreakerPolicy) -> bool:
    """Count a failure; opens (or re-opens) the breaker by pool.after_failure. Safe across processes.
    True when this failure is the one that opened it."""
    key = state_key(prefix, upstream_id)
    opened: list[bool] = [False]

    def update(pipe: Any) -> None:
        before = breaker_from(_decoded(pipe.hgetall(key)))
        after = after_failure(before, now, policy)
        pipe.multi()
        pipe.hset(key, mapping={"failures": after.failures, "open_until": after.open_until, "backoff": after.backoff})
        pipe.delete(trial_key(prefix, upstream_id))
        pipe.incr(epoch_key(prefix))
        opened[0] = breaker_state(before, now) != breaker_state(after, now) or before.open_until != after.open_until
        if opened[0]:
            log.warning(
                "upstream %s: circuit open for %.0f s (%s failures)", upstream_id, after.backoff, after.failures
            )

    redis.transaction(update, key)
    return opened[0]


def record_success(redis: Any, prefix: str, candidate: Candidate[TargetInfo]) -> None:
    """Close the breaker; nothing to write when it had counted no failures."""
    if candidate.failures or candidate.breaker == HALF_OPEN:
        upstream_id = candidate.target.upstream_id
        pipe = redis.pipeline(transaction=True)
        pipe.hdel(state_key(prefix, upstream_id), "failures", "open_until", "backoff")
        pipe.delete(trial_key(prefix, upstream_id))
        pipe.incr(epoch_key(prefix))
        pipe.execute()


def disable(redis: Any, prefix: str, upstream_id: int, reason: str) -> bool:
    """Take the account out everywhere at once. True for the one caller that took it out."""
    pipe = redis.pipeline(transaction=True)
    pipe.hsetnx(state_key(prefix, upstream_id), "disabled", reason[:300])
    pipe.incr(epoch_key(prefix))
    took_out, _ = pipe.execute()
    return bool(took_out)


def restore(redis: Any, prefix: str, upstream_id: int) -> None:
    """Back in service: not disabled, breaker closed (in-flight leases are left to finish)."""
    pipe = redis.pipeline(transaction=True)
    pipe.delete(state_key(prefix, upstream_id), trial_key(prefix, upstream_id))
    pipe.incr(epoch_key(prefix))
    pipe.execute()


def describe(candidate: Candidate[TargetInfo]) -> str:
    if candidate.disabled:
        return DISABLED
    if candidate.breaker != "closed":
        return f"circuit {candidate.breaker.replace('_', '-')}"
    return "healthy"
