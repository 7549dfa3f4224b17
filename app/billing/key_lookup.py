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
    info, extras, _ = _lookup(redis, prefix, key_hash, ttl, also)
    return info, extras


def _lookup(
    redis: Any, prefix: str, key_hash: str, ttl: int, also: tuple[str, ...]
) -> tuple[KeyInfo | None, list[Any], bytes]:
    cache_key = _cache_key(prefix, key_hash)
    cached, *extras = redis.mget([cache_key, *also])
    if cached == _MISSING:
        return None, extras, cached
    if cached is not None:
        data = orjson.loads(cached)
        if data.get("models") is not None:
            data["models"] = tuple(data["models"])
        return KeyInfo(**data), extras, cached
    info = _load_from_sql(key_hash)
    raw = _MISSING if info is None else json.dumps(asdict(info)).encode()
    redis.set(cache_key, raw, ex=_MISSING_TTL if info is None else ttl)
    return info, extras, raw


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A key as this process read it: its cache entry (Redis key, value), and the `also` keys with
    the values read in the same round trip (b"" for none). The pairs are what an admission
    guard compares with Redis (quota.admit)."""

    info: KeyInfo
    cached: tuple[str, bytes]
    also: tuple[tuple[str, bytes], ...]


class Memory:
    """Snapshots this process read, by key hash. Trusting one skips the look-up's round trip;
    its guard goes with the admission script, which refuses the request (Stale) when any value
    moved, so an edit or a revoke is still seen by the next request everywhere."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._snapshots: dict[tuple[str, str], Snapshot] = {}

    def get(self, prefix: str, key_hash: str) -> Snapshot | None:
        return self._snapshots.get((prefix, key_hash))

    def put(self, prefix: str, key_hash: str, snapshot: Snapshot) -> None:
        if len(self._snapshots) >= self.size:
            self._snapshots.clear()  # a bound, not a cache policy: the next reads fill it again
        self._snapshots[(prefix, key_hash)] = snapshot


MEMORY = Memory()


def invalidate(redis: Any, prefix: str, key_hash: str) -> None:
    redis.delete(_cache_key(prefix, key_hash))


def read(
    redis: Any, prefix: str, presented: str | None, now: float, ttl: int = 3600, also: tuple[str, ...] = ()
) -> Snapshot:
    """The presented key as a Snapshot this process remembers, with the values of the `also` Redis
    keys read in the same round trip (b"" for none); InvalidKey('missing'|'unknown'|'revoked'|
    'expired') when it may not be used."""
    if not presented:
        raise InvalidKey("missing")
    key_hash = hash_key(presented)
    info, extras, raw = _lookup(redis, prefix, key_hash, ttl, also)
    if info is None:
        raise InvalidKey("unknown")
    _check(info, now)
    pairs = tuple(zip(also, (value or b"" for value in extras), strict=True))
    snapshot = Snapshot(info, (_cache_key(prefix, key_hash), raw), pairs)
    MEMORY.put(prefix, key_hash, snapshot)
    return snapshot


def remembered(prefix: str, presented: str | None, now: float, also: tuple[str, ...]) -> Snapshot | None:
    """The snapshot this process last read of the presented key with the same `also` keys, when
    it was valid then and still is at `now`; None otherwise (read it)."""
    if not presented:
        return None
    snapshot = MEMORY.get(prefix, hash_key(presented))
    if snapshot is None or tuple(name for name, _ in snapshot.also) != also:
        return None
    try:
        _check(snapshot.info, now)
    except InvalidKey:
        return None  # expired since: the read says so
    return snapshot


def _check(info: KeyInfo, now: float) -> None:
    if info.status != "active":
        raise InvalidKey("revoked")
    if info.expires_at is not None and info.expires_at <= now:
        expired = datetime.fromtimestamp(info.expires_at, UTC).strftime("%Y-%m-%d")
        raise InvalidKey("expired", expired)
