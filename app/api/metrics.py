"""GET /metrics for Prometheus. Off unless the operator says who may scrape it: a bearer token
(METRICS_TOKEN) and/or an allow-list of addresses (METRICS_ALLOW). Behind a reverse proxy on the
same machine every request comes from 127.0.0.1, so loopback is not trusted by default."""

from __future__ import annotations

import hmac
import ipaddress
import logging

from flask import Blueprint, Response, abort, current_app, request
from redis.exceptions import RedisError

from app import metrics
from app.billing import quota
from app.extensions import get_redis

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    if not _may_scrape():
        abort(404)  # the same answer as a site without metrics: nothing to probe for
    return Response(metrics.exposition(_queue_lengths), mimetype=metrics.CONTENT_TYPE)


def _may_scrape() -> bool:
    config = current_app.config
    token = config.get("METRICS_TOKEN")
    allow = allowed_networks(config.get("METRICS_ALLOW"))
    if not token and not allow:
        return False
    if token:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
    return bool(allow) and address_allowed(request.remote_addr, allow)


def allowed_networks(setting: str | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """METRICS_ALLOW: comma-separated addresses or networks (10.0.0.0/8, 192.168.1.5, ::1)."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in (setting or "").split(",") if part.strip()
    )


def address_allowed(address: str | None, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _queue_lengths() -> dict[str, tuple[str, float]]:
    """Read at scrape time; a Redis that does not answer leaves them out rather than failing the scrape."""
    config = current_app.config
    found: dict[str, tuple[str, float]] = {}
    try:
        redis = get_redis()
        found["relaygate_usage_outbox_length"] = (
            "Usage records settled in Redis and not yet written to SQL.",
            float(redis.hlen(quota.outbox_key(config["BILLING_REDIS_PREFIX"]))),
        )
        if config.get("REDIS_URL") and not config.get("CELERY_BROKER_URL"):
            found["relaygate_celery_queue_length"] = (
                "Tasks waiting in the Celery queue (the broker is this Redis).",
                float(redis.llen("celery")),
            )
    except RedisError as exc:
        log.warning("metrics: queue lengths not read: %s", exc)
    return found
