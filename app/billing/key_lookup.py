"""Key look-up on the hot path: a KeyInfo snapshot cached in Redis, SQL only on a miss.

Every process shares the Redis copy, so a revoke or edit (which deletes it) is seen by the next
request everywhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.billing.errors import InvalidKey
from app.billing.key_format import hash_key
from app.extensions import db
from app.models import ApiKey

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
    return value.replace(tzinfo=UTC).timestamp()


def _load_from_sql(key_hash: str) -> KeyInfo | None:
    row = db.session.execute(db.select(ApiKey).filter_by(key_hash=key_hash)).scalar_one_or_none()
    info = key_info_from_row(row) if row is not None else None
    db.session.rollback()  # read-only; do not hold a transaction open for the rest of a stream
    return info


def lookup(
    redis: Any, prefix: str, key_hash: str, ttl: int = 3600, also: tuple[str, ...] = ()
) -> tuple[KeyInfo | None, list[Any]]:
    """The key's info, and the values of the `also` Redis keys read in the same round trip."""
    cache_key = _cache_key(prefix, key_hash)
    cached, *extras = redis.mget([cache_key, *also])
    if cached == _MISSING:
        return None, extras
    if cached is not None:
        data = orjson.loads(cached)
        if data.get("models") is not None:
            data["models"] = tuple(data["models"])
        return KeyInfo(**data), extras
    info = _load_from_sql(key_hash)
    if info is None:
        redis.set(cache_key, _MISSING, ex=_MISSING_TTL)
    else:
        redis.set(cache_key, json.dumps(asdict(info)), ex=ttl)
    return info, extras


def invalidate(redis: Any, prefix: str, key_hash: str) -> None:
    redis.delete(_cache_key(prefix, key_hash))


def authenticate(
    redis: Any, prefix: str, presented: str | None, now: float, ttl: int = 3600, also: tuple[str, ...] = ()
) -> tuple[KeyInfo, list[Any]]:
    """The KeyInfo for a presented key, or InvalidKey('missing'|'unknown'|'revoked'|'expired');
    with the values of the `also` Redis keys, read in the same round trip."""
    if not presented:
        raise InvalidKey("missing")
    info, extras = lookup(redis, prefix, hash_key(presented), ttl, also)
    if info is None:
        raise InvalidKey("unknown")
    if info.status != "active":
        raise InvalidKey("revoked")
    if info.expires_at is not None and info.expires_at <= now:
        expired = datetime.fromtimestamp(info.expires_at, UTC).strftime("%Y-%m-%d")
        raise InvalidKey("expired", expired)
    return info, extras
