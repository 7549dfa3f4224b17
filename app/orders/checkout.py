"""Checkout: create the order and its PayPal order, capture after approval, apply PayPal's answer.

The price always comes from the plan row on the server; the browser only chooses a plan id.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass

from flask import current_app

from app.billing import key_lifecycle
from app.extensions import db
from app.models import ApiKey, Order, utcnow
from app.orders import fulfilment, lostkey, paypal
from app.orders.plans import display_name, get_active_plan
from app.orders.status import PAYABLE, OrderStatus
from app.site import site_url

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


class CheckoutError(Exception):
    """Something the buyer can act on. `code` picks the message shown on the page."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code  # plan | email | key | key_revoked | paypal | paypal_config


class AlreadyDone(Exception):
    """An operator action that would repeat one just done (by a racing click, webhook or link)."""


@dataclass(frozen=True, slots=True)
class Started:
    order: Order
    approve_url: str


def normalise_email(value: str) -> str:
    email = (value or "").strip()
    if len(email) > 254 or not _EMAIL.match(email):
        raise CheckoutError("email")
    return email


def _key_to_top_up(key_text: str) -> ApiKey:
    row = key_lifecycle.find_pasted_key(key_text)
    if row is None:
        raise CheckoutError("key")
    if row.status != "active":
        raise CheckoutError("key_revoked")
    return row


def start(
    plan_id: int, email: str, *, key_text: str | None = None, locale: str = "en", low_balance_alert: bool = False
) -> Started:
    """Record the order, then create it at PayPal. Raises CheckoutError; nothing is charged yet.
    `low_balance_alert`: the buyer asked for the low-balance email, turned on once paid."""
    plan = get_active_plan(plan_id)
    if plan is None:
        raise CheckoutError("plan")
    email = normalise_email(email)
    key = _key_to_top_up(key_text) if key_text is not None else None
    order = Order(
        public_id=uuid.uuid4().hex,
        kind="topup" if key else "new",
        plan_id=plan.id,
        email=email,
        api_key_id=key.id if key else None,
        tokens=plan.tokens,
        amount_cents=plan.price_cents,
        currency=plan.currency,
        status=OrderStatus.CREATED,
        locale=locale,
        site_url=site_url(),
        low_balance_alert=low_balance_alert,
    )
    db.session.add(order)
    db.session.commit()
    return Started(order, _create_at_paypal(order, display_name(plan, "en")))


def _create_at_paypal(order: Order, plan_name: str) -> str:
    base = site_url(order.site_url)
    try:
        created = paypal.create_order(
            reference=order.public_id,
            amount_cents=order.amount_cents,
            currency=order.currency,
            description=f"{current_app.config.get('APP_NAME', 'RelayGate')}: {plan_name}",
            return_url=f"{base}/checkout/return/{order.public_id}",
            cancel_url=f"{base}/checkout/cancel/{order.public_id}",
            locale="zh-CN" if order.locale == "zh" else "en-US",
            brand=current_app.config.get("APP_NAME", "RelayGate"),
        )
    except paypal.PayPalNotConfigured:
        fulfilment.mark(order.id, OrderStatus.FAILED, "PayPal is not configured")
        raise CheckoutError("paypal_config") from None
    except paypal.PayPalError as exc:
        log.warning("order %s: PayPal create failed: %s %s", order.public_id, exc.status, exc.name)
        fulfilment.mark(order.id, OrderStatus.FAILED, f"create failed: {exc.status} {exc.name} {exc.issue}")
        raise CheckoutError("paypal") from None
    if not created.approve_url:
        fulfilment.mark(order.id, OrderStatus.FAILED, "PayPal returned no approval link")
        raise CheckoutError("paypal")
    order.paypal_order_id = created.id
    db.session.commit()
    return created.approve_url


def capture(order: Order) -> str:
    """Capture an approved order (idempotent) and apply the result. Returns the order's new status.

    Raises paypal.PayPalUnavailable when PayPal cannot be reached: the caller retries later."""
    if order.status not in PAYABLE or not order.paypal_order_id:
        return order.status
    attempt = order.capture_attempts or 0
    try:
        result = paypal.capture_order(order.paypal_order_id, attempt)
    except paypal.PayPalError as exc:
        if isinstance(exc, paypal.PayPalUnavailable):
            raise
        return _capture_refused(order, exc, attempt)
    return apply_order(order, result, attempt)


