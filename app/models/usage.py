from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.base import BigIntPK, utcnow


class UsageRecord(db.Model):
    """One row per relayed request, written by the worker, unique by request id."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_key_created", "api_key_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    model: Mapped[str] = mapped_column(String(120))
    upstream_model: Mapped[str] = mapped_column(String(120), default="")
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    billed_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # The route's multipliers the request was billed at, in 1/10,000 (app.models.multiplier); None on
    # rows written before they were kept.
    prompt_multiplier_e4: Mapped[int | None] = mapped_column(Integer)
    cache_hit_multiplier_e4: Mapped[int | None] = mapped_column(Integer)
    completion_multiplier_e4: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(24))  # done | client_closed | upstream_error | timeout
    status_code: Mapped[int] = mapped_column(Integer, default=200)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
