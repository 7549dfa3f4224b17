"""Admin login and logout (Flask-Login), with failed attempts throttled in Redis."""

from __future__ import annotations

from functools import cache
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFError
from werkzeug.security import check_password_hash, generate_password_hash

from app.auth import throttle
from app.auth.forms import LoginForm
from app.extensions import db, get_redis, login_manager
from app.models import AdminUser, AuditLog, utcnow
from app.security import harden

bp = Blueprint("auth", __name__, url_prefix="/admin")


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please log in to continue.")
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"
    login_manager.user_loader(load_user)


def load_user(user_id: str) -> AdminUser | None:
    user = db.session.get(AdminUser, int(user_id)) if user_id.isdigit() else None
    return user if user is not None and user.active else None


bp.after_request(harden)


@bp.context_processor
def _template_helpers() -> dict[str, object]:
    def url_with(**changes: object) -> str:
        return url_for("auth.login", **{**request.args.to_dict(), **changes})

    return {"url_with": url_with, "locale": str(get_locale())}


@bp.errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError) -> tuple[str, int]:
    # A login page left open past the token's lifetime: show the form again, not a bare 400.
    form = LoginForm(formdata=None)
    form.form_errors.append(_("The form expired. Please log in again."))
    return _render(form, 400)


@cache
def _dummy_hash() -> str:
    return generate_password_hash("not-a-real-password")


def _safe_next(target: str | None) -> str:
    """Only a path inside the admin; anything else could send the admin to another site. A
    control character (a header split, `/admin%0A//evil.com`) disqualifies it as well."""
    if target and target.isprintable():
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/admin") and "\\" not in target:
            return target
    return url_for("admin.overview")


def _find_admin(email: str) -> AdminUser | None:
    stmt = db.select(AdminUser).where(db.func.lower(AdminUser.email) == email)
    return db.session.execute(stmt).scalar_one_or_none()


def _password_ok(user: AdminUser | None, password: str) -> bool:
    if user is None:
        check_password_hash(_dummy_hash(), password)  # same work either way: no account probing by timing
        return False
    return user.active and user.check_password(password)


def _audit(action: str, email: str, user: AdminUser | None = None) -> None:
    """Logins are admin actions too: who (or which email was tried), from where, when."""
    entry = AuditLog.entry(action, actor=email, admin_id=user.id if user else None, ip=(request.remote_addr or ""))
    db.session.add(entry)
    db.session.commit()


def _fresh_session() -> None:
    """Nothing carries over a login or logout, the CSRF secret included (so a token planted
    before login is useless after it). The per-request token derived from the old secret goes too."""
    session.clear()
    g.pop("csrf_token", None)


def _render(form: LoginForm, status: int = 200) -> tuple[str, int]:
    return render_template("auth/login.html", form=form), status


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("admin.overview"))
    form = LoginForm()
    if not form.validate_on_submit():
        return _render(form, 400 if request.method == "POST" else 200)
    email = form.email.data.strip().lower()
    ip = request.remote_addr or "-"
    redis, prefix = get_redis(), current_app.config["BILLING_REDIS_PREFIX"]
    wait = throttle.attempt(redis, prefix, ip, email, current_app.config["ADMIN_LOGIN_ATTEMPTS_PER_15_MIN"])
    if wait:
        _audit("auth.throttled", email)
        form.form_errors.append(
            _("Too many failed attempts. Try again in %(minutes)s minutes.", minutes=-(-wait // 60))
        )
        return _render(form, 429)
    user = _find_admin(email)
    if not _password_ok(user, form.password.data):
        _audit("auth.login_failed", email)
        form.form_errors.append(_("Wrong email or password."))
        return _render(form, 401)
    throttle.clear(redis, prefix, ip, email)
    _fresh_session()
    login_user(user)
    user.last_login_at = utcnow()
    db.session.commit()
    _audit("auth.login", user.email, user)
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
@login_required
def logout() -> Response:
    _audit("auth.logout", current_user.email, current_user)
    logout_user()
    _fresh_session()
    return redirect(url_for("auth.login"))
