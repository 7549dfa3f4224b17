"""The audit trail for admin actions: who did what to which object, and when. Never secrets."""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from flask_login import current_user

from app.extensions import db
from app.models import AuditLog


def record(action: str, target: str = "", **details: Any) -> AuditLog:
    """Write one entry for the logged-in admin (or "cli" outside a request) and commit it."""
    admin_id, actor, ip = None, "cli", ""
    if has_request_context():
        ip = request.remote_addr or ""
        if current_user.is_authenticated:
            admin_id, actor = current_user.id, current_user.email
        else:
            actor = "anonymous"
    entry = AuditLog.entry(action, target, actor=actor, admin_id=admin_id, ip=ip, details=details)
    db.session.add(entry)
    db.session.commit()
    return entry
