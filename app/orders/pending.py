"""The periodic safety net: orders left unpaid in our books are looked up at PayPal.

Covers the buyer who closed the tab after paying and the webhook that never arrived. Also
re-queues key emails and webhook events whose tasks were lost or whose worker died holding
them, and wipes delivered keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from flask import current_app

from app import jobs
from app.extensions import db
from app.models import Order, WebhookEvent, utcnow
from app.orders import checkout, fulfilment, paypal, webhooks
from app.orders.status import LOOKED_UP, OrderStatus

log = logging.getLogger(__name__)

# PayPal keeps an approved order capturable for 3 hours by default; after a day nothing changes.
LOOK_BACK = timedelta(days=3)
ABANDONED_AFTER = timedelta(hours=6)


def reconcile_orders(now: datetime | None = None) -> dict[str, int]:
    """One pass. Returns counts by outcome (for the log and tests)."""
    now = now or utcnow()
    quiet = now - timedelta(seconds=current_app.config.get("PAYPAL_RECONCILE_MIN_AGE", 60))
    counts: dict[str, int] = {}
    for order in _stale_orders(now, quiet):
        try:
            outcome = _reconcile_one(order, now)
        except paypal.PayPalUnavailable:
            log.warning("PayPal unreachable; reconciling again on the next run")
            counts["unreachable"] = counts.get("unreachable", 0) + 1
            break
        counts[outcome] = counts.get(outcome, 0) + 1
    counts["emails_requeued"] = _requeue_emails(now)
    counts["events_requeued"] = _requeue_events(now)
    counts["keys_wiped"] = fulfilment.wipe_delivered_keys(now)
    return counts


def _stale_orders(now: datetime, quiet: datetime) -> list[Order]:
    stmt = (
        db.select(Order)
        .where(
            Order.status.in_(LOOKED_UP),
            Order.paypal_order_id.is_not(None),
            Order.created_at > now - LOOK_BACK,
            Order.updated_at < quiet,  # leave orders a buyer is in the middle of alone
        )
        .order_by(Order.id)
        .limit(200)
    )
    return list(db.session.execute(stmt).scalars())


def _reconcile_one(order: Order, now: datetime) -> str:
    try:
        remote = paypal.get_order(order.paypal_order_id or "")
    except paypal.PayPalUnavailable:
        raise
    except paypal.PayPalError as exc:
        if exc.status == 404:
            fulfilment.mark(order.id, OrderStatus.EXPIRED, "PayPal no longer knows this order")
            return "expired"
        log.warning("order %s: PayPal lookup failed: %s %s", order.public_id, exc.status, exc.name)
        return "error"
    if remote.capture is None and remote.status == "APPROVED":
        status = checkout.capture(order)
    elif remote.capture is not None or remote.status == "VOIDED":
        status = checkout.apply_order(order, remote)
    elif order.created_at < now - ABANDONED_AFTER:
        fulfilment.mark(
            order.id,
            OrderStatus.EXPIRED,
            "never approved at PayPal",
            only_from=(OrderStatus.CREATED, OrderStatus.APPROVED),
        )
        return "expired"
    else:
        return "unchanged"
    return "fulfilled" if status == "fulfilled" else status


def _requeue_emails(now: datetime) -> int:
    late = now - timedelta(minutes=10)
    ids = db.session.execute(
        db.select(Order.id).where(
            Order.status == OrderStatus.FULFILLED,
            Order.emailed_at.is_(None),
            Order.fulfilled_at < late,
            Order.fulfilled_at > now - LOOK_BACK,
        )
    ).scalars()
    return _enqueue_each(ids, jobs.enqueue_order_email)


def _requeue_events(now: datetime) -> int:
    ids = db.session.execute(
        db.select(WebhookEvent.id).where(webhooks.abandoned(now), WebhookEvent.received_at > now - LOOK_BACK)
    ).scalars()
    return _enqueue_each(ids, jobs.enqueue_paypal_webhook)


def _enqueue_each(ids: Iterable[int], enqueue: Callable[[int], None]) -> int:
    count = 0
    for row_id in ids:
        enqueue(row_id)
        count += 1
    return count
