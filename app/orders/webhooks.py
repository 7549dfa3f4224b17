"""PayPal webhook events: checked, stored under their unique id on receipt, processed by a worker task.

Exactly once, however many times and however concurrently an event arrives:
- a duplicate delivery finds the event already stored, and queues a task only if the event failed
  or its task was lost (one task per event, not one per delivery);
- a task claims the event (a conditional UPDATE to "processing") before running its handler, so
  of several copies of the task only the claimer runs it; a claim older than CLAIM_LEASE belongs
  to a worker that died, and the next copy (or the reconciler's requeue) takes it over;
- each handler's effect is keyed, so a second run finds it done: fulfilment and declines are
  conditional updates on the order, a refund is a unique row per PayPal refund id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Order, WebhookEvent, utcnow
from app.orders import checkout, fulfilment, paypal
from app.orders.status import PAID, OrderStatus

log = logging.getLogger(__name__)

# Longer than any handler takes (a PayPal call times out after PAYPAL_TIMEOUT).
CLAIM_LEASE = timedelta(minutes=5)
# A stored event whose task has not started by then was lost with its message.
LOST_AFTER = timedelta(minutes=10)
_MAX_ID = 64  # the id columns' width: a longer id would be cut and could collide with another


class BadEvent(ValueError):
    """A webhook body that is not a PayPal event we can store. The message says what is wrong."""


def parse_event(raw: bytes) -> dict[str, Any]:
    """The event in a webhook body. Raises BadEvent for anything but a JSON object with string
    `id` and `event_type`, and an object `resource` whose `id`, if any, is a string."""
    try:
        event = json.loads(raw.decode("utf-8"))  # verification embeds the body as UTF-8 text
    except ValueError:
        raise BadEvent("the body is not JSON in UTF-8") from None
    if not isinstance(event, dict):
        raise BadEvent("the body is not a JSON object")
    _check_id(event.get("id"), "id")
    _check_id(event.get("event_type"), "event_type")
    if not isinstance(event.get("resource"), dict):
        raise BadEvent("resource must be an object")
    if event["resource"].get("id") is not None:
        _check_id(event["resource"]["id"], "resource.id")
    return event


def _check_id(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise BadEvent(f"{name} must be a non-empty string")
    if len(value) > _MAX_ID:
        raise BadEvent(f"{name} is longer than {_MAX_ID} characters")


def store_event(event: dict[str, Any]) -> tuple[int, bool]:
    """Insert an event from parse_event once. Returns its row id and whether a task should be
    queued for it: yes when new, and for a duplicate only when the event failed or its task was
    lost (a duplicate of an event in hand queues nothing: one task per event, not per delivery)."""
    row = WebhookEvent(
        event_id=event["id"],
        event_type=event["event_type"],
        resource_id=event["resource"].get("id"),
        payload=event,
    )
    db.session.add(row)
    try:
        db.session.commit()
        return row.id, True
    except IntegrityError:
        db.session.rollback()
    stmt = db.select(WebhookEvent.id, or_(WebhookEvent.status == "failed", abandoned(utcnow())))
    existing = db.session.execute(stmt.where(WebhookEvent.event_id == event["id"])).one()
    return existing[0], bool(existing[1])


def abandoned(now: datetime) -> ColumnElement[bool]:
    """Events nobody is working on that should be: the task was lost, or its worker died."""
    return or_(
        and_(WebhookEvent.status == "received", WebhookEvent.received_at < now - LOST_AFTER),
        and_(WebhookEvent.status == "processing", WebhookEvent.claimed_at < now - CLAIM_LEASE),
    )


def process_event(row_id: int) -> str:
    """Apply one stored event if this call can claim it. Returns the outcome, or the event's status
    when it is done or another worker holds it. Raises paypal.PayPalUnavailable, with the claim
    given back, so that the task retries later."""
    claim = _claim(row_id)
    if claim is None:
        status = db.session.execute(db.select(WebhookEvent.status).where(WebhookEvent.id == row_id)).scalar()
        return status or "missing"
    row = db.session.get(WebhookEvent, row_id)
    event_type, handler = row.event_type, HANDLERS.get(row.event_type)
    error = ""
    try:
        outcome = handler((row.payload or {}).get("resource") or {}, row) if handler else "ignored"
    except paypal.PayPalUnavailable:
        db.session.rollback()
        _end_claim(row_id, claim, status="received", claimed_at=None)
        raise
    except Exception as exc:
        db.session.rollback()
        log.exception("webhook %s (%s) failed", row_id, event_type)
        outcome, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    if not _end_claim(row_id, claim, status=outcome, error=error, processed_at=utcnow()):
        log.warning(
            "webhook %s: the claim expired while its handler ran; the worker that took it over records it", row_id
        )
    return outcome


def _claim(row_id: int) -> datetime | None:
    """Mark the event "processing" if nobody holds it. Returns the claim's time, its token."""
    now = utcnow()
    claimable = or_(
        WebhookEvent.status.in_(("received", "failed")),
        and_(WebhookEvent.status == "processing", WebhookEvent.claimed_at < now - CLAIM_LEASE),
    )
    claimed = db.session.execute(
        db.update(WebhookEvent).where(WebhookEvent.id == row_id, claimable).values(status="processing", claimed_at=now)
    )
    db.session.commit()
    return now if claimed.rowcount == 1 else None


def _end_claim(row_id: int, claim: datetime, **values: Any) -> bool:
    """Record the end of a run, unless the claim passed to another worker meanwhile."""
    mine = (WebhookEvent.id == row_id, WebhookEvent.status == "processing", WebhookEvent.claimed_at == claim)
    ended = db.session.execute(db.update(WebhookEvent).where(*mine).values(**values))
    db.session.commit()
    return ended.rowcount == 1


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
    if capture.status in ("DECLINED", "FAILED") and order.status in PAID:
        _flag(order, f"PayPal reported capture {capture.id} {capture.status} after fulfilment")
        return "processed"
    checkout.apply_capture(order, capture)
    return "processed"


def _approval_reversed(resource: dict[str, Any], row: WebhookEvent) -> str:
    order = _order_by(Order.paypal_order_id, resource.get("order_id") or resource.get("id"))
    if order is None:
        return "ignored"
    fulfilment.mark(order.id, OrderStatus.CANCELLED, "PayPal reversed the approval before capture")
    return "processed"


def _refunded(resource: dict[str, Any], row: WebhookEvent) -> str:
    order = find_order(resource)
    if order is None:
        return "ignored"
    kind = OrderStatus.REVERSED if row.event_type.endswith("REVERSED") else OrderStatus.REFUNDED
    refund_cents = paypal.parse_amount((resource.get("amount") or {}).get("value") or "0") or order.amount_cents
    # The refund's own id keys it: REFUNDED and REVERSED events for one refund carry the same one.
    applied = fulfilment.apply_refund(order.id, row.resource_id or row.event_id, kind, refund_cents)
    return "processed" if applied else "ignored"


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
