"""Turning a completed PayPal capture into tokens, exactly once, handing the new key over, and
taking unused tokens back when PayPal reports a refund, once per refund.

Every state change is a conditional UPDATE on the order row (`... WHERE status IN (...)`), so the
return page, the webhook task and the reconciler can race: one of them wins, the others change
nothing. A refund is keyed by its PayPal id (a unique Refund row written in the same transaction
as the take-back), so REFUNDED and REVERSED events, and repeated deliveries, take tokens back once.
The new key exists in plain text only in memory; the row keeps it encrypted (app.secretbox) until
both the buyer's page and the email have used it, then wipes it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import case, or_
from sqlalchemy.exc import IntegrityError

from app import jobs, secretbox
from app.billing import key_lifecycle, low_balance
from app.extensions import db
from app.models import ApiKey, Order, utcnow
from app.models.order import Refund
from app.orders.paypal import Capture
from app.orders.status import PAID, PAYABLE, OrderStatus

log = logging.getLogger(__name__)


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
    return _fulfil_once(
        order_id, order.paypal_capture_id, (*PAYABLE, OrderStatus.REVIEW), note="completed by an operator"
    )


def _fulfil_once(order_id: int, capture_id: str | None, allowed: tuple[str, ...], note: str | None = None) -> bool:
    now = utcnow()
    values: dict[str, object] = {
        "status": OrderStatus.FULFILLED,
        "paid_at": now,
        "fulfilled_at": now,
        "updated_at": now,
    }
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
    if order.low_balance_alert:
        low_balance.subscribe(key.id, order.email, order.locale, commit=False)
    db.session.commit()  # the status change and the tokens land together, or neither does
    log.info("order %s fulfilled: %s tokens on key #%s", order.public_id, order.tokens, key.id)
    jobs.enqueue_order_email(order.id)
    return True


def _credit(order: Order, now: datetime) -> ApiKey:
    plan = order.plan
    expires = now + timedelta(days=plan.valid_days) if plan.valid_days else None
    if order.kind == "topup":
        key = key_lifecycle.credit(order.api_key_id, order.tokens, extend_days=plan.valid_days)
        if key.status != "active":
            order.flagged = True
            order.note = f"topped up a key that is {key.status}"
        return key
    key, plaintext = key_lifecycle.create_key(
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


def _locked(model: type[Order], row_id: int | None) -> Any:
    """The row as committed now, locked until this transaction ends (SELECT ... FOR UPDATE). SQLite
    has no row locks; there the write this transaction already made holds the database's lock."""
    stmt = db.select(model).where(model.id == row_id).with_for_update()
    return db.session.execute(stmt.execution_options(populate_existing=True)).scalar_one()


def _hold_for_review(order: Order, capture: Capture) -> None:
    note = f"capture {capture.id} was {capture.amount_cents} {capture.currency}, order is {order.amount_cents}"
    db.session.execute(
        db.update(Order)
        .where(Order.id == order.id, Order.status.in_(PAYABLE))
        .values(
            status=OrderStatus.REVIEW, flagged=True, paypal_capture_id=capture.id, note=note[:500], updated_at=utcnow()
        )
    )
    db.session.commit()


def refund_share(tokens: int, amount_cents: int, refund_cents: int) -> int:
    """The tokens a refund of `refund_cents` stands for: all of them for a full refund, otherwise
    the same fraction of them, rounded down."""
    if refund_cents >= amount_cents or amount_cents <= 0:
        return tokens
    return tokens * max(0, refund_cents) // amount_cents


def apply_refund(order_id: int, refund_id: str, kind: str, refund_cents: int) -> bool:
    """Apply PayPal refund (or reversal) `refund_id` to the order, once: take back the unused tokens
    of a fulfilled order, or close an unfulfilled one so that it is never fulfilled. `kind` is
    "refunded" or "reversed". False when this refund was applied before."""
    # The order is locked before the refund row is written: the row's foreign key takes a share
    # lock on the order, and two refunds that both held one while asking for the update lock
    # would deadlock (PostgreSQL). Racing copies of one refund wait here, then find its row.
    order = _locked(Order, order_id)
    db.session.add(Refund(paypal_refund_id=refund_id, order_id=order_id, kind=kind, amount_cents=refund_cents))
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return False
    paid = order.status in PAID
    if paid:
        values = _take_back(order, refund_id, kind, refund_cents)
    else:
        values = {"note": f"{kind} before fulfilment"}
        if order.status in (*PAYABLE, OrderStatus.REVIEW):
            values["status"] = kind
    now = utcnow()
    values.update(flagged=True, refunded_at=now, updated_at=now)
    db.session.execute(db.update(Order).where(Order.id == order_id).values(**values))
    db.session.commit()
    return True


def _take_back(order: Order, refund_id: str, kind: str, refund_cents: int) -> dict[str, object]:
    """Inside apply_refund's transaction, with the order locked: its tokens_revoked is exact here."""
    share = refund_share(order.tokens, order.amount_cents, refund_cents)
    wanted = max(0, min(share, order.tokens - order.tokens_revoked))
    taken = key_lifecycle.take_back_tokens(order.api_key_id, wanted, commit=False) if order.api_key_id else 0
    db.session.execute(db.update(Refund).where(Refund.paypal_refund_id == refund_id).values(tokens_taken=taken))
    note = f"{kind} {refund_cents / 100:.2f} {order.currency}: took back {taken:,} of {wanted:,} tokens"
    if taken < wanted:
        note += f" ({wanted - taken:,} already used)"
    log.warning("order %s %s: took back %s of %s tokens", order.public_id, kind, taken, wanted)
    revoked = Order.tokens_revoked + taken
    return {
        "status": kind,
        "note": note[:500],
        "tokens_revoked": case((revoked > Order.tokens, Order.tokens), else_=revoked),
    }


def reveal_key(order: Order) -> str | None:
    """The new key for the buyer's page: returned by the first call only, None afterwards."""
    ciphertext = order.key_ciphertext
    if order.kind != "new" or order.status != OrderStatus.FULFILLED or not ciphertext or order.revealed_at:
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
