"""Admin login attempts, counted in Redis per client address and per account over a fixed window.

Both counters must stay within the limit: the address counter stops one client guessing many
accounts, the account counter stops many clients guessing one password. An attempt is counted
before its password is checked (INCR answers each concurrent attempt with its own number), so
however many guesses arrive at once, at most the limit's worth of passwords are checked; a
successful login clears both counters.
"""

from __future__ import annotations

import hashlib
from typing import Any

WINDOW_SECONDS = 15 * 60


def _keys(prefix: str, ip: str, email: str) -> tuple[str, str]:
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"{prefix}:adminlogin:ip:{ip}", f"{prefix}:adminlogin:acct:{account}"


def attempt(redis: Any, prefix: str, ip: str, email: str, limit: int) -> int:
    """Count one attempt. Returns 0 when it may go on to the password check, else the seconds
    until this address and account may try again."""
    pipe = redis.pipeline()
    keys = _keys(prefix, ip, email)
    for key in keys:
        # SET NX starts the window on the first attempt; INCR keeps its expiry.
        pipe.set(key, 0, ex=WINDOW_SECONDS, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
    replies = pipe.execute()
    counts, ttls = replies[1::3], replies[2::3]
    over = [max(int(ttl), 1) for count, ttl in zip(counts, ttls, strict=True) if int(count) > limit]
    return max(over) if over else 0


def clear(redis: Any, prefix: str, ip: str, email: str) -> None:
    redis.delete(*_keys(prefix, ip, email))
