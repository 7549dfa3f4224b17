"""The site's public address, for links that leave the page: PayPal's return, emails, error hints.

PUBLIC_BASE_URL wins when set (production requires it). Unset, a link follows the address the buyer
used: the one recorded with their order, else the one this request came in on. That trusts the Host
header, which is fine on a developer's machine and why production does not allow it.
"""

from __future__ import annotations

from flask import current_app, has_request_context, request

FALLBACK = "http://127.0.0.1:8000"


def site_url(recorded: str | None = None) -> str:
    configured = current_app.config.get("PUBLIC_BASE_URL")
    if configured:
        return configured.rstrip("/")
    if recorded:
        return recorded.rstrip("/")
    if has_request_context():
        return request.host_url.rstrip("/")
    return FALLBACK
