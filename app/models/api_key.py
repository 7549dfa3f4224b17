from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import utcnow


class ApiKey(db.Model):
    """A client key. Only its SHA-256 and a display prefix are stored; the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(120), default="")
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | revoked
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    tokens_quota: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_used: Mapped[int] = mapped_column(BigInteger, default=0)
    rpm: Mapped[int | None] = mapped_column(Integer)  # None = the global default
    max_concurrent: Mapped[int | None] = mapped_column(Integer)  # None = unlimited
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)  # None = every route
    reasoning_passthrough: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The optional low-balance email (app.billing.low_balance): where and in which language, or
    # None for no email. alerted_quota is the quota whose alert was claimed (a top-up raises the
    # quota above it, re-arming the alert); emailed_quota the one whose email reached SMTP.
    low_balance_email: Mapped[str | None] = mapped_column(String(254))
    low_balance_locale: Mapped[str] = mapped_column(String(8), default="en")
    low_balance_alerted_quota: Mapped[int | None] = mapped_column(BigInteger)
    low_balance_emailed_quota: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def tokens_remaining(self) -> int:
        return max(0, self.tokens_quota - self.tokens_used)

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now
