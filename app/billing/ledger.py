"""The durable usage ledger in SQL, idempotent by request id: written by the worker from the Redis
outbox, and while Redis is down by the web process itself or by a replay of its spool (spool.py).

A batch of usage records and the matching increase of each key's tokens_used commit in one
transaction; a record whose request id is already in the table is skipped, so delivering the same
batch twice (a worker killed after its commit, a second worker draining at the same time) changes
nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.extensions import db
from app.models import ApiKey, UsageRecord


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One request's usage record: what metering settles, the Redis outbox carries as JSON, the
    usage_records table keeps and the admin's CSV exports."""

    request_id: str
    api_key_id: int
    model: str
    upstream_model: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    billed_tokens: int
    outcome: str
    status_code: int
    latency_ms: int
    ttft_ms: int | None
    created_at: float  # Unix time
    # The multipliers billed at, in 1/UNIT (pricing.Multipliers), so the statement can show the
    # arithmetic after the route's prices change.
    prompt_multiplier_e4: int | None = None
    cache_hit_multiplier_e4: int | None = None
    completion_multiplier_e4: int | None = None

    def as_dict(self) -> dict[str, Any]:
        # Plain values only: no need for asdict()'s deep copy, which costs more than the rest here.
        return {name: getattr(self, name) for name in _ENTRY_FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))


_ENTRY_FIELDS = tuple(f.name for f in fields(UsageEntry))
# The columns of usage_records that come from an entry as they are (created_at is converted).
FIELDS = tuple(name for name in _ENTRY_FIELDS if name != "created_at")
# Kept since migration 0010: a record an older release queued in Redis or spooled has none of them.
OPTIONAL_FIELDS = ("prompt_multiplier_e4", "cache_hit_multiplier_e4", "completion_multiplier_e4")
REQUIRED_FIELDS = tuple(name for name in FIELDS if name not in OPTIONAL_FIELDS)
_ATTEMPTS = 3
_IN_CHUNK = 500  # ids per IN (...): far below SQLite's limit on bound parameters


@dataclass(frozen=True, slots=True)
class BatchResult:
    written: int  # records new to SQL (the others were there already)
    used: dict[int, int]  # key id -> tokens_used as of the commit, for every key in the batch
    rejected: tuple[str, ...] = field(default=())  # request ids SQL refuses for good (e.g. the key is gone)


def write_batch(records: Sequence[dict[str, Any]]) -> BatchResult:
    """Write what is new of `records` and add their billed tokens to their keys, in one transaction.
    When SQL fails (down, locked, timed out) the error is raised with the session rolled back."""
    try:
        return _write_batch(records)
    except SQLAlchemyError:
        db.session.rollback()  # so that the caller's session, and the next try, start clean
        raise


def _write_batch(records: Sequence[dict[str, Any]]) -> BatchResult:
    for _ in range(_ATTEMPTS):
        try:
            return _write_once(records)
        except IntegrityError:
            db.session.rollback()  # a concurrent writer got some of them first; the next pass skips those
    return _write_one_by_one(records)


def write_record(record: dict[str, Any]) -> bool:
    """Insert one record and add its billed tokens to the key, once. False if it was already written."""
    return write_batch([record]).written == 1


def recorded(request_ids: Iterable[str]) -> set[str]:
    """Which of `request_ids` have their usage record in SQL."""
    ids = sorted(set(request_ids))
    found: set[str] = set()
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        found.update(
            db.session.execute(db.select(UsageRecord.request_id).where(UsageRecord.request_id.in_(chunk))).scalars()
        )
    return found


def key_totals(key_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """key id -> (tokens_quota, tokens_used) as SQL has them now."""
    ids = sorted(set(key_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        db.select(ApiKey.id, ApiKey.tokens_quota, ApiKey.tokens_used).where(ApiKey.id.in_(ids))
    ).all()
    return {row.id: (int(row.tokens_quota), int(row.tokens_used)) for row in rows}


def _write_once(records: Sequence[dict[str, Any]]) -> BatchResult:
    by_id = {r["request_id"]: r for r in records}
    existing = set(
        db.session.execute(db.select(UsageRecord.request_id).where(UsageRecord.request_id.in_(list(by_id)))).scalars()
    )
    fresh = [r for request_id, r in by_id.items() if request_id not in existing]
    if fresh:
        db.session.execute(db.insert(UsageRecord), [_row(r) for r in fresh])
    billed: Counter[int] = Counter()
    for r in fresh:
        billed[r["api_key_id"]] += r["billed_tokens"]
    for key_id in sorted(billed):  # one order everywhere, so concurrent batches cannot deadlock
        if billed[key_id]:
            db.session.execute(
                db.update(ApiKey).where(ApiKey.id == key_id).values(tokens_used=ApiKey.tokens_used + billed[key_id])
            )
    # Read inside the transaction, after our own updates: with the rows locked until commit, this
    # is exactly tokens_used as committed, and it includes every record of the batch.
    used = {key_id: totals[1] for key_id, totals in key_totals(r["api_key_id"] for r in records).items()}
    db.session.commit()
    return BatchResult(written=len(fresh), used=used)


def _write_one_by_one(records: Sequence[dict[str, Any]]) -> BatchResult:
    written, used, rejected = 0, {}, []
    for record in records:
        try:
            result = _write_once([record])
        except IntegrityError:
            db.session.rollback()
            if _exists(record["request_id"]):
                continue
            rejected.append(record["request_id"])
            continue
        written += result.written
        used.update(result.used)
    return BatchResult(written=written, used=used, rejected=tuple(rejected))


def _exists(request_id: str) -> bool:
    stmt = db.select(UsageRecord.id).filter_by(request_id=request_id)
    return db.session.execute(stmt).scalar_one_or_none() is not None


def _row(record: dict[str, Any]) -> dict[str, Any]:
    row = {name: record[name] for name in REQUIRED_FIELDS}
    row.update((name, record.get(name)) for name in OPTIONAL_FIELDS)
    created = record.get("created_at")
    row["created_at"] = (
        datetime.fromtimestamp(created, UTC).replace(tzinfo=None) if created else datetime.now(UTC).replace(tzinfo=None)
    )
    return row
