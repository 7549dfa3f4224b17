"""Key look-up on the hot path: a KeyInfo snapshot cached in Redis, SQL only on a miss.

Every process shares the Redis copy, so a revoke or edit (which deletes it) is seen by the next
request everywhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from app.billing.api_keys import hash_key
from app.billing.errors import InvalidKey

_MISSING = b"-"
_MISSING_TTL = 60


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    prefix: str
    name: str
    status: str
    expires_at: float | None  # unix seconds
    rpm: int | None
    max_concurrent: int | None
    models: tuple[str, ...] | None
    reasoning_passthrough: bool

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def _cache_key(prefix: str, key_hash: str) -> str:
    return f"{prefix}:key:{key_hash}"


def key_info_from_row(row: Any) -> KeyInfo:
    expires = row.expires_at
    return KeyInfo(
        id=row.id,
        prefix=row.prefix,
        name=row.name or "",
        status=row.status,
        expires_at=_timestamp(expires) if expires else None,
        rpm=row.rpm,
        max_concurrent=row.max_concurrent,
        models=tuple(row.allowed_models) if row.allowed_models else None,
        reasoning_passthrough=bool(row.reasoning_passthrough),
    )


def _timestamp(value: datetime) -> float:
    from datetime import UTC

    return value.replace(tzinfo=UTC).timestamp()


def _load_from_sql(key_hash: str) -> KeyInfo | None:
    from app.extensions import db
    from app.models import ApiKey

    row = db.session.execute(db.select(ApiKey).filter_by(key_hash=key_hash)).scalar_one_or_none()
    info = key_info_from_row(row) if row is not None else None
    db.session.rollback()  # read-only; do not hold a transaction open for the rest of a stream
    return info


def lookup(redis: Any, prefix: str, key_hash: str, ttl: int = 3600) -> KeyInfo | None:
    cache_key = _cache_key(prefix, key_hash)
    cached = redis.get(cache_key)
    if cached == _MISSING:
        return None
    if cached is not None:
        data = json.loads(cached)
        if data.get("models") is not None:
            data["models"] = tuple(data["models"])
        return KeyInfo(**data)
    info = _load_from_sql(key_hash)
    if info is None:
        redis.set(cache_key, _MISSING, ex=_MISSING_TTL)
    else:
        redis.set(cache_key, json.dumps(asdict(info)), ex=ttl)
    return info


def invalidate(redis: Any, prefix: str, key_hash: str) -> None:
    redis.delete(_cache_key(prefix, key_hash))


def authenticate(redis: Any, prefix: str, presented: str | None, now: float, ttl: int = 3600) -> KeyInfo:
    """The KeyInfo for a presented key, or InvalidKey('missing'|'unknown'|'revoked'|'expired')."""
    if not presented:
        raise InvalidKey("missing")
    info = lookup(redis, prefix, hash_key(presented), ttl)
    if info is None:
        raise InvalidKey("unknown")
    if info.status != "active":
        raise InvalidKey("revoked")
    if info.expires_at is not None and info.expires_at <= now:
        raise InvalidKey("expired", datetime.fromtimestamp(info.expires_at).strftime("%Y-%m-%d"))
    return info
