"""The durable usage ledger in SQL, written by the worker, idempotent by request id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import ApiKey, UsageRecord

_FIELDS = (
    "request_id",
    "api_key_id",
    "model",
    "upstream_model",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "billed_tokens",
    "outcome",
    "status_code",
    "latency_ms",
    "ttft_ms",
)


def write_record(record: dict[str, Any]) -> bool:
    """Insert the record and add its billed tokens to the key, once. False if it was already written."""
    exists = db.session.execute(
        db.select(UsageRecord.id).filter_by(request_id=record["request_id"])
    ).scalar_one_or_none()
    if exists is not None:
        return False
    row = UsageRecord(**{field: record[field] for field in _FIELDS})
    if record.get("created_at"):
        row.created_at = datetime.fromtimestamp(record["created_at"], UTC).replace(tzinfo=None)
    db.session.add(row)
    db.session.execute(
        db.update(ApiKey)
        .where(ApiKey.id == record["api_key_id"])
        .values(tokens_used=ApiKey.tokens_used + record["billed_tokens"])
    )
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # a concurrent delivery of the same record won
        return False
    return True
