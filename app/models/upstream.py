from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.models.base import utcnow


class Upstream(db.Model):
    """An OpenAI-format provider account. The secret key is stored encrypted (app.secretbox)."""

    __tablename__ = "upstreams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    base_url: Mapped[str] = mapped_column(String(500))
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    key_hint: Mapped[str] = mapped_column(String(16), default="")  # last 4 characters, for display
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    routes: Mapped[list[ModelRoute]] = relationship(back_populates="upstream")


class ModelRoute(db.Model):
    """Public model id -> upstream model, with extra body fields and integer token multipliers."""

    __tablename__ = "model_routes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(120), unique=True)
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstreams.id"))
    upstream_model: Mapped[str] = mapped_column(String(120))
    extra_body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prompt_multiplier: Mapped[int] = mapped_column(Integer, default=1)
    completion_multiplier: Mapped[int] = mapped_column(Integer, default=1)
    owned_by: Mapped[str] = mapped_column(String(80), default="deepseek")
    description: Mapped[str] = mapped_column(String(300), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    upstream: Mapped[Upstream] = relationship(back_populates="routes")
