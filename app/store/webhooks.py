"""PayPal webhook events: stored under their unique id on receipt, processed by a worker task.

Processing is idempotent: a duplicate delivery finds the event already stored; a task that runs
twice finds the order already moved (fulfilment's conditional updates).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.billing import accounts
from app.extensions import db
from app.models import ApiKey, Order, WebhookEvent, utcnow
from app.store import checkout, fulfilment, paypal

log = logging.getLogger(__name__)


def store_event(event: dict[str, Any]) -> tuple[int, bool]:
    """Insert the event once. Returns its row id and whether a task should be queued for it
    (new, or stored earlier but not processed yet: the earlier task may have been lost)."""
    row = WebhookEvent(
        event_id=str(event["id"])[:64],
        event_type=str(event.get("event_type") or "")[:64],
        resource_id=str((event.get("resource") or {}).get("id") or "")[:64] or None,
        payload=event,
    )
    db.session.add(row)
    try:
        db.session.commit()
        return row.id, True
    except IntegrityError:
        db.session.rollback()
    existing = db.session.execute(db.select(WebhookEvent).filter_by(event_id=row.event_id)).scalar_one()
    return existing.id, existing.status in ("received", "failed")


def process_event(row_id: int) -> str:
    """Apply one stored event. Raises paypal.PayPalUnavailable so that the task retries later."""
    row = db.session.get(WebhookEvent, row_id)
    if row is None or row.status in ("processed", "ignored"):
        return row.status if row else "missing"
    handler = HANDLERS.get(row.event_type)
    resource = (row.payload or {}).get("resource") or {}
    try:
        outcome = handler(resource, row) if handler else "ignored"
    except paypal.PayPalUnavailable:
        raise
    except Exception as exc:
        db.session.rollback()
        log.exception("webhook %s (%s) failed", row.event_id, row.event_type)
        outcome, row.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    row = db.session.get(WebhookEvent, row_id)
    row.status, row.processed_at = outcome, utcnow()
    db.session.commit()
    return outcome


def _order_by(column: Any, value: Any) -> Order | None:
    if not value:
        return None
    return db.session.execute(db.select(Order).where(column == str(value))).scalar_one_or_none()


def find_order(resource: dict[str, Any]) -> Order | None:
    """The order a capture or refund resource belongs to: by PayPal order id, our custom_id, or capture id."""
    related = ((resource.get("supplementary_data") or {}).get("related_ids")) or {}
    up = next((link.get("href", "") for link in resource.get("links") or () if link.get("rel") == "up"), "")
    capture_id = up.rstrip("/").rsplit("/", 1)[-1] if "/captures/" in up else None
    return (
        _order_by(Order.paypal_order_id, related.get("order_id"))
        or _order_by(Order.public_id, resource.get("custom_id"))
        or _order_by(Order.paypal_capture_id, capture_id)
    )


def _order_approved(resource: dict[str, Any], row: WebhookEvent) -> str:
    order = _order_by(Order.paypal_order_id, resource.get("id"))
    if order is None:
        return "ignored"
    checkout.capture(order)
    return "processed"


def _capture_changed(resource: dict[str, Any], row: WebhookEvent) -> str:
    order = find_order(resource)
    if order is None:
        return "ignored"
    capture = paypal.parse_capture(resource)
    if capture.status in ("DECLINED", "FAILED") and order.status in fulfilment.PAID:
        _flag(order, f"PayPal reported capture {capture.id} {capture.status} after fulfilment")
        return "processed"
    checkout.apply_capture(order, capture)
    return "processed"


def _approval_reversed(resource: dict[str, Any], row: WebhookEvent) -> str:
    order = _order_by(Order.paypal_order_id, resource.get("order_id") or resource.get("id"))
    if order is None:
        return "ignored"
    fulfilment.mark(order.id, "cancelled", "PayPal reversed the approval before capture")
    return "processed"


def _refunded(resource: dict[str, Any], row: WebhookEvent) -> str:
    order = find_order(resource)
    if order is None:
        return "ignored"
    if _refund_seen(row):
        return "ignored"
    kind = "reversed" if row.event_type.endswith("REVERSED") else "refunded"
    refund_cents = paypal.parse_amount((resource.get("amount") or {}).get("value") or "0") or order.amount_cents
    if order.status not in fulfilment.PAID:
        fulfilment.mark(order.id, kind, f"{kind} before fulfilment")
        _flag(order, f"{kind} before fulfilment")
        return "processed"
    _take_back(order, kind, refund_cents)
    return "processed"


def _refund_seen(row: WebhookEvent) -> bool:
    """One refund can come as both REFUNDED and REVERSED events; take its tokens back once."""
    if not row.resource_id:
        return False
    other = db.session.execute(
        db.select(WebhookEvent.id).where(
            WebhookEvent.resource_id == row.resource_id,
            WebhookEvent.id != row.id,
            WebhookEvent.event_type.in_(("PAYMENT.CAPTURE.REFUNDED", "PAYMENT.CAPTURE.REVERSED")),
            WebhookEvent.status == "processed",
        )
    ).first()
    return other is not None


def _take_back(order: Order, kind: str, refund_cents: int) -> None:
    share = order.tokens if refund_cents >= order.amount_cents else order.tokens * refund_cents // order.amount_cents
    wanted = max(0, min(share, order.tokens - order.tokens_revoked))
    key = db.session.get(ApiKey, order.api_key_id) if order.api_key_id else None
    taken = accounts.take_back_tokens(key, wanted) if key is not None else 0
    order = db.session.get(Order, order.id, populate_existing=True)
    order.tokens_revoked = Order.tokens_revoked + taken
    order.status, order.refunded_at, order.flagged = kind, utcnow(), True
    note = f"{kind} {refund_cents / 100:.2f} {order.currency}: took back {taken:,} of {wanted:,} tokens"
    if taken < wanted:
        note += f" ({wanted - taken:,} already used)"
    order.note = note[:500]
    db.session.commit()
    log.warning("order %s %s: took back %s of %s tokens", order.public_id, kind, taken, wanted)


def _flag(order: Order, note: str) -> None:
    db.session.execute(db.update(Order).where(Order.id == order.id).values(flagged=True, note=note[:500]))
    db.session.commit()


HANDLERS: dict[str, Callable[[dict[str, Any], WebhookEvent], str]] = {
    "CHECKOUT.ORDER.APPROVED": _order_approved,
    "PAYMENT.CAPTURE.COMPLETED": _capture_changed,
    "PAYMENT.CAPTURE.PENDING": _capture_changed,
    "PAYMENT.CAPTURE.DENIED": _capture_changed,
    "PAYMENT.CAPTURE.DECLINED": _capture_changed,
    "PAYMENT.CAPTURE.REFUNDED": _refunded,
    "PAYMENT.CAPTURE.REVERSED": _refunded,
    "CHECKOUT.PAYMENT-APPROVAL.REVERSED": _approval_reversed,
}
