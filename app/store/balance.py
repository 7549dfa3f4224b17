"""What the Check balance page shows for a key (read-only queries)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import current_app

from app.billing import statements
from app.extensions import db
from app.models import ApiKey, UsageRecord


@dataclass(frozen=True, slots=True)
class KeySummary:
    prefix: str
    status: str  # active | revoked | expired
    remaining: int
    quota: int
    used: int
    rpm: int
    expires_at: datetime | None
    models: tuple[str, ...]


def summarise(row: ApiKey, now: datetime | None = None) -> KeySummary:
    """The live figures (usage settled in Redis but not yet in SQL included), as GET /api/key has them."""
    report = statements.key_report(
        row, default_rpm=current_app.config["KEY_DEFAULT_RPM"], all_models=statements.enabled_models(), now=now
    )
    return KeySummary(
        prefix=row.prefix,
        status=report["status"],
        remaining=report["tokens_remaining"],
        quota=report["tokens_quota"],
        used=report["tokens_used"],
        rpm=report["rpm"],
        expires_at=row.expires_at,
        models=tuple(report["models"]),
    )


def recent_usage(key_id: int, limit: int = 20) -> list[UsageRecord]:
    stmt = (
        db.select(UsageRecord)
        .where(UsageRecord.api_key_id == key_id)
        .order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
        .limit(limit)
    )
    return list(db.session.execute(stmt).scalars())
