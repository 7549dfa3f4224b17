"""The admin blueprint object and what applies to every admin page: login required, safe headers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template, request, url_for
from flask_babel import get_locale
from flask_login import current_user
from flask_wtf.csrf import CSRFError

from app.admin import formatting, queries
from app.security import harden

bp = Blueprint("admin", __name__, url_prefix="/admin")


# (endpoint, section); a page belongs to the section whose endpoint prefix it starts with.
NAV = (
    ("admin.overview", "overview"),
    ("admin.keys", "keys"),
    ("admin.plans", "plans"),
    ("admin.codes", "codes"),
    ("admin.orders", "orders"),
    ("admin.upstreams", "upstreams"),
    ("admin.usage", "usage"),
    ("admin.audit_log", "audit"),
)


@bp.before_request
def _require_admin() -> Any:
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
    return None


bp.after_request(harden)


def url_with(**changes: Any) -> str:
    """This page's URL with some query arguments changed (pagination, language). POST pages fall back to GET ones."""
    if request.method != "GET" or request.endpoint is None:
        return url_for("admin.overview", **{k: v for k, v in changes.items() if k == "lang"})
    args = {**request.args.to_dict(), **(request.view_args or {}), **changes}
    return url_for(request.endpoint, **{k: v for k, v in args.items() if v not in (None, "")})


_SECTIONS = {"key": "keys", "plan": "plans", "order": "orders", "upstream": "upstreams", "route": "upstreams"}


def section_of(endpoint: str | None) -> str:
    name = (endpoint or "").removeprefix("admin.")
    for section in (s for _e, s in NAV):
        if name == section:
            return section
    return _SECTIONS.get(name.split("_")[0], name.split("_")[0])


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    return {
        "fmt": formatting.namespace(),
        "nav": NAV,
        "section": section_of(request.endpoint),
        "url_with": url_with,
        "locale": str(get_locale()),
        # Every page, so the operator sees an account out of service wherever they are looking.
        "upstream_alerts": queries.upstream_alerts() if current_user.is_authenticated else [],
    }


@bp.errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError) -> tuple[str, int]:
    return render_template("admin/error.html", reason="csrf"), 400


@bp.errorhandler(404)
def _not_found(exc: Exception) -> tuple[str, int]:
    return render_template("admin/error.html", reason="not_found"), 404
