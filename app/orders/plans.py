"""The packages on sale: the default seed and the queries the pages use."""

from __future__ import annotations

from typing import Any

from app.extensions import db
from app.models import ModelRoute, Plan
from app.models.multiplier import format_multiplier

# name, Chinese name, billed tokens, price in cents. The migration seeds the same row.
DEFAULT_PLANS: tuple[dict[str, Any], ...] = (
    {"name": "2M tokens", "name_zh": "200 万 tokens", "tokens": 2_000_000, "price_cents": 100, "sort_order": 10},
)


def seed_plans() -> int:
    """Insert each default plan whose name is not in the table yet. Idempotent; returns how many were added."""
    existing = set(db.session.execute(db.select(Plan.name)).scalars())
    added = 0
    for fields in DEFAULT_PLANS:
        if fields["name"] not in existing:
            db.session.add(Plan(currency="USD", active=True, **fields))
            added += 1
    db.session.commit()
    return added


def active_plans() -> list[Plan]:
    stmt = db.select(Plan).where(Plan.active).order_by(Plan.sort_order, Plan.price_cents, Plan.id)
    return list(db.session.execute(stmt).scalars())


def get_active_plan(plan_id: int) -> Plan | None:
    plan = db.session.get(Plan, plan_id)
    return plan if plan is not None and plan.active else None


def display_name(plan: Plan, locale: str) -> str:
    return plan.name_zh if locale.startswith("zh") and plan.name_zh else plan.name


def model_multipliers() -> dict[str, str]:
    """Public model id -> how many billed tokens one uncached token costs, as an exact decimal
    (the larger of its prompt and completion multipliers; cache hits cost less, see the statement)."""
    rows = db.session.execute(db.select(ModelRoute).where(ModelRoute.enabled)).scalars()
    return {r.public_id: format_multiplier(max(r.prompt_multiplier_e4, r.completion_multiplier_e4)) for r in rows}
