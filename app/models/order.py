from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.base import utcnow


class Plan(db.Model):
    """A token package on sale. Prices are integer cents."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    name_zh: Mapped[str] = mapped_column(String(120), default="")
    tokens: Mapped[int] = mapped_column(BigInteger)
    price_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    models: Mapped[list[str] | None] = mapped_column(JSON)  # None = every route
    rpm: Mapped[int | None] = mapped_column(Integer)
    valid_days: Mapped[int | None] = mapped_column(Integer)  # None = never expires
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Order(db.Model):
    """A PayPal purchase: a new key, or a top-up of an existing one. Fulfilled at most once."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="new")  # new | topup
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    email: Mapped[str] = mapped_column(String(254), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    tokens: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    # created -> (approved | pending | declined | cancelled | expired)* -> fulfilled -> refunded | reversed;
    # "review" when PayPal's capture does not match the order (amount, currency).
    status: Mapped[str] = mapped_column(String(24), default="created", index=True)
    paypal_order_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    paypal_capture_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    locale: Mapped[str] = mapped_column(String(8), default="en")
    site_url: Mapped[str | None] = mapped_column(String(255))  # the address the buyer used, for links
    # The new key, encrypted, kept only until the buyer's page and the email have used it.
    key_ciphertext: Mapped[str | None] = mapped_column(Text)
    # The buyer ticked "email me when the balance runs low": set on the key at fulfilment.
    low_balance_alert: Mapped[bool] = mapped_column(Boolean, default=False)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(String(500), default="")
    tokens_revoked: Mapped[int] = mapped_column(BigInteger, default=0)
    # Declined captures so far: each new attempt after a decline needs a new PayPal-Request-Id.
    capture_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime)
    fulfilled_at: Mapped[datetime | None] = mapped_column(DateTime)
    emailed_at: Mapped[datetime | None] = mapped_column(DateTime)
    revealed_at: Mapped[datetime | None] = mapped_column(DateTime)  # the key was shown on the buyer's page
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime)

    plan: Mapped[Plan] = relationship()


class WebhookEvent(db.Model):
    """A PayPal webhook delivery, stored under its unique event id before any processing."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # received -> processing -> processed | ignored | failed; "processing" belongs to the worker that
    # claimed it at claimed_at, and another may take it over once that claim is too old (it died).
    status: Mapped[str] = mapped_column(String(16), default="received")
    error: Mapped[str] = mapped_column(String(500), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)


class Refund(db.Model):
    """A PayPal refund or reversal applied to an order, once: its PayPal id is unique, so the same
    refund arriving again (another delivery, event id or event type) finds it here."""

    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paypal_refund_id: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # refunded | reversed
    amount_cents: Mapped[int] = mapped_column(Integer)
    tokens_taken: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
