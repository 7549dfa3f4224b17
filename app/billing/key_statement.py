"""A key's own statement: where its tokens went (per day and model, request by request, each with the
arithmetic that turned its token counts into its charge) and what changed its quota (purchases,
top-ups, refunds). Read-only; the page, the CSV and GET /api/key/usage all come from here.

The arithmetic uses the multipliers each request was billed at, kept on its usage record; a record
written before they were kept is worked with the model's multipliers as they are now. A charge that
does not match says so (the multipliers changed since, or the request was cut at its hold) rather
than showing a sum that does not add up.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func

from app.billing import pricing
from app.billing.pricing import Multipliers, TokenCounts
from app.extensions import db
from app.models import AuditLog, ModelRoute, Order, UsageRecord
from app.models.base import utcnow
from app.models.multiplier import UNIT, format_multiplier
from app.models.order import Refund

MAX_DAYS = 90
PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Charge:
    """One request's counts and the charge that came of them."""

    prompt: int
    cache_hit: int
    completion: int
    reasoning: int
    billed: int
    multipliers: Multipliers

    @property
    def cache_miss(self) -> int:
        return max(0, self.prompt - self.cache_hit)

    @property
    def counts(self) -> TokenCounts:
        return TokenCounts(prompt=self.prompt, cache_hit=self.cache_hit, completion=self.completion)

    @property
    def expected(self) -> int:
        return pricing.billed_tokens(self.counts, self.multipliers)

    @property
    def exact(self) -> str:
        """The sum before its one round-up, as an exact decimal ("1,880.5")."""
        return format_multiplier(pricing.billed_units(self.counts, self.multipliers), thousands=True)

    @property
    def adds_up(self) -> bool:
        return self.expected == self.billed

    def formula(self) -> str:
        """`200 × 1 + 1,000 × 0.02 + 350 × 2 = 920`: cache-miss prompt, cache-hit prompt and
        completion (reasoning included) times their multipliers; a fractional sum is rounded up
        once, shown as `= 110.66 → 111`."""
        m = self.multipliers
        parts = " + ".join(
            f"{tokens:,} × {format_multiplier(multiplier)}"
            for tokens, multiplier in (
                (self.cache_miss, m.prompt),
                (self.cache_hit, m.cache_hit),
                (self.completion, m.completion),
            )
        )
        if pricing.billed_units(self.counts, m) % UNIT == 0:
            return f"{parts} = {self.expected:,}"
        return f"{parts} = {self.exact} → {self.expected:,}"


@dataclass(frozen=True, slots=True)
class RequestLine:
    created_at: datetime
    model: str
    stream: bool
    outcome: str
    status_code: int
    charge: Charge


@dataclass(frozen=True, slots=True)
class DayTotal:
    day: date
    model: str
    requests: int
    billed: int


@dataclass(frozen=True, slots=True)
class QuotaChange:
    at: datetime
    kind: str  # purchase | topup | refund | reversal | issued | admin_topup
    tokens: int  # signed
    reference: str


def days_window(days: object, default: int = 30) -> int:
    """The number of days asked for, as a whole number from 1 to MAX_DAYS; anything else is the default."""
    try:
        value = int(str(days))
    except (TypeError, ValueError):
        return default
    return min(max(value, 1), MAX_DAYS)


def daily_totals(key_id: int, days: int, now: datetime | None = None) -> list[DayTotal]:
    first = (now or utcnow()).date() - timedelta(days=days - 1)
    day = func.date(UsageRecord.created_at)
    stmt = (
        db.select(day, UsageRecord.model, func.count(), func.coalesce(func.sum(UsageRecord.billed_tokens), 0))
        .where(UsageRecord.api_key_id == key_id, UsageRecord.created_at >= datetime.combine(first, datetime.min.time()))
        .group_by(day, UsageRecord.model)
        .order_by(day, UsageRecord.model)
    )
    return [DayTotal(_as_date(d), model, int(n), int(billed)) for d, model, n, billed in db.session.execute(stmt)]


def requests_page(key_id: int, page: int = 1, per_page: int = PAGE_SIZE) -> tuple[list[RequestLine], bool]:
    """One page of the key's requests, newest first, and whether an older page exists."""
    page = max(1, page)
    stmt = (
        db.select(UsageRecord)
        .where(UsageRecord.api_key_id == key_id)
        .order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page + 1)
    )
    rows = list(db.session.execute(stmt).scalars())
    multipliers = current_multipliers()
    lines = [_line(row, multipliers.get(row.model, Multipliers())) for row in rows[:per_page]]
    return lines, len(rows) > per_page


