"""Upstreams and model routes: seeding and changes. Every change bumps the routes generation."""

from __future__ import annotations

from typing import Any

from flask import current_app

from app import secretbox
from app.extensions import db, get_redis
from app.models import ModelRoute, Upstream
from app.routing.routes import bump_generation

DEFAULT_UPSTREAM = "deepseek"
DEFAULT_ROUTES = (
    # public id, upstream model, prompt x, completion x, description
    ("deepseek-v4-flash", "deepseek-v4-flash", 1, 1, "Fast; for chat and roleplay."),
    ("deepseek-v4-pro", "deepseek-v4-pro", 2, 2, "More capable; costs more tokens."),
)


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
            db.session.add(
                ModelRoute(
                    public_id=public_id,
                    upstream_id=upstream.id,
                    upstream_model=upstream_model,
                    prompt_multiplier=p_mult,
                    completion_multiplier=c_mult,
                    description=description,
                    extra_body={},
                )
            )
    db.session.commit()


def _upstream_by_name(name: str) -> Upstream:
    upstream = db.session.execute(db.select(Upstream).filter_by(name=name)).scalar_one_or_none()
    if upstream is None:
        names = db.session.execute(db.select(Upstream.name)).scalars().all()
        raise ValueError(f"no upstream named {name!r}; known: {', '.join(names) or 'none'}")
    return upstream


def _check_route_input(public_id: str, extra_body: Any, multipliers: dict[str, int | None]) -> None:
    if not public_id.strip() or "/" in public_id or " " in public_id:
        raise ValueError("a public model id is one word without '/' or spaces")
    if extra_body is not None and not isinstance(extra_body, dict):
        raise ValueError("extra body must be a JSON object")
    for name, value in multipliers.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1")


def set_route(
    public_id: str,
    *,
    upstream_model: str | None = None,
    upstream_name: str | None = None,
    extra_body: dict[str, Any] | None = None,
    prompt_multiplier: int | None = None,
    completion_multiplier: int | None = None,
    enabled: bool | None = None,
) -> ModelRoute:
    """Create or change a route; only the given fields change. Raises ValueError on bad input."""
    _check_route_input(
        public_id,
        extra_body,
        {"prompt multiplier": prompt_multiplier, "completion multiplier": completion_multiplier},
    )
    route = db.session.execute(db.select(ModelRoute).filter_by(public_id=public_id)).scalar_one_or_none()
    if route is None:
        if not upstream_model:
            raise ValueError(f"{public_id} is a new route: --upstream-model is required")
        upstream = _upstream_by_name(upstream_name or DEFAULT_UPSTREAM)
        route = ModelRoute(public_id=public_id, upstream_id=upstream.id, upstream_model=upstream_model, extra_body={})
        db.session.add(route)
    elif upstream_name:
        route.upstream_id = _upstream_by_name(upstream_name).id
    changes = {
        "upstream_model": upstream_model,
        "extra_body": extra_body,
        "prompt_multiplier": prompt_multiplier,
        "completion_multiplier": completion_multiplier,
        "enabled": enabled,
    }
    for field, value in changes.items():
        if value is not None and (value or field == "enabled" or field == "extra_body"):
            setattr(route, field, value)
    db.session.commit()
    _changed()
    return route


def set_upstream(
    name: str, *, base_url: str | None = None, api_key: str | None = None, enabled: bool | None = None
) -> Upstream:
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
    db.session.commit()
    _changed()
    return upstream


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
