"""Upstreams and model routes: seeding and changes. Every change bumps the routes generation."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from flask import current_app

from app import jobs, secretbox
from app.extensions import db, get_redis
from app.models import ModelRoute, RouteTarget, Upstream
from app.models.multiplier import MAXIMUM, UNIT, format_multiplier
from app.routing import health
from app.routing.pool import Candidate
from app.routing.routes import TargetInfo, bump_generation

log = logging.getLogger(__name__)

DEFAULT_UPSTREAM = "deepseek"
DEFAULT_ROUTES = (
    # public id, upstream model, prompt (cache miss) and completion multipliers in 1/UNIT, description
    ("deepseek-v4-flash", "deepseek-v4-flash", UNIT, UNIT, "Fast; for chat and roleplay."),
    ("deepseek-v4-pro", "deepseek-v4-pro", 2 * UNIT, 2 * UNIT, "More capable; costs more tokens."),
)
# DeepSeek's price of a cache-hit input token over a cache-miss one (hit, miss), the same at peak
# and off-peak: https://api-docs.deepseek.com/quick_start/pricing (Flash $0.003/$0.15 off-peak,
# earlier V4-Flash $0.0028/$0.14: 1/50; V4-Pro $0.022/$0.66: 1/30). Any other deepseek-* model is
# served as Flash (deepseek-chat, deepseek-reasoner, deepseek-flash).
_DEEPSEEK_PRO_HIT_RATIO = (1, 30)
_DEEPSEEK_HIT_RATIO = (1, 50)


def default_cache_hit_multiplier(upstream_model: str, prompt_multiplier: int) -> int:
    """A new route's cache-hit multiplier (1/UNIT) when none is given: its prompt multiplier times
    DeepSeek's hit/miss price ratio for a DeepSeek model, rounded up to the unit; for any other
    model the prompt multiplier itself (a hit costs what a miss does, as before hits were priced)."""
    name = upstream_model.lower()
    if not name.startswith("deepseek"):
        return prompt_multiplier
    hit, miss = _DEEPSEEK_PRO_HIT_RATIO if "pro" in name else _DEEPSEEK_HIT_RATIO
    return -(-prompt_multiplier * hit // miss)


def _changed() -> None:
    bump_generation(get_redis(), current_app.config["BILLING_REDIS_PREFIX"])


def seed_defaults(base_url: str, api_key: str | None, secret_key: str) -> None:
    """The first install: one upstream from the environment and the two public routes. Idempotent."""
    upstream = db.session.execute(db.select(Upstream).filter_by(name=DEFAULT_UPSTREAM)).scalar_one_or_none()
    if upstream is None:
        upstream = Upstream(name=DEFAULT_UPSTREAM, base_url=base_url)
        if api_key:
            upstream.api_key_encrypted = secretbox.encrypt(api_key, secret_key)
            upstream.key_hint = api_key[-4:]
        db.session.add(upstream)
        db.session.flush()
    for public_id, upstream_model, p_mult, c_mult, description in DEFAULT_ROUTES:
        exists = db.session.execute(db.select(ModelRoute.id).filter_by(public_id=public_id)).scalar_one_or_none()
        if exists is None:
            route = ModelRoute(
                public_id=public_id,
                upstream_id=upstream.id,
                upstream_model=upstream_model,
                prompt_multiplier_e4=p_mult,
                cache_hit_multiplier_e4=default_cache_hit_multiplier(upstream_model, p_mult),
                completion_multiplier_e4=c_mult,
                description=description,
                extra_body={},
            )
            route.targets.append(RouteTarget(upstream_id=upstream.id, upstream_model=upstream_model, extra_body={}))
            db.session.add(route)
    db.session.commit()


def _upstream_by_name(name: str) -> Upstream:
    upstream = db.session.execute(db.select(Upstream).filter_by(name=name)).scalar_one_or_none()
    if upstream is None:
        names = db.session.execute(db.select(Upstream.name)).scalars().all()
        raise ValueError(f"no upstream named {name!r}; known: {', '.join(names) or 'none'}")
    return upstream


def _check_route_input(public_id: str, extra_body: Any, multipliers: dict[str, tuple[int | None, int]]) -> None:
    if not public_id.strip() or "/" in public_id or " " in public_id:
        raise ValueError("a public model id is one word without '/' or spaces")
    if extra_body is not None and not isinstance(extra_body, dict):
        raise ValueError("extra body must be a JSON object")
    for name, (value, least) in multipliers.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a count of 1/{UNIT} (an int)")
        if not least <= value <= MAXIMUM:
            raise ValueError(f"{name} must be from {format_multiplier(least)} to {format_multiplier(MAXIMUM)}")


def set_route(
    public_id: str,
    *,
    upstream_model: str | None = None,
    upstream_name: str | None = None,
    extra_body: dict[str, Any] | None = None,
    prompt_multiplier: int | None = None,
    cache_hit_multiplier: int | None = None,
    completion_multiplier: int | None = None,
    enabled: bool | None = None,
) -> ModelRoute:
    """Create or change a route; only the given fields change. Raises ValueError on bad input.

    Multipliers are in 1/UNIT (app.models.multiplier.parse_multiplier reads an operator's text). A
    new route given no cache-hit multiplier gets default_cache_hit_multiplier's."""
    _check_route_input(
        public_id,
        extra_body,
        {
            "prompt multiplier": (prompt_multiplier, 1),
            "cache-hit multiplier": (cache_hit_multiplier, 0),
            "completion multiplier": (completion_multiplier, 1),
        },
    )
    route = db.session.execute(db.select(ModelRoute).filter_by(public_id=public_id)).scalar_one_or_none()
    if route is None:
        if not upstream_model:
            raise ValueError(f"{public_id} is a new route: --upstream-model is required")
        upstream = _upstream_by_name(upstream_name or DEFAULT_UPSTREAM)
        route = ModelRoute(public_id=public_id, upstream_id=upstream.id, upstream_model=upstream_model, extra_body={})
        prompt = prompt_multiplier or UNIT
        route.prompt_multiplier_e4 = prompt
        route.completion_multiplier_e4 = UNIT
        route.cache_hit_multiplier_e4 = default_cache_hit_multiplier(upstream_model, prompt)
        db.session.add(route)
    first_upstream_id = route.upstream_id
    if upstream_name:
        route.upstream_id = _upstream_by_name(upstream_name).id
    changes = {
        "upstream_model": upstream_model,
        "extra_body": extra_body,
        "prompt_multiplier_e4": prompt_multiplier,
        "cache_hit_multiplier_e4": cache_hit_multiplier,
        "completion_multiplier_e4": completion_multiplier,
        "enabled": enabled,
    }
    for field, value in changes.items():
        if value is not None and (value or field in ("enabled", "extra_body", "cache_hit_multiplier_e4")):
            setattr(route, field, value)
    _sync_first_target(route, first_upstream_id)
    db.session.commit()
    _changed()
    return route


def _sync_first_target(route: ModelRoute, was_upstream_id: int | None) -> None:
    """The target `models set` edits follows the route's own upstream, model and extra body."""
    first = _target_on(route, was_upstream_id) or _target_on(route, route.upstream_id)
    if first is None:
        first = RouteTarget(upstream_id=route.upstream_id)
        route.targets.append(first)
    elif first.upstream_id != route.upstream_id:
        other = _target_on(route, route.upstream_id)
        if other is not None:  # the route moved onto an account that was already a target: one target
            route.targets.remove(other)
            db.session.flush()
        first.upstream_id = route.upstream_id
    first.upstream_model = route.upstream_model
    first.extra_body = dict(route.extra_body or {})


def _target_on(route: ModelRoute, upstream_id: int | None) -> RouteTarget | None:
    return next((t for t in route.targets if t.upstream_id == upstream_id), None)


def _route_by_id(public_id: str) -> ModelRoute:
    route = db.session.execute(db.select(ModelRoute).filter_by(public_id=public_id)).scalar_one_or_none()
    if route is None:
        raise ValueError(f"no model {public_id!r}; create it with `models set {public_id} --upstream-model M`")
    return route


def set_target(
    public_id: str,
    upstream_name: str,
    *,
    upstream_model: str | None = None,
    extra_body: dict[str, Any] | None = None,
    priority: int | None = None,
    weight: int | None = None,
) -> RouteTarget:
    """Add a target to a model's pool, or change the one it has on that upstream. A new target
    takes the model's upstream model and extra body unless given. Raises ValueError on bad input."""
    if weight is not None and weight < 1:
        raise ValueError("weight must be a whole number of at least 1")
    if extra_body is not None and not isinstance(extra_body, dict):
        raise ValueError("extra body must be a JSON object")
    route, upstream = _route_by_id(public_id), _upstream_by_name(upstream_name)
    target = _target_on(route, upstream.id)
    if target is None:
        target = RouteTarget(
            upstream_id=upstream.id,
            upstream_model=route.upstream_model,
            extra_body=dict(route.extra_body or {}),
            priority=0,
            weight=1,
        )
        route.targets.append(target)
    changes = {"upstream_model": upstream_model, "extra_body": extra_body, "priority": priority, "weight": weight}
    for name, value in changes.items():
        if value is not None:
            setattr(target, name, value)
    if route.upstream_id == upstream.id:  # the first target: the route's own columns say the same
        route.upstream_model, route.extra_body = target.upstream_model, dict(target.extra_body or {})
    db.session.commit()
    _changed()
    return target


def remove_target(public_id: str, upstream_name: str) -> ModelRoute:
    route, upstream = _route_by_id(public_id), _upstream_by_name(upstream_name)
    target = _target_on(route, upstream.id)
    if target is None:
        raise ValueError(f"{public_id} has no target on {upstream_name}")
    if len(route.targets) == 1:
        raise ValueError(f"{upstream_name} is {public_id}'s only target; use `models set {public_id} --disable`")
    route.targets.remove(target)
    if route.upstream_id == upstream.id:
        first = sorted_targets(route)[0]
        route.upstream_id, route.upstream_model = first.upstream_id, first.upstream_model
        route.extra_body = dict(first.extra_body or {})
    db.session.commit()
    _changed()
    return route


def set_upstream(
    name: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    enabled: bool | None = None,
    max_concurrency: int | None = None,
) -> Upstream:
    """Create or change an upstream account. `max_concurrency` 0 means unlimited. Enabling it, or
    giving it a new key, also puts it back in service after the gateway disabled it."""
    if max_concurrency is not None and max_concurrency < 0:
        raise ValueError("max concurrency must be a whole number (0 = unlimited)")
    if base_url is not None and not base_url.startswith(("http://", "https://")) and base_url != "demo:":
        raise ValueError("base URL must start with http:// or https://")
    upstream = db.session.execute(db.select(Upstream).filter_by(name=name)).scalar_one_or_none()
    if upstream is None:
        if not base_url:
            raise ValueError(f"{name} is a new upstream: a base URL is required")
        upstream = Upstream(name=name, base_url=base_url)
        db.session.add(upstream)
    if base_url:
        upstream.base_url = base_url.rstrip("/")
    if api_key:
        upstream.api_key_encrypted = secretbox.encrypt(api_key, current_app.config["SECRET_KEY"])
        upstream.key_hint = api_key[-4:]
    if enabled is not None:
        upstream.enabled = enabled
    if max_concurrency is not None:
        upstream.max_concurrency = max_concurrency or None
    db.session.commit()
    if enabled or api_key:
        _back_in_service(upstream)
    _changed()
    return upstream


def _back_in_service(upstream: Upstream) -> None:
    health.restore(get_redis(), current_app.config["BILLING_REDIS_PREFIX"], upstream.id)
    upstream.status, upstream.status_reason = health.OK, ""
    db.session.commit()


def mark_disabled(upstream_id: int, reason: str) -> None:
    """Record on the upstream's row that the gateway took it out (the live switch is in Redis), and
    have every admin emailed. Call it once per disable: as the caller health.disable answered True."""
    upstream = db.session.get(Upstream, upstream_id)
    if upstream is not None:
        upstream.status, upstream.status_reason = health.DISABLED, reason[:300]
        db.session.commit()
    alert_admins(upstream_id, "disabled")


def alert_admins(upstream_id: int, kind: str) -> None:
    """Queue the email telling every admin about an upstream ("disabled" or "low_balance"). The
    payload carries ids only; the event id lets a retried task skip admins already told. Never
    raises: this runs on a buyer's request, and the switch and the dashboard banner matter more."""
    try:
        jobs.enqueue_upstream_alert(upstream_id, kind, f"{kind}-{uuid.uuid4().hex[:16]}")
    except Exception:  # a broker outage (kombu raises its own family) must not fail the request
        log.exception("could not queue the admins' email about upstream %s", upstream_id)


def upstream_api_key(upstream: Upstream) -> str | None:
    """The upstream's own key (decrypted), else UPSTREAM_API_KEY; None means demo mode.
    Raises ValueError when the stored key cannot be decrypted (SECRET_KEY changed)."""
    if upstream.api_key_encrypted:
        try:
            return secretbox.decrypt(upstream.api_key_encrypted, current_app.config["SECRET_KEY"])
        except secretbox.SecretUnreadable as exc:
            raise ValueError("the stored key cannot be decrypted (was SECRET_KEY changed?); enter it again") from exc
    return current_app.config.get("UPSTREAM_API_KEY")


def describe_route(public_id: str, description: str) -> None:
    """The buyer-facing description of a route; no effect on relaying."""
    route = db.session.execute(db.select(ModelRoute).filter_by(public_id=public_id)).scalar_one()
    route.description = description.strip()[:300]
    db.session.commit()


def pool_report(public_id: str) -> dict[str, Any]:
    """A model's settings and its targets with their live state, best first (for `models show`)."""
    route = _route_by_id(public_id)
    targets = sorted_targets(route)
    infos = [_report_target(t) for t in targets]
    live = health.candidates(get_redis(), current_app.config["BILLING_REDIS_PREFIX"], infos, time.time())
    return {
        "public_id": route.public_id,
        "enabled": route.enabled,
        # Exact decimals as text ("0.02"), as an operator types them.
        "prompt_multiplier": format_multiplier(route.prompt_multiplier_e4),
        "cache_hit_multiplier": format_multiplier(route.cache_hit_multiplier_e4),
        "completion_multiplier": format_multiplier(route.completion_multiplier_e4),
        "description": route.description,
        "targets": [_target_fields(t, c) for t, c in zip(targets, live, strict=True)],
    }


def sorted_targets(route: ModelRoute) -> list[RouteTarget]:
    return sorted(route.targets, key=lambda t: (-t.priority, t.id))


def _report_target(target: RouteTarget) -> TargetInfo:
    return replace(
        _account_info(target.upstream),
        upstream_model=target.upstream_model,
        extra_body=dict(target.extra_body or {}),
        priority=target.priority,
        weight=target.weight,
    )


def _account_info(upstream: Upstream) -> TargetInfo:
    """An upstream account as the pool's live state reads it (no key: reports never need one)."""
    return TargetInfo(
        upstream_id=upstream.id,
        upstream_name=upstream.name,
        base_url=upstream.base_url,
        api_key=None,
        upstream_model="",
        extra_body={},
        priority=0,
        weight=1,
        max_concurrency=upstream.max_concurrency,
    )


def live_states(upstreams: list[Upstream]) -> dict[int, dict[str, Any]]:
    """Each account's live state in one round trip: {id: {"state", "in_flight"}}; in_flight is
    None for an account without a limit (nothing is counted for those)."""
    if not upstreams:
        return {}
    prefix = current_app.config["BILLING_REDIS_PREFIX"]
    live = health.candidates(get_redis(), prefix, [_account_info(u) for u in upstreams], time.time())
    return {
        c.target.upstream_id: {"state": health.describe(c), "in_flight": c.in_flight if c.limit is not None else None}
        for c in live
    }


def set_low_balance(name: str, cents: int | None) -> Upstream:
    """The balance (minor units of the account's currency) below which the probe warns the admins;
    None: never. A new threshold starts a new crossing: a balance already below it warns again."""
    if cents is not None and cents < 0:
        raise ValueError("the low-balance threshold cannot be negative")
    upstream = _upstream_by_name(name)
    if upstream.low_balance_cents != cents:
        upstream.low_balance_cents, upstream.low_balance_warned_at = cents, None
        db.session.commit()
    return upstream


def _target_fields(target: RouteTarget, live: Candidate[TargetInfo]) -> dict[str, Any]:
    upstream = target.upstream
    return {
        "upstream": upstream.name,
        "upstream_model": target.upstream_model,
        "extra_body": dict(target.extra_body or {}),
        "priority": target.priority,
        "weight": target.weight,
        "state": "switched off" if not upstream.enabled else health.describe(live),
        "reason": upstream.status_reason,
        "in_flight": live.in_flight if live.limit is not None else None,
        "max_concurrency": upstream.max_concurrency,
    }
