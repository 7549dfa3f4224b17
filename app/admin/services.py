"""Admin-side changes that have no home in billing: plans, upstream checks, order actions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from flask import current_app

from app.extensions import db, get_redis
from app.models import Order, Plan, Upstream, utcnow
from app.orders import checkout
from app.relay.account import AccountBalance, AccountCheck, check_account
from app.relay.demo import is_demo
from app.routing import catalog

CHECK_TTL = 7 * 86400


# -- plans --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanData:
    name: str
    name_zh: str
    tokens: int
    price_cents: int
    currency: str
    models: list[str] | None
    rpm: int | None
    valid_days: int | None
    sort_order: int
    active: bool


def save_plan(plan: Plan | None, data: PlanData) -> Plan:
    """Create (plan=None) or change a plan in one commit. Orders keep the tokens and price they were sold at."""
    if data.tokens <= 0 or data.price_cents <= 0:
        raise ValueError("tokens and price must be positive")
    if plan is None:
        plan = Plan()
        db.session.add(plan)
    for field, value in asdict(data).items():
        setattr(plan, field, value)
    db.session.commit()
    return plan


def set_plan_active(plan: Plan, active: bool) -> Plan:
    """Retire (off sale; kept for its orders) or put back on sale."""
    plan.active = active
    db.session.commit()
    return plan


# -- upstream checks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredCheck:
    check: AccountCheck
    checked_at: datetime


def _check_key(upstream_id: int) -> str:
    return f"{current_app.config['BILLING_REDIS_PREFIX']}:admin:upcheck:{upstream_id}"


def test_upstream(upstream: Upstream) -> AccountCheck:
    """Models and balance from the upstream itself; the result is kept for the overview."""
    try:
        secret = catalog.upstream_api_key(upstream)
    except ValueError as exc:
        result = AccountCheck(ok=False, latency_ms=0, error=str(exc))
    else:
        if is_demo(upstream.base_url, secret):
            result = AccountCheck(ok=False, latency_ms=0, error="demo mode: no API key, replies are canned")
        else:
            pool = current_app.extensions["account_pool"]
            result = check_account(pool, upstream.base_url, secret or "", current_app.config["ADMIN_UPSTREAM_TIMEOUT"])
    payload = {**asdict(result), "checked_at": utcnow().isoformat()}
    get_redis().set(_check_key(upstream.id), json.dumps(payload), ex=CHECK_TTL)
    return result


def last_check(upstream_id: int) -> StoredCheck | None:
    raw = get_redis().get(_check_key(upstream_id))
    if raw is None:
        return None
    data: dict[str, Any] = json.loads(raw)
    checked_at = datetime.fromisoformat(data.pop("checked_at"))
    data["models"] = tuple(data.get("models") or ())
    data["balances"] = tuple(AccountBalance(**b) for b in data.get("balances") or ())
    return StoredCheck(AccountCheck(**data), checked_at)


def forget_check(upstream_id: int) -> None:
    """A changed URL or key makes the old result meaningless."""
    get_redis().delete(_check_key(upstream_id))


# -- order actions --------------------------------------------------------------------------------
# Each takes effect once however many times it is called at once (a double click, two operators,
# a racing webhook): the calls that find it done raise, with a message for the operator.


def can_complete(order: Order) -> bool:
    """Not delivered, not refunded, and it reached PayPal (so the buyer may have paid)."""
    return order.fulfilled_at is None and order.refunded_at is None and order.paypal_order_id is not None


def can_resend(order: Order) -> bool:
    return order.kind == "new" and order.fulfilled_at is not None and order.api_key_id is not None


def complete_order(order_id: int) -> Order:
    """Fulfil a paid order by hand (webhook and return page both lost). Exactly once, in the
    order domain: returns the order only to the call that fulfilled it, and raises for the others."""
    return checkout.fulfil_order(order_id)


def resend_key(order_id: int) -> None:
    """Replace the order's key and email the new one to the buyer (the old one stops working).
    A repeat within a minute (a double click, a resubmitted form) raises instead: one new key, one email."""
    checkout.replace_order_key(order_id)
