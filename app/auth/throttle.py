"""Failed admin logins, counted in Redis per client address and per account over a fixed window.

Both counters must stay under the limit: the address counter stops one client guessing many
accounts, the account counter stops many clients guessing one password.
"""

from __future__ import annotations

import hashlib
from typing import Any

WINDOW_SECONDS = 15 * 60


def _keys(prefix: str, ip: str, email: str) -> tuple[str, str]:
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"{prefix}:adminlogin:ip:{ip}", f"{prefix}:adminlogin:acct:{account}"


def retry_after(redis: Any, prefix: str, ip: str, email: str, limit: int) -> int:
    """Seconds until this address and account may try again; 0 when a try is allowed now."""
    wait = 0
    for key in _keys(prefix, ip, email):
        count = redis.get(key)
        if count is not None and int(count) >= limit:
            wait = max(wait, redis.ttl(key), 1)
    return wait


def note_failure(redis: Any, prefix: str, ip: str, email: str) -> None:
    pipe = redis.pipeline()
    for key in _keys(prefix, ip, email):
        # SET NX starts the window on the first failure; INCR keeps its expiry.
        pipe.set(key, 0, ex=WINDOW_SECONDS, nx=True)
        pipe.incr(key)
    pipe.execute()


def clear(redis: Any, prefix: str, ip: str, email: str) -> None:
    redis.delete(*_keys(prefix, ip, email))
