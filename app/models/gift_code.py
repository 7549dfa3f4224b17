from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.base import utcnow
from app.models.order import Plan


class GiftCode(db.Model):
    """A single-use code worth one plan. Only its SHA-256 and a display prefix are stored; the code
    itself is shown once, when it is generated. Redeemed at most once: unused -> redeemed | void."""

    __tablename__ = "gift_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    batch: Mapped[str] = mapped_column(String(16), index=True)  # the codes generated together
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), index=True)
    tokens: Mapped[int] = mapped_column(BigInteger)  # the plan's tokens when the code was generated
    note: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="unused", index=True)  # unused | redeemed | void
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)  # None = never
    created_by: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    redeemed_at: Mapped[datetime | None] = mapped_column(DateTime)
    redeemed_kind: Mapped[str | None] = mapped_column(String(8))  # new | topup
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    voided_at: Mapped[datetime | None] = mapped_column(DateTime)

    plan: Mapped[Plan] = relationship()

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def state(self, now: datetime) -> str:
        """What the admin sees: unused, redeemed, void or expired (an unused code past its date)."""
        return "expired" if self.status == "unused" and self.is_expired(now) else self.status
