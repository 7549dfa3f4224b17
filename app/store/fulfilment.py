"""Turning a completed PayPal capture into tokens, exactly once, and handing the new key over.

Every state change is a conditional UPDATE on the order row (`... WHERE status IN (...)`), so the
return page, the webhook task and the reconciler can race: one of them wins, the others change
nothing. The new key exists in plain text only in memory; the row keeps it encrypted
(app.secretbox) until both the buyer's page and the email have used it, then wipes it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_

from app import jobs, secretbox
from app.billing import accounts
from app.extensions import db
from app.models import ApiKey, Order, utcnow
from app.store.paypal import Capture

log = logging.getLogger(__name__)

# A payment for an order in any of these states is still ours to fulfil: a buyer may cancel,
# then pay in another tab; PayPal may complete a capture we marked declined or expired.
PAYABLE = ("created", "approved", "pending", "declined", "cancelled", "expired", "failed")
PAID = ("fulfilled", "refunded", "reversed")


def mark(order_id: int, status: str, note: str | None = None, *, only_from: tuple[str, ...] = PAYABLE) -> bool:
    """Move an unpaid order to `status`. Never touches a paid one. True if the row changed."""
    values: dict[str, object] = {"status": status, "updated_at": utcnow()}
    if note is not None:
        values["note"] = note[:500]
    result = db.session.execute(
        db.update(Order).where(Order.id == order_id, Order.status.in_(only_from)).values(**values)
    )
    db.session.commit()
    return result.rowcount == 1


def fulfil(order_id: int, capture: Capture) -> bool:
    """Credit a COMPLETED capture to the order, once. Returns True only for the call that did it."""
    order = db.session.get(Order, order_id, populate_existing=True)
    if order is None:
        return False
    if capture.amount_cents != order.amount_cents or capture.currency != order.currency:
        log.error("order %s: capture %s does not match the order amount; held for review", order.public_id, capture.id)
        _hold_for_review(order, capture)
        return False
    return _fulfil_once(order_id, capture.id, PAYABLE)


def fulfil_by_hand(order_id: int) -> bool:
    """An operator completes an order whose payment they have checked (e.g. one held for review)."""
    order = db.session.get(Order, order_id, populate_existing=True)
    if order is None:
        return False
    return _fulfil_once(order_id, order.paypal_capture_id, (*PAYABLE, "review"), note="completed by an operator")


def _fulfil_once(order_id: int, capture_id: str | None, allowed: tuple[str, ...], note: str | None = None) -> bool:
    now = utcnow()
    values: dict[str, object] = {"status": "fulfilled", "paid_at": now, "fulfilled_at": now, "updated_at": now}
    if capture_id:
        values["paypal_capture_id"] = capture_id
    if note:
        values["note"] = note
    claimed = db.session.execute(
        db.update(Order).where(Order.id == order_id, Order.status.in_(allowed)).values(**values)
    )
    if claimed.rowcount != 1:
        db.session.rollback()
        return False
    order = db.session.get(Order, order_id, populate_existing=True)
    key = _credit(order, now)
    db.session.commit()  # the status change and the tokens land together, or neither does
    if order.kind == "topup":
        accounts.credit_live(key, order.tokens)
        accounts.refresh_live_state(key)
    log.info("order %s fulfilled: %s tokens on key #%s", order.public_id, order.tokens, key.id)
    jobs.send_order_email(order.id)
    return True


def _credit(order: Order, now: datetime) -> ApiKey:
    plan = order.plan
    expires = now + timedelta(days=plan.valid_days) if plan.valid_days else None
    if order.kind == "topup":
        key = db.session.get(ApiKey, order.api_key_id)
        accounts.topup_key(key, order.tokens, commit=False)
        if key.status != "active":
            order.flagged = True
            order.note = f"topped up a key that is {key.status}"
        if expires and key.expires_at is not None:
            key.expires_at = max(key.expires_at, now) + timedelta(days=plan.valid_days)
        return key
    key, plaintext = accounts.create_key(
        tokens=order.tokens,
        name=f"order {order.public_id[:8]}",
        rpm=plan.rpm,
        models=plan.models,
        expires_at=expires,
        email=order.email,
        commit=False,
    )
    order.api_key_id = key.id
    order.key_ciphertext = secretbox.encrypt(plaintext, current_app.config["SECRET_KEY"])
    return key


def _hold_for_review(order: Order, capture: Capture) -> None:
    note = f"capture {capture.id} was {capture.amount_cents} {capture.currency}, order is {order.amount_cents}"
    db.session.execute(
        db.update(Order)
        .where(Order.id == order.id, Order.status.in_(PAYABLE))
        .values(status="review", flagged=True, paypal_capture_id=capture.id, note=note[:500], updated_at=utcnow())
    )
    db.session.commit()


def reveal_key(order: Order) -> str | None:
    """The new key for the buyer's page: returned by the first call only, None afterwards."""
    ciphertext = order.key_ciphertext
    if order.kind != "new" or order.status != "fulfilled" or not ciphertext or order.revealed_at:
        return None
    claimed = db.session.execute(
        db.update(Order).where(Order.id == order.id, Order.revealed_at.is_(None)).values(revealed_at=utcnow())
    )
    db.session.commit()
    if claimed.rowcount != 1:
        return None
    plaintext = secretbox.decrypt(ciphertext, current_app.config["SECRET_KEY"])
    wipe_delivered_keys()
    return plaintext


def read_key_for_email(order: Order) -> str | None:
    if not order.key_ciphertext:
        return None
    return secretbox.decrypt(order.key_ciphertext, current_app.config["SECRET_KEY"])


def wipe_delivered_keys(now: datetime | None = None) -> int:
    """Drop the encrypted key once the page and the email have used it, or once waiting is pointless:
    the email went out and the buyer did not come back within KEY_REVEAL_SECONDS, or nothing
    worked for KEY_KEEP_UNSENT_SECONDS (the buyer can still get a replacement by email)."""
    now = now or utcnow()
    reveal_window = now - timedelta(seconds=current_app.config.get("KEY_REVEAL_SECONDS", 3600))
    give_up = now - timedelta(seconds=current_app.config.get("KEY_KEEP_UNSENT_SECONDS", 3 * 86400))
    delivered = Order.emailed_at.is_not(None) & (Order.revealed_at.is_not(None) | (Order.fulfilled_at < reveal_window))
    result = db.session.execute(
        db.update(Order)
        .where(Order.key_ciphertext.is_not(None), or_(delivered, Order.fulfilled_at < give_up))
        .values(key_ciphertext=None)
    )
    db.session.commit()
    return result.rowcount