def _capture_refused(order: Order, exc: paypal.PayPalError, attempt: int) -> str:
    if exc.issue == "ORDER_ALREADY_CAPTURED":
        # Captured by an earlier call whose answer we lost: read the capture instead.
        return apply_order(order, paypal.get_order(order.paypal_order_id or ""))
    if exc.issue in ("INSTRUMENT_DECLINED", "TRANSACTION_REFUSED", "PAYER_CANNOT_PAY"):
        _declined(order, f"capture refused: {exc.issue}", attempt)
    elif exc.issue == "ORDER_NOT_APPROVED":
        _next_attempt(order, attempt)  # not approved yet; PayPal may replay this answer to the same request id
    else:
        log.warning("order %s: capture failed: %s %s %s", order.public_id, exc.status, exc.name, exc.issue)
        fulfilment.mark(order.id, OrderStatus.FAILED, f"capture failed: {exc.status} {exc.name} {exc.issue}")
    return _status(order)


def apply_order(order: Order, result: paypal.PayPalOrder, attempt: int | None = None) -> str:
    """Bring our order in line with PayPal's view of it. `attempt` is given when `result` answers
    our own capture request with that attempt number (see _declined)."""
    if result.capture is not None:
        return apply_capture(order, result.capture, attempt)
    if result.status == "APPROVED":
        fulfilment.mark(order.id, OrderStatus.APPROVED, only_from=(OrderStatus.CREATED,))
    elif result.status == "VOIDED":
        fulfilment.mark(order.id, OrderStatus.CANCELLED, "voided at PayPal")
    return _status(order)


def apply_capture(order: Order, result: paypal.Capture, attempt: int | None = None) -> str:
    if result.status == "COMPLETED":
        fulfilment.fulfil(order.id, result)
    elif result.status == "PENDING":
        fulfilment.mark(order.id, OrderStatus.PENDING, f"PayPal holds the payment: {result.reason or 'pending'}")
    elif result.status in ("DECLINED", "FAILED"):
        _declined(order, f"capture {result.status.lower()}", attempt)
    return _status(order)


def _declined(order: Order, note: str, attempt: int | None) -> None:
    """Decline the order and move to the next capture attempt, once per declined capture. The
    answer to our capture request `attempt` counts once however often it is replayed (the
    return page reloaded, a racing webhook); a decline reported by PayPal (a webhook, the
    reconciler: attempt None) counts only if it finds the order not declined yet."""
    stmt = db.update(Order).where(Order.id == order.id)
    if attempt is None:
        stmt = stmt.where(Order.status.in_([s for s in PAYABLE if s != OrderStatus.DECLINED]))
    else:
        stmt = stmt.where(Order.status.in_(PAYABLE), Order.capture_attempts == attempt)
    values = {"status": OrderStatus.DECLINED, "note": note[:500], "updated_at": utcnow()}
    db.session.execute(stmt.values(capture_attempts=Order.capture_attempts + 1, **values))
    db.session.commit()


def _next_attempt(order: Order, attempt: int) -> None:
    """The next capture is a new request: PayPal answers a repeated PayPal-Request-Id with the
    stored answer, and a refused capture must not be replayed once the buyer has fixed things.
    Conditional on `attempt`, so racing copies of one answer move to the next attempt once."""
    stmt = db.update(Order).where(Order.id == order.id, Order.capture_attempts == attempt)
    db.session.execute(stmt.values(capture_attempts=attempt + 1))
    db.session.commit()


def cancel(order: Order) -> str:
    """The buyer came back through PayPal's cancel link. A payment arriving later still counts."""
    fulfilment.mark(order.id, OrderStatus.CANCELLED, only_from=(OrderStatus.CREATED, OrderStatus.APPROVED))
    return _status(order)


def _status(order: Order) -> str:
    db.session.refresh(order)
    return order.status


# -- operator actions (the admin dashboard calls these) ------------------------------------------


def fulfil_order(order_id: int) -> Order:
    """Complete an order by hand after checking the payment at PayPal. Returns the order this call
    completed; raises AlreadyDone when it was not completable (fulfilled already, perhaps by a
    racing click or webhook, or refunded), and then nothing changed."""
    done = fulfilment.fulfil_by_hand(order_id)
    order = db.session.get(Order, order_id, populate_existing=True)
    if order is None:
        raise LookupError(f"no order {order_id}")
    if not done:
        raise AlreadyDone(f"the order is {order.status}; nothing was delivered again")
    return order


def replace_order_key(order_id: int) -> None:
    """Give the order's key a new secret and email it to the purchase address; the old key stops
    working. Raises AlreadyDone for a repeat within lostkey.RESEND_SECONDS (a double click, a
    resubmitted form) or after a racing lost-key link: one new key and one email, not one per click."""
    order = db.session.get(Order, order_id)
    key = db.session.get(ApiKey, order.api_key_id) if order and order.api_key_id else None
    if order is None or key is None:
        raise LookupError(f"order {order_id} has no key")
    if not lostkey.claim_resend(key.id):
        raise AlreadyDone(f"a replacement key was sent less than {lostkey.RESEND_SECONDS} seconds ago")
    if not lostkey.replace(key, order.locale):
        raise AlreadyDone("the key was replaced meanwhile (a lost-key link), and that new key was emailed")
