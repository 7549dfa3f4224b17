"""The Flask side of metering: the rate-limit window in `g` and headers, and billing's refusals
turned into OpenAI-shaped errors. The hold, its growth and the settlement are billing.metering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app, g

from app.api.auth import current_key
from app.api.chat_request import ChatRequest
from app.api.errors import ApiError, quota_exceeded, rate_limited
from app.billing import metering, ratelimit
from app.billing.errors import QuotaExceeded, RateLimited, Stale
from app.billing.key_lookup import KeyInfo
from app.billing.metering import Meter
from app.billing.pricing import Multipliers
from app.extensions import get_redis
from app.routing.routes import RouteInfo


def multipliers_of(route: RouteInfo) -> Multipliers:
    return Multipliers(route.prompt_multiplier_e4, route.cache_hit_multiplier_e4, route.completion_multiplier_e4)


@contextmanager
def rate_limit_first(key: KeyInfo, request_id: str) -> Iterator[None]:
    """Wrap the steps between authentication and reserve(): if one refuses the request (400, 404),
    the request still counts against the rate limit, and a key over its limit gets the 429.

    The rate limit itself is checked by reserve(), in the same round trip as the reservation, so a
    valid request pays for one trip, not two."""
    try:
        yield
    except ApiError:
        if g.get("key_remembered"):
            # Decided on this process's snapshot: a key revoked meanwhile gets its 401, and a key
            # or routes table that changed gets a fresh decision, not this one's error.
            decided_on = g.key_guard
            key = current_key()
            if g.key_guard != decided_on:
                raise Stale() from None
        window = ratelimit.hit(get_redis(), _prefix(), key.id, request_id, metering.rpm_of(key))
        g.rate_window = window
        if window.limited:
            raise rate_limited(RateLimited(window.limit, ratelimit.retry_after_seconds(window))) from None
        raise


def peek_rate_limit(key: KeyInfo) -> None:
    """For responses that do not count (/v1/models, balance look-ups): report the window as it is."""
    g.rate_window = ratelimit.peek(get_redis(), _prefix(), key.id, metering.rpm_of(key))


def rate_limit_headers() -> dict[str, str]:
    window = g.get("rate_window")
    return ratelimit.headers(window) if window is not None and window.limit > 0 else {}


def reserve(key: KeyInfo, route: RouteInfo, chat: ChatRequest, request_id: str) -> Meter:
    """billing.metering.reserve for this request, or the 429 / 402 ApiError; Stale when the key's
    snapshot or the routes generation it was decided on moved (g.key_guard)."""
    settlement = metering.Settlement(
        request_id, key.id, route.public_id, route.upstream_model, chat.stream, multipliers_of(route), time.monotonic()
    )
    demand = metering.Demand(chat.prompt_bound, chat.max_tokens, chat.choices, chat.stream, chat.body)
    try:
        meter = metering.reserve(key, settlement, demand, g.key_guard, (g.epoch_key,))
    except RateLimited as exc:
        g.rate_window = exc.window
        raise rate_limited(exc) from None
    except QuotaExceeded as exc:
        g.rate_window = exc.window
        raise quota_exceeded(exc) from None
    g.rate_window = meter.window
    g.pool_epoch = meter.reads[0] or b"0"  # read at admission: newer than a remembered snapshot's
    return meter


def _prefix() -> str:
    return current_app.config["BILLING_REDIS_PREFIX"]
