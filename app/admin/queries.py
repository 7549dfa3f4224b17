"""Read-only numbers for the overview: rates, totals and time series. All times are naive UTC.

Time buckets are formatted as strings in SQL (strftime on SQLite, to_char on PostgreSQL) so that
grouping happens in the database and both dialects give the same labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_

from app.extensions import db
from app.models import ApiKey, ModelRoute, Order, RouteTarget, Upstream, UsageRecord
from app.orders.status import OrderStatus

ERROR_OUTCOMES = ("upstream_error", "timeout")
DISCONNECT = "client_closed"

_SQLITE_FORMATS = {"minute": "%Y-%m-%d %H:%M", "hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d"}
_PG_FORMATS = {"minute": "YYYY-MM-DD HH24:MI", "hour": "YYYY-MM-DD HH24:00", "day": "YYYY-MM-DD"}
_STEPS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def bucket_label(moment: datetime, unit: str) -> str:
    return moment.strftime(_SQLITE_FORMATS[unit])


def _bucket(column: Any, unit: str) -> ColumnElement[str]:
    if db.engine.dialect.name == "postgresql":
        return func.to_char(column, _PG_FORMATS[unit])
    return func.strftime(_SQLITE_FORMATS[unit], column)


def truncate(moment: datetime, unit: str) -> datetime:
    if unit == "minute":
        return moment.replace(second=0, microsecond=0)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_range(now: datetime, unit: str, count: int) -> list[datetime]:
    """The `count` bucket starts ending with the one that holds `now`, oldest first."""
    last = truncate(now, unit)
    return [last - _STEPS[unit] * i for i in range(count - 1, -1, -1)]


@dataclass(frozen=True, slots=True)
class Rates:
    requests: int
    errors: int
    disconnects: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def disconnect_rate(self) -> float:
        return self.disconnects / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Overview:
    requests_per_minute: float  # mean over the last five minutes
    tokens_today: int
    tokens_month: int
    requests_today: int
    revenue_today: dict[str, int]  # currency -> cents
    revenue_month: dict[str, int]
    refunds_month: dict[str, int]
    active_keys: int
    keys_used_today: int
    last_day: Rates
    orders_needing_attention: int


def start_of_day(now: datetime) -> datetime:
    return truncate(now, "day")


def start_of_month(now: datetime) -> datetime:
    return truncate(now, "day").replace(day=1)


def _counts(since: datetime) -> Rates:
    errors = func.sum(case((UsageRecord.outcome.in_(ERROR_OUTCOMES), 1), else_=0))
    disconnects = func.sum(case((UsageRecord.outcome == DISCONNECT, 1), else_=0))
    row = db.session.execute(
        db.select(func.count(UsageRecord.id), errors, disconnects).where(UsageRecord.created_at >= since)
    ).one()
    return Rates(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0))


def _billed_since(since: datetime) -> tuple[int, int]:
    row = db.session.execute(
        db.select(func.coalesce(func.sum(UsageRecord.billed_tokens), 0), func.count(UsageRecord.id)).where(
            UsageRecord.created_at >= since
        )
    ).one()
    return int(row[0]), int(row[1])


def _money_by_currency(column: Any, since: datetime) -> dict[str, int]:
    rows = db.session.execute(
        db.select(Order.currency, func.sum(Order.amount_cents)).where(column >= since).group_by(Order.currency)
    ).all()
    return {currency: int(total or 0) for currency, total in rows}


def paid_at() -> ColumnElement[datetime]:
    """When an order's money arrived (fulfilment time for orders that never recorded a payment time)."""
    return func.coalesce(Order.paid_at, Order.fulfilled_at)


def active_key_condition(now: datetime) -> ColumnElement[bool]:
    return and_(
        ApiKey.status == "active",
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        ApiKey.tokens_used < ApiKey.tokens_quota,
    )


STALL_AFTER = timedelta(minutes=15)


