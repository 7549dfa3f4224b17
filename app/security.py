"""Response headers for the human-facing pages (storefront, admin dashboard, login), and HSTS."""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, current_app, request


def content_security_policy(form_targets: Iterable[str] = ()) -> str:
    # Pages use no inline script and load nothing from elsewhere; forms post to this site, except
    # checkout, whose answer is a redirect to PayPal (browsers hold form redirects to form-action).
    form_action = " ".join(("'self'", *form_targets))
    return (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        f"frame-ancestors 'none'; form-action {form_action}; base-uri 'none'; object-src 'none'"
    )


CSP = content_security_policy()


def header_default(response: Response, name: str, value: str) -> None:
    """Headers.setdefault without its cost: werkzeug builds an HTTPException for every header
    that is not there yet, which on the API was several microseconds a response."""
    lowered = name.lower()
    if not any(key.lower() == lowered for key, _ in response.headers.items()):
        response.headers[name] = value


def page_headers(response: Response, *, csp: str = CSP) -> Response:
    header_default(response, "Content-Security-Policy", csp)
    header_default(response, "X-Frame-Options", "DENY")
    header_default(response, "X-Content-Type-Options", "nosniff")
    header_default(response, "Referrer-Policy", "same-origin")
    return response


def harden(response: Response) -> Response:
    # Admin pages show key material once and personal data: never cache, never frame.
    response.headers["Cache-Control"] = "no-store"
    page_headers(response)
    lang = request.args.get("lang")
    if lang in current_app.config["LANGUAGES"]:
        response.set_cookie("lang", lang, max_age=365 * 86400, samesite="Lax")
    return response


def init_hsts(app: Flask) -> None:
    """Strict-Transport-Security on every response when HSTS_SECONDS is set (production's default)."""
    seconds = app.config.get("HSTS_SECONDS") or 0
    if seconds <= 0:
        return
    value = f"max-age={int(seconds)}"

    @app.after_request
    def _strict_transport(response: Response) -> Response:
        header_default(response, "Strict-Transport-Security", value)
        return response
