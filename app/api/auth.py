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


def current_key(*, remembered: bool = False) -> KeyInfo:
    """The authenticated key, or an ApiError 401 saying whether it is missing, unknown, revoked or expired.

    The key's cached snapshot is read with the routes generation and the pool epoch, in one round
    trip; the routes table and pool states are reloaded only when those moved. With `remembered`,
    the snapshot this process read last is trusted instead: g.key_guard (the key's cache entry
    and the routes generation as read then) goes with the admission script, which refuses the
    request (Stale) if either moved, and the script reads the pool epoch (g.epoch_key)."""
    presented = presented_key()
    config = current_app.config
    prefix = config["BILLING_REDIS_PREFIX"]
    also = (routes.generation_key(prefix), health.epoch_key(prefix))
    now = time.time()
    snapshot = key_lookup.remembered(prefix, presented, now, also) if remembered else None
    g.key_remembered = snapshot is not None
    if snapshot is None:
        try:
            snapshot = key_lookup.read(get_redis(), prefix, presented, now, quota.key_cache_seconds(config), also)
        except InvalidKey as exc:
            raise invalid_key(exc, mask(presented or "")) from None
    generation, epoch = snapshot.also
    g.routes_generation = generation[1] or b"0"  # never bumped yet: generation zero
    g.pool_epoch = epoch[1] or b"0"
    g.key_guard = (snapshot.cached, generation)
    g.epoch_key = epoch[0]
    return snapshot.info