def attention_condition(now: datetime) -> ColumnElement[bool]:
    """Orders an operator should look at: paid but not delivered, held for review, or stuck at
    PayPal (approved or pending) for longer than the buyer's checkout could take."""
    return or_(
        and_(Order.paid_at.is_not(None), Order.fulfilled_at.is_(None), Order.refunded_at.is_(None)),
        Order.status == OrderStatus.REVIEW,
        and_(Order.status.in_((OrderStatus.APPROVED, OrderStatus.PENDING)), Order.updated_at < now - STALL_AFTER),
    )


def overview(now: datetime) -> Overview:
    today, month = start_of_day(now), start_of_month(now)
    tokens_today, requests_today = _billed_since(today)
    recent = _counts(now - timedelta(minutes=5)).requests
    active = db.session.scalar(db.select(func.count(ApiKey.id)).where(active_key_condition(now)))
    used_today = db.session.scalar(
        db.select(func.count(func.distinct(UsageRecord.api_key_id))).where(UsageRecord.created_at >= today)
    )
    waiting = db.session.scalar(db.select(func.count(Order.id)).where(attention_condition(now)))
    return Overview(
        requests_per_minute=recent / 5,
        tokens_today=tokens_today,
        tokens_month=_billed_since(month)[0],
        requests_today=requests_today,
        revenue_today=_money_by_currency(paid_at(), today),
        revenue_month=_money_by_currency(paid_at(), month),
        refunds_month=_money_by_currency(Order.refunded_at, month),
        active_keys=int(active or 0),
        keys_used_today=int(used_today or 0),
        last_day=_counts(now - timedelta(hours=24)),
        orders_needing_attention=int(waiting or 0),
    )


def _fill(buckets: list[datetime], unit: str, rows: Iterable[Any], width: int) -> list[tuple[datetime, ...]]:
    found = {row[0]: tuple(int(v or 0) for v in row[1:]) for row in rows}
    zero = (0,) * width
    return [(start, *found.get(bucket_label(start, unit), zero)) for start in buckets]


def requests_series(now: datetime, unit: str, count: int, key_id: int | None = None) -> list[tuple[datetime, ...]]:
    """Per bucket: (start, requests, ok, disconnects, errors, billed tokens)."""
    buckets = bucket_range(now, unit, count)
    label = _bucket(UsageRecord.created_at, unit)
    stmt = (
        db.select(
            label,
            func.count(UsageRecord.id),
            func.sum(case((UsageRecord.outcome == "done", 1), else_=0)),
            func.sum(case((UsageRecord.outcome == DISCONNECT, 1), else_=0)),
            func.sum(case((UsageRecord.outcome.in_(ERROR_OUTCOMES), 1), else_=0)),
            func.sum(UsageRecord.billed_tokens),
        )
        .where(UsageRecord.created_at >= buckets[0])
        .group_by(label)
    )
    if key_id is not None:
        stmt = stmt.where(UsageRecord.api_key_id == key_id)
    return _fill(buckets, unit, db.session.execute(stmt).all(), 5)


def revenue_series(now: datetime, days: int, currency: str) -> list[tuple[datetime, ...]]:
    buckets = bucket_range(now, "day", days)
    label = _bucket(paid_at(), "day")
    stmt = (
        db.select(label, func.sum(Order.amount_cents))
        .where(paid_at() >= buckets[0], Order.currency == currency)
        .group_by(label)
    )
    return _fill(buckets, "day", db.session.execute(stmt).all(), 1)


@dataclass(frozen=True, slots=True)
class UpstreamHealth:
    upstream: Upstream
    routes: int
    rates: Rates
    avg_ttft_ms: int | None
    avg_latency_ms: int | None

    @property
    def state(self) -> str:
        """ok | degraded | failing | idle | disabled, from the last hour of traffic."""
        if not self.upstream.enabled:
            return "disabled"
        if not self.rates.requests:
            return "idle"
        if self.rates.error_rate >= 0.5:
            return "failing"
        return "degraded" if self.rates.error_rate >= 0.05 else "ok"