def all_requests(key_id: int, batch: int = 1000) -> Iterable[RequestLine]:
    multipliers = current_multipliers()
    last_id = None
    while True:
        stmt = db.select(UsageRecord).where(UsageRecord.api_key_id == key_id).order_by(UsageRecord.id).limit(batch)
        if last_id is not None:
            stmt = stmt.where(UsageRecord.id > last_id)
        rows = list(db.session.execute(stmt).scalars())
        if not rows:
            return
        for row in rows:
            yield _line(row, multipliers.get(row.model, Multipliers()))
        last_id = rows[-1].id


def quota_changes(key_id: int) -> list[QuotaChange]:
    """Purchases and top-ups paid for, refunds and reversals that took tokens back, and what an
    operator issued or added, oldest first."""
    changes: list[QuotaChange] = []
    paid = db.select(Order).where(Order.api_key_id == key_id, Order.fulfilled_at.is_not(None))
    for order in db.session.execute(paid).scalars():
        kind = "topup" if order.kind == "topup" else "purchase"
        changes.append(QuotaChange(order.fulfilled_at, kind, order.tokens, f"order {order.public_id[:8]}"))
    refunds = (
        db.select(Refund, Order.public_id).join(Order, Refund.order_id == Order.id).where(Order.api_key_id == key_id)
    )
    for refund, public_id in db.session.execute(refunds):
        kind = "reversal" if refund.kind == "reversed" else "refund"
        changes.append(QuotaChange(refund.created_at, kind, -refund.tokens_taken, f"order {public_id[:8]}"))
    operator = db.select(AuditLog).where(AuditLog.target == f"key:{key_id}", AuditLog.action.in_(_OPERATOR_ACTIONS))
    for entry in db.session.execute(operator).scalars():
        tokens = int((entry.details or {}).get("tokens") or 0)
        if tokens:
            reference = (entry.details or {}).get("code") or "operator"
            changes.append(QuotaChange(entry.created_at, _OPERATOR_ACTIONS[entry.action], tokens, reference))
    return sorted(changes, key=lambda change: change.at)


_OPERATOR_ACTIONS = {"key.create": "issued", "key.topup": "admin_topup", "giftcode.redeem": "gift_code"}

CSV_FIELDS = (
    "time_utc",
    "kind",
    "model",
    "prompt_tokens",
    "cache_hit_tokens",
    "cache_miss_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "billed_tokens",
    "quota_change",
    "outcome",
    "reference",
    "formula",  # how billed_tokens came of the counts (empty when the charge does not match today's multipliers)
)


def csv_text(key_id: int) -> str:
    """Every request and every quota change of the key, oldest first, one CSV."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    rows: list[tuple[datetime, list[object]]] = []
    for line in all_requests(key_id):
        c = line.charge
        rows.append(
            (
                line.created_at,
                [
                    iso(line.created_at),
                    "request",
                    line.model,
                    c.prompt,
                    c.cache_hit,
                    c.cache_miss,
                    c.completion,
                    c.reasoning,
                    c.billed,
                    "",
                    line.outcome,
                    "",
                    c.formula() if c.adds_up else "",
                ],
            )
        )
    for change in quota_changes(key_id):
        rows.append(
            (
                change.at,
                [iso(change.at), change.kind, "", "", "", "", "", "", "", change.tokens, "", change.reference, ""],
            )
        )
    for _, row in sorted(rows, key=lambda item: item[0]):
        writer.writerow(row)
    return out.getvalue()


def current_multipliers() -> dict[str, Multipliers]:
    rows = db.session.execute(
        db.select(
            ModelRoute.public_id,
            ModelRoute.prompt_multiplier_e4,
            ModelRoute.cache_hit_multiplier_e4,
            ModelRoute.completion_multiplier_e4,
        )
    )
    return {public_id: Multipliers(prompt, hit, completion) for public_id, prompt, hit, completion in rows}


def billed_at(row: UsageRecord, current: Multipliers) -> Multipliers:
    """The multipliers the record was billed at, or `current` for a record that does not say."""
    kept = (row.prompt_multiplier_e4, row.cache_hit_multiplier_e4, row.completion_multiplier_e4)
    if any(value is None for value in kept):
        return current
    return Multipliers(*kept)


def _line(row: UsageRecord, multipliers: Multipliers) -> RequestLine:
    multipliers = billed_at(row, multipliers)
    charge = Charge(
        prompt=row.prompt_tokens,
        cache_hit=min(row.cached_tokens or 0, row.prompt_tokens),
        completion=row.completion_tokens,
        reasoning=row.reasoning_tokens or 0,
        billed=row.billed_tokens,
        multipliers=multipliers,
    )
    return RequestLine(row.created_at, row.model, bool(row.stream), row.outcome, row.status_code, charge)


def _as_date(value: object) -> date:
    # SQLite's date() gives a string, PostgreSQL's a date.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
