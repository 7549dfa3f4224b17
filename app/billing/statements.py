"""What a key has left, as buyers and operators see it: SQL's row plus the live usage in Redis.

tokens_used counts every settled request, also those whose usage record the worker has not yet
written to SQL; tokens_reserved is what requests still running hold. tokens_remaining is
tokens_quota - tokens_used (never below 0), so used + remaining = quota for a key at rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from redis.exceptions import RedisError

from app.billing import ledger, quota
from app.extensions import db, get_redis
from app.models import ModelRoute

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyBalance:
    quota: int
    used: int
    reserved: int

    @property
    def remaining(self) -> int:
        return max(0, self.quota - self.used)


def live_balance(row: Any) -> KeyBalance:
    """The key's balance now. `row` is its ApiKey (SQL has the quota and the drained usage)."""
    live = _live_usage(row.id)
    if live is None:
        return KeyBalance(quota=row.tokens_quota, used=row.tokens_used, reserved=0)
    # synced never exceeds what SQL had; the larger of the two is the most recent SQL figure.
    used = max(row.tokens_used, live.synced or 0) + live.pending
    return KeyBalance(quota=row.tokens_quota, used=used, reserved=live.held)


def remaining_tokens(row: Any) -> int:
    return live_balance(row).remaining


def sql_totals(key_id: int) -> tuple[int, int]:
    """(tokens_quota, tokens_used) from SQL for loading live state; (0, 0) for a key that is gone.

    Ends the read transaction at once: this runs on the request path, which must not hold one
    open for the rest of a stream."""
    totals = ledger.key_totals([key_id]).get(key_id, (0, 0))
    db.session.rollback()
    return totals


def key_report(row: Any, *, default_rpm: int, all_models: Iterable[str], now: datetime | None = None) -> dict[str, Any]:
    """The fields GET /api/key and `keys show --json` print."""
    balance = live_balance(row)
    return {
        "name": row.name or "",
        "status": key_status(row, now),
        "tokens_quota": balance.quota,
        "tokens_used": balance.used,
        "tokens_remaining": balance.remaining,
        "tokens_reserved": balance.reserved,
        "rpm": row.rpm or default_rpm,
        "expires_at": row.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if row.expires_at else None,
        "models": list(row.allowed_models) if row.allowed_models else sorted(all_models),
    }


def enabled_models() -> list[str]:
    return sorted(db.session.execute(db.select(ModelRoute.public_id).where(ModelRoute.enabled)).scalars())


def key_status(row: Any, now: datetime | None = None) -> str:
    """active, revoked or expired."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    if row.status == "active" and row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return row.status


def _live_usage(key_id: int) -> quota.LiveUsage | None:
    try:
        return quota.live_usage(get_redis(), current_app.config["BILLING_REDIS_PREFIX"], key_id)
    except RedisError:
        log.warning("live usage of key %s unavailable; showing SQL's figures", key_id)
        return None
