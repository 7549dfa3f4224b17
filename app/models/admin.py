from __future__ import annotations

from datetime import date, datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.models.base import utcnow


class AdminUser(UserMixin, db.Model):
    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)

    @property
    def is_active(self) -> bool:  # flask-login
        return self.active

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class AuditLog(db.Model):
    """Who did what, when. Details never carry secrets."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("admin_users.id"))
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(120), default="")
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    ip: Mapped[str] = mapped_column(String(45), default="")  # the admin's address, for login forensics
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    # Detail names whose values never reach the log, whatever a caller passes.
    SECRET_FIELDS = frozenset({"api_key", "key", "plaintext", "password", "secret", "token", "key_ciphertext"})

    @classmethod
    def entry(
        cls,
        action: str,
        target: str = "",
        *,
        actor: str,
        admin_id: int | None = None,
        ip: str = "",
        details: dict[str, Any] | None = None,
    ) -> AuditLog:
        """A new, unsaved entry; secret-looking details are dropped and values made JSON-safe."""
        clean = {k: _json_safe(v) for k, v in (details or {}).items() if k.lower() not in cls.SECRET_FIELDS}
        return cls(
            admin_id=admin_id,
            actor=actor[:254],
            action=action,
            target=target[:120],
            details=clean or None,
            ip=ip[:45],
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    return value