def upstream_health(now: datetime, window: timedelta = timedelta(hours=1)) -> list[UpstreamHealth]:
    """Traffic per upstream, attributing each usage record through its public model's current route."""
    stats = (
        db.select(
            ModelRoute.upstream_id,
            func.count(UsageRecord.id),
            func.sum(case((UsageRecord.outcome.in_(ERROR_OUTCOMES), 1), else_=0)),
            func.sum(case((UsageRecord.outcome == DISCONNECT, 1), else_=0)),
            func.avg(UsageRecord.ttft_ms),
            func.avg(UsageRecord.latency_ms),
        )
        .join(ModelRoute, ModelRoute.public_id == UsageRecord.model)
        .where(UsageRecord.created_at >= now - window)
        .group_by(ModelRoute.upstream_id)
    )
    by_upstream = {row[0]: row[1:] for row in db.session.execute(stats).all()}
    # Every model an account serves, as any target of its pool, not only as the first one.
    route_counts = dict(
        db.session.execute(
            db.select(RouteTarget.upstream_id, func.count(RouteTarget.id)).group_by(RouteTarget.upstream_id)
        )
        .tuples()
        .all()
    )
    result = []
    for upstream in db.session.execute(db.select(Upstream).order_by(Upstream.id)).scalars():
        count, errors, gone, ttft, latency = by_upstream.get(upstream.id, (0, 0, 0, None, None))
        result.append(
            UpstreamHealth(
                upstream=upstream,
                routes=int(route_counts.get(upstream.id, 0)),
                rates=Rates(int(count or 0), int(errors or 0), int(gone or 0)),
                avg_ttft_ms=int(ttft) if ttft is not None else None,
                avg_latency_ms=int(latency) if latency is not None else None,
            )
        )
    return result


def upstream_alerts() -> list[Upstream]:
    """Switched-on upstream accounts the gateway took out, or below their low-balance threshold."""
    low = and_(Upstream.balance_cents.is_not(None), Upstream.balance_cents < Upstream.low_balance_cents)
    stmt = db.select(Upstream).where(Upstream.enabled, or_(Upstream.status == "disabled", low)).order_by(Upstream.id)
    return list(db.session.execute(stmt).scalars())


def model_breakdown(since: datetime, key_id: int | None = None) -> list[tuple[str, int, int]]:
    """(public model, requests, billed tokens) since a moment, busiest first; one key's or everyone's."""
    stmt = (
        db.select(UsageRecord.model, func.count(UsageRecord.id), func.sum(UsageRecord.billed_tokens))
        .where(UsageRecord.created_at >= since)
        .group_by(UsageRecord.model)
        .order_by(func.sum(UsageRecord.billed_tokens).desc())
    )
    if key_id is not None:
        stmt = stmt.where(UsageRecord.api_key_id == key_id)
    rows = db.session.execute(stmt).all()
    return [(model, int(n), int(tokens or 0)) for model, n, tokens in rows]


@dataclass(frozen=True, slots=True)
class CacheHits:
    """Prompt tokens and the part of them DeepSeek served from its cache (billed at the route's
    cache-hit multiplier), for one model or, with model None, all of them."""

    model: str | None
    prompt: int
    cache_hit: int


def cache_hits(since: datetime) -> list[CacheHits]:
    """All models first, then each model by name; requests without an upstream count have no hits."""
    stmt = (
        db.select(UsageRecord.model, func.sum(UsageRecord.prompt_tokens), func.sum(UsageRecord.cached_tokens))
        .where(UsageRecord.created_at >= since)
        .group_by(UsageRecord.model)
        .order_by(UsageRecord.model)
    )
    per_model = [CacheHits(model, int(p or 0), int(h or 0)) for model, p, h in db.session.execute(stmt).all()]
    overall = CacheHits(None, sum(c.prompt for c in per_model), sum(c.cache_hit for c in per_model))
    return [overall, *per_model]
