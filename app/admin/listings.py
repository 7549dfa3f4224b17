"""Read-only, filtered and paginated lists for the admin tables: keys, orders, usage, audit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_

from app.admin.queries import active_key_condition, attention_condition
from app.billing.key_format import hash_key
from app.extensions import db
from app.models import ApiKey, AuditLog, ModelRoute, Order, UsageRecord, WebhookEvent

PER_PAGE = 50
KEY_STATES = ("active", "exhausted", "expired", "revoked")


def key_state(row: ApiKey, now: datetime) -> str:
    if row.status != "active":
        return row.status
    if row.is_expired(now):
        return "expired"
    return "exhausted" if row.tokens_used >= row.tokens_quota else "active"


def _key_state_condition(state: str, now: datetime) -> Any:
    live = ApiKey.status == "active"
    expired = and_(ApiKey.expires_at.is_not(None), ApiKey.expires_at <= now)
    return {
        "active": active_key_condition(now),
        "expired": and_(live, expired),
        "exhausted": and_(live, ~expired, ApiKey.tokens_used >= ApiKey.tokens_quota),
        "revoked": ApiKey.status == "revoked",
    }[state]


def key_search_condition(q: str) -> Any:
    """A full key (by hash), an id, or part of the name, email, prefix or note."""
    if q.startswith("sk-") and "…" not in q and len(q) > 30:
        return ApiKey.key_hash == hash_key(q)
    like = f"%{q.lower()}%"
    conditions = [
        func.lower(ApiKey.name).like(like),
        func.lower(ApiKey.email).like(like),
        func.lower(ApiKey.note).like(like),
    ]
    if q.isdigit():
        conditions.append(ApiKey.id == int(q))  # a number is an id, not a fragment of random prefix characters
    else:
        conditions.append(func.lower(ApiKey.prefix).like(like))
    return or_(*conditions)


def keys_query(q: str, state: str, now: datetime) -> Select[Any]:
    stmt = db.select(ApiKey).order_by(ApiKey.id.desc())
    if q:
        stmt = stmt.where(key_search_condition(q))
    if state in KEY_STATES:
        stmt = stmt.where(_key_state_condition(state, now))
    return stmt


def last_used(key_ids: list[int]) -> dict[int, datetime]:
    if not key_ids:
        return {}
    rows = db.session.execute(
        db.select(UsageRecord.api_key_id, func.max(UsageRecord.created_at))
        .where(UsageRecord.api_key_id.in_(key_ids))
        .group_by(UsageRecord.api_key_id)
    ).all()
    return dict(rows)


def paginate(stmt: Select[Any], page: int, per_page: int = PER_PAGE) -> Any:
    return db.paginate(stmt, page=max(page, 1), per_page=per_page, error_out=False, max_per_page=per_page)


def orders_query(status: str, q: str, now: datetime) -> Select[Any]:
    stmt = db.select(Order).order_by(Order.id.desc())
    if status == "attention":
        stmt = stmt.where(attention_condition(now))
    elif status == "refunded":
        stmt = stmt.where(Order.refunded_at.is_not(None))
    elif status:
        stmt = stmt.where(Order.status == status)
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(
            or_(
                func.lower(Order.email).like(like),
                Order.public_id.like(like),
                Order.paypal_order_id == q,
                Order.paypal_capture_id == q,
            )
        )
    return stmt


def order_statuses() -> list[str]:
    return sorted(db.session.execute(db.select(Order.status).distinct()).scalars())


def order_events(order: Order) -> list[WebhookEvent]:
    ids = [i for i in (order.paypal_order_id, order.paypal_capture_id) if i]
    if not ids:
        return []
    stmt = db.select(WebhookEvent).where(WebhookEvent.resource_id.in_(ids)).order_by(WebhookEvent.received_at)
    return list(db.session.execute(stmt).scalars())


@dataclass(frozen=True, slots=True)
class UsageFilters:
    key_id: int | None = None
    model: str = ""
    outcome: str = ""
    status: int | None = None
    date_from: date | None = None
    date_to: date | None = None  # inclusive


def resolve_key(reference: str) -> ApiKey | None:
    """The key a filter box names: a full key, an id, or a unique part of the prefix."""
    if not reference:
        return None
    if reference.isdigit():
        return db.session.get(ApiKey, int(reference))
    rows = db.session.execute(db.select(ApiKey).where(key_search_condition(reference)).limit(2)).scalars().all()
    return rows[0] if len(rows) == 1 else None


def usage_query(filters: UsageFilters) -> Select[Any]:
    stmt = db.select(UsageRecord).order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
    if filters.key_id is not None:
        stmt = stmt.where(UsageRecord.api_key_id == filters.key_id)
    if filters.model:
        stmt = stmt.where(UsageRecord.model == filters.model)
    if filters.outcome:
        stmt = stmt.where(UsageRecord.outcome == filters.outcome)
    if filters.status is not None:
        stmt = stmt.where(UsageRecord.status_code == filters.status)
    if filters.date_from:
        stmt = stmt.where(UsageRecord.created_at >= datetime.combine(filters.date_from, datetime.min.time()))
    if filters.date_to:
        end = datetime.combine(filters.date_to, datetime.min.time()) + timedelta(days=1)
        stmt = stmt.where(UsageRecord.created_at < end)
    return stmt


def key_prefixes(key_ids: set[int]) -> dict[int, str]:
    if not key_ids:
        return {}
    return dict(db.session.execute(db.select(ApiKey.id, ApiKey.prefix).where(ApiKey.id.in_(key_ids))).tuples().all())


def usage_totals(filters: UsageFilters) -> tuple[int, int]:
    """(requests, billed tokens) over everything the filters select."""
    sub = usage_query(filters).order_by(None).subquery()
    row = db.session.execute(db.select(func.count(), func.coalesce(func.sum(sub.c.billed_tokens), 0))).one()
    return int(row[0]), int(row[1])


def route_ids() -> list[str]:
    return sorted(db.session.execute(db.select(ModelRoute.public_id)).scalars())


def model_choices(extra: list[str] | None = None) -> list[tuple[str, str]]:
    """Every route, plus models a key or plan already lists that no route serves any more."""
    ids = set(route_ids()) | set(extra or ())
    return [(m, m) for m in sorted(ids)]


def audit_query(action: str = "") -> Select[Any]:
    stmt = db.select(AuditLog).order_by(AuditLog.id.desc())
    if action:
        stmt = stmt.where(AuditLog.action.like(f"{action}%"))
    return stmt
