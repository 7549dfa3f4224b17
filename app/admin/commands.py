"""`flask --app wsgi admin create|list|disable`: dashboard accounts from the command line."""

from __future__ import annotations

import re

import click
from flask.cli import AppGroup

from app.admin import audit
from app.extensions import db
from app.models import AdminUser

admin_cli = AppGroup("admin", help="Admin accounts for the dashboard.")

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 10


def _find(email: str) -> AdminUser | None:
    stmt = db.select(AdminUser).where(db.func.lower(AdminUser.email) == email.lower())
    return db.session.execute(stmt).scalar_one_or_none()


@admin_cli.command("create")
@click.option("--email", required=True, help="The login email.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Prompted when omitted.")
def admin_create(email: str, password: str) -> None:
    """Create an admin, or set a new password for an existing one (and re-enable it)."""
    email = email.strip().lower()
    if not EMAIL_RE.match(email) or len(email) > 254:
        raise click.UsageError(f"--email must be an email address, got {email!r}")
    if len(password) < MIN_PASSWORD:
        raise click.UsageError(f"--password must be at least {MIN_PASSWORD} characters")
    user = _find(email)
    created = user is None
    if user is None:
        user = AdminUser(email=email)
        db.session.add(user)
    user.set_password(password)
    user.active = True
    db.session.commit()
    audit.record("admin.create" if created else "admin.password_reset", f"admin:{user.id}", email=email)
    click.echo(f"{'Created' if created else 'Updated'} admin {email}. Log in at /admin/login.")


@admin_cli.command("list")
def admin_list() -> None:
    for user in db.session.execute(db.select(AdminUser).order_by(AdminUser.id)).scalars():
        last = user.last_login_at.strftime("%Y-%m-%d %H:%M") if user.last_login_at else "never"
        click.echo(f"{user.id:>4}  {user.email:<40} {'active' if user.active else 'disabled':<9} last login {last}")


@admin_cli.command("disable")
@click.option("--email", required=True)
def admin_disable(email: str) -> None:
    """Lock an admin out at once; their open sessions stop working on the next page."""
    user = _find(email)
    if user is None:
        raise click.ClickException(f"no admin with email {email!r}")
    user.active = False
    db.session.commit()
    audit.record("admin.disable", f"admin:{user.id}", email=user.email)
    click.echo(f"Disabled admin {user.email}.")
