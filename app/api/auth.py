"""Reading and checking the client's API key."""

from __future__ import annotations

import time

from flask import current_app, g, request

from app.api.errors import invalid_key
from app.billing import key_lookup, quota
from app.billing.errors import InvalidKey
from app.billing.key_format import mask
from app.billing.key_lookup import KeyInfo
from app.extensions import get_redis
from app.routing import health, routes


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
        prefix = config["BILLING_REDIS_PREFIX"]
        key, (generation, pool_epoch) = key_lookup.authenticate(
            get_redis(),
            prefix,
            presented,
            time.time(),
            quota.key_cache_seconds(config),
            also=(routes.generation_key(prefix), health.epoch_key(prefix)),
        )
    except InvalidKey as exc:
        raise invalid_key(exc, mask(presented or "")) from None
    # Read with the key, in one round trip; the routes table is reloaded only when it moved.
    g.routes_generation = generation or b"0"  # never bumped yet: generation zero
    g.pool_epoch = pool_epoch or b"0"
    return key
