"""The model routes table as the hot path sees it: cached per process, refreshed on change.

A change anywhere (CLI, admin) bumps a generation counter in Redis; each request reads that one
counter and reloads the table only when it moved.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from app import secretbox
from app.extensions import db
from app.models import ModelRoute, RouteTarget, Upstream


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """One target of a route, with its upstream account's connection details and limit."""

    upstream_id: int
    upstream_name: str
    base_url: str
    api_key: str | None = field(repr=False)
    upstream_model: str
    extra_body: dict[str, Any]
    priority: int
    weight: int
    max_concurrency: int | None


@dataclass(frozen=True, slots=True)
class RouteInfo:
    public_id: str
    upstream_model: str  # the first target's, named in usage records
    # In 1/UNIT (app.models.multiplier): billing.pricing.Multipliers takes them as they are.
    prompt_multiplier_e4: int
    cache_hit_multiplier_e4: int
    completion_multiplier_e4: int
    owned_by: str
    targets: tuple[TargetInfo, ...]


def generation_key(prefix: str) -> str:
    return f"{prefix}:routes:gen"


def bump_generation(redis: Any, prefix: str) -> None:
    redis.incr(generation_key(prefix))


def load_routes(secret_key: str, fallback_api_key: str | None) -> dict[str, RouteInfo]:
    """Enabled routes with at least one target on an enabled upstream (one SQL query)."""
    rows = db.session.execute(
        db.select(ModelRoute, RouteTarget, Upstream)
        .join(RouteTarget, RouteTarget.route_id == ModelRoute.id)
        .join(Upstream, RouteTarget.upstream_id == Upstream.id)
        .where(ModelRoute.enabled, Upstream.enabled)
        .order_by(ModelRoute.id, RouteTarget.id)
    ).all()
    routes: dict[str, RouteInfo] = {}
    for route, target, upstream in rows:
        info = _target_info(target, upstream, secret_key, fallback_api_key)
        known = routes.get(route.public_id)
        if known is not None:
            routes[route.public_id] = replace(known, targets=(*known.targets, info))
            continue
        routes[route.public_id] = RouteInfo(
            public_id=route.public_id,
            upstream_model=route.upstream_model,
            prompt_multiplier_e4=route.prompt_multiplier_e4,
            cache_hit_multiplier_e4=route.cache_hit_multiplier_e4,
            completion_multiplier_e4=route.completion_multiplier_e4,
            owned_by=route.owned_by,
            targets=(info,),
        )
    db.session.rollback()
    return routes


def _target_info(target: RouteTarget, upstream: Upstream, secret_key: str, fallback: str | None) -> TargetInfo:
    api_key = secretbox.decrypt(upstream.api_key_encrypted, secret_key) if upstream.api_key_encrypted else None
    return TargetInfo(
        upstream_id=upstream.id,
        upstream_name=upstream.name,
        base_url=upstream.base_url,
        api_key=api_key or fallback,
        upstream_model=target.upstream_model,
        extra_body=dict(target.extra_body or {}),
        priority=target.priority,
        weight=target.weight,
        max_concurrency=upstream.max_concurrency,
    )


class RouteCache:
    """One per app (app.extensions["routes"]), so that apps in one process never share a table."""

    def __init__(self, max_age: float | None = None) -> None:
        # Embedded mode has no shared Redis: the CLI bumps its own counter, so age the table out instead.
        self._max_age = max_age
        self._loaded_at = 0.0
        self._generation: bytes | None = None
        self._routes: dict[str, RouteInfo] = {}
        self._lock = threading.Lock()

    def get(
        self, redis: Any, prefix: str, secret_key: str, fallback_api_key: str | None, generation: Any = None
    ) -> dict[str, RouteInfo]:
        """`generation` is the counter's value when the caller already read it (with the key look-up)."""
        if generation is None:
            generation = redis.get(generation_key(prefix))
        generation = generation or b"0"
        if generation == self._generation and not self._too_old():
            return self._routes
        with self._lock:
            if generation != self._generation or self._too_old():
                self._routes = load_routes(secret_key, fallback_api_key)
                self._generation = generation
                self._loaded_at = time.monotonic()
        return self._routes

    def _too_old(self) -> bool:
        return self._max_age is not None and time.monotonic() - self._loaded_at > self._max_age

    def clear(self) -> None:
        self._generation = None


def init_routes(app: Any) -> None:
    """The per-app routes cache. Embedded mode has no shared generation counter a CLI change could
    bump in the server's memory, so the table also ages out after 3 s there."""
    app.extensions["routes"] = RouteCache(max_age=None if app.config.get("REDIS_URL") else 3.0)
