"""Redemption attempts, counted in Redis per client address over a fixed window.

An attempt is counted before its code is checked (INCR answers each concurrent attempt with its
own number), so however many guesses arrive at once, at most LIMIT codes per address are checked
per window. A successful redemption gives its attempt back: a buyer with many real codes is never
held up, while each wrong code keeps counting.
"""

from __future__ import annotations

from typing import Any

LIMIT = 10
WINDOW_SECONDS = 15 * 60


def _key(prefix: str, ip: str) -> str:
    return f"{prefix}:giftcode:ip:{ip}"


def attempt(redis: Any, prefix: str, ip: str, limit: int = LIMIT) -> int:
    """Count one attempt. Returns 0 when it may go on to the code check, else the seconds until
    this address may try again."""
    key = _key(prefix, ip)
    pipe = redis.pipeline()
    pipe.set(key, 0, ex=WINDOW_SECONDS, nx=True)  # SET NX starts the window; INCR keeps its expiry
    pipe.incr(key)
    pipe.ttl(key)
    _started, count, ttl = pipe.execute()
    return max(int(ttl), 1) if int(count) > limit else 0


# DECR only a live counter: on one that expired meanwhile it would leave a counter without expiry.
_GIVE_BACK = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('decr', KEYS[1]) end return 0"


def give_back(redis: Any, prefix: str, ip: str) -> None:
    redis.eval(_GIVE_BACK, 1, _key(prefix, ip))
