from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.base import utcnow
from app.models.multiplier import UNIT


class Upstream(db.Model):
    """An OpenAI-format provider account. The secret key is stored encrypted (app.secretbox)."""

    __tablename__ = "upstreams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    base_url: Mapped[str] = mapped_column(String(500))
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    key_hint: Mapped[str] = mapped_column(String(16), default="")  # last 4 characters, for display
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    max_concurrency: Mapped[int | None] = mapped_column(Integer)  # requests in flight at once; None = unlimited
    # "ok", or "disabled" when the account answered 401/402 (routing.health took it out); for the admin.
    status: Mapped[str] = mapped_column(String(16), default="ok")
    status_reason: Mapped[str] = mapped_column(String(300), default="")
    # The balance the pool probe last read (routing.probe), in the account's minor unit (cents, fen):
    # exact integers, never floats. None until a probe has read one (or the account has no balance endpoint).
    balance_cents: Mapped[int | None] = mapped_column(BigInteger)
    balance_currency: Mapped[str] = mapped_column(String(8), default="")
    balance_checked_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The admins are warned once when the balance falls below this (same unit); None = never.
    low_balance_cents: Mapped[int | None] = mapped_column(BigInteger)
    low_balance_warned_at: Mapped[datetime | None] = mapped_column(DateTime)  # cleared when it rises again
    probed_at: Mapped[datetime | None] = mapped_column(DateTime)
    probe_error: Mapped[str] = mapped_column(String(300), default="")  # "" when the last probe got an answer
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    routes: Mapped[list[ModelRoute]] = relationship(back_populates="upstream")
    targets: Mapped[list[RouteTarget]] = relationship(back_populates="upstream")

    @property
    def balance_text(self) -> str:
        """The last balance read, as "12.34 USD"; "" before a probe has read one."""
        return self._amount(self.balance_cents)

    @property
    def low_balance_text(self) -> str:
        """The warning threshold, as "5.00 USD"; "" when none is set."""
        return self._amount(self.low_balance_cents)

    def _amount(self, cents: int | None) -> str:
        return "" if cents is None else f"{cents_text(cents)} {self.balance_currency}".strip()

    @property
    def is_low_on_balance(self) -> bool:
        return None not in (self.balance_cents, self.low_balance_cents) and self.balance_cents < self.low_balance_cents


def cents_text(cents: int) -> str:
    """Minor units as a decimal amount, exactly (1234 -> "12.34")."""
    return f"{Decimal(cents).scaleb(-2):.2f}"


class ModelRoute(db.Model):
    """A public model id: its token multipliers, description and switch, and its targets
    (RouteTarget), the pool requests are spread over.

    upstream_id, upstream_model and extra_body name the route's first target: the one `models set`
    and the admin's route form edit (routing.catalog keeps it among the targets). Relaying reads
    only the targets."""

    __tablename__ = "model_routes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(120), unique=True)
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id"))
    upstream_model: Mapped[str] = mapped_column(String(120))
    extra_body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Billed tokens per token in 1/10,000 (app.models.multiplier.UNIT; 200 is 0.02x): exact
    # fixed point, named with the scale so that nothing mistakes them for whole multipliers.
    prompt_multiplier_e4: Mapped[int] = mapped_column(Integer, default=UNIT)  # cache-miss prompt tokens
    cache_hit_multiplier_e4: Mapped[int] = mapped_column(Integer, default=UNIT)  # cache-hit prompt tokens
    completion_multiplier_e4: Mapped[int] = mapped_column(Integer, default=UNIT)  # reasoning included
    owned_by: Mapped[str] = mapped_column(String(80), default="deepseek")
    description: Mapped[str] = mapped_column(String(300), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    upstream: Mapped[Upstream] = relationship(back_populates="routes")
    targets: Mapped[list[RouteTarget]] = relationship(
        back_populates="route", cascade="all, delete-orphan", order_by="RouteTarget.id"
    )


class RouteTarget(db.Model):
    """One place a public model can be served: an upstream account, its model id and extra body.
    Requests go to the highest priority with a usable target, spread by weight within it."""

    __tablename__ = "route_targets"
    __table_args__ = (UniqueConstraint("route_id", "upstream_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    route_id: Mapped[int] = mapped_column(ForeignKey("model_routes.id", ondelete="CASCADE"))
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id"))
    upstream_model: Mapped[str] = mapped_column(String(120))
    extra_body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher first; lower ones are the fallback
    weight: Mapped[int] = mapped_column(Integer, default=1)  # share of requests within its priority
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    route: Mapped[ModelRoute] = relationship(back_populates="targets")
    upstream: Mapped[Upstream] = relationship(back_populates="targets")
