"""Reading and checking the client's API key."""

from __future__ import annotations

import time

from flask import current_app, request

from app.api.errors import invalid_key
from app.billing import keys, quota
from app.billing.api_keys import mask
from app.billing.errors import InvalidKey
from app.billing.keys import KeyInfo
from app.extensions import get_redis


def presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or request.headers.get("api-key") or None


def current_key() -> KeyInfo:
    """The authenticated key, or an ApiError 401 saying whether it is missing, unknown, revoked or expired."""
    presented = presented_key()
    config = current_app.config
    try:
        return keys.authenticate(
            get_redis(), config["BILLING_REDIS_PREFIX"], presented, time.time(), quota.key_cache_seconds(config)
        )
    except InvalidKey as exc:
        raise invalid_key(exc, mask(presented or "")) from None
