"""Operator commands: `flask --app wsgi keys|models|upstreams ...`.

Wrong input exits non-zero with a one-line reason (click.UsageError / ClickException).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.admin.formatting import AMOUNT_PATTERN, amount_cents
from app.billing import key_lifecycle
from app.extensions import db
from app.models.multiplier import MultiplierError, format_multiplier, parse_multiplier

keys_cli = AppGroup("keys", help="Issue and manage client API keys.")
models_cli = AppGroup("models", help="Public model ids and where they route.")
upstreams_cli = AppGroup("upstreams", help="Upstream provider accounts.")


def _positive(value: int | None, name: str) -> int | None:
    if value is not None and value <= 0:
        raise click.UsageError(f"{name} must be a positive whole number")
    return value


def _multiplier(value: str | None, name: str, *, allow_zero: bool = False) -> int | None:
    """An operator's decimal ("0.02") as the 1/UNIT the route stores, or a usage error saying why not."""
    if value is None:
        return None
    try:
        return parse_multiplier(value, name, allow_zero=allow_zero)
    except MultiplierError as exc:
        raise click.UsageError(str(exc)) from None


def _models_option(value: str | None) -> list[str] | None:
    if not value:
        return None
    from app.models import ModelRoute

    wanted = [m.strip() for m in value.split(",") if m.strip()]
    known = set(db.session.execute(db.select(ModelRoute.public_id)).scalars())
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise click.UsageError(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return wanted


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise click.UsageError(f"--expires must be YYYY-MM-DD, got {value!r}") from None


def _find(reference: str) -> Any:
    try:
        return key_lifecycle.find_key(reference)
    except key_lifecycle.KeyNotFound:
        raise click.ClickException(f"no key matches {reference!r} (give the full key, its id or its prefix)") from None


@keys_cli.command("create")
@click.option("--tokens", type=int, required=True, help="Billed tokens the key may use.")
@click.option("--rpm", type=int, help="Requests per minute (default: the global default).")
@click.option("--name", default="", help="A label for the admin.")
@click.option("--models", help="Comma-separated public model ids (default: all).")
@click.option("--expires", help="Expiry date, YYYY-MM-DD (UTC).")
@click.option("--email", help="The buyer's email.")
@click.option("--reasoning/--no-reasoning", default=False, help="Pass reasoning_content through.")
def keys_create(
    tokens: int, rpm: int | None, name: str, models: str | None, expires: str | None, email: str | None, reasoning: bool
) -> None:
    """Create a key; the key alone is printed on the last line."""
    if tokens < 0:
        raise click.UsageError("--tokens must not be negative")
    row, plaintext = key_lifecycle.create_key(
        tokens=tokens,
        name=name,
        rpm=_positive(rpm, "--rpm"),
        models=_models_option(models),
        expires_at=_date(expires),
        email=email,
        reasoning_passthrough=reasoning,
    )
    click.echo(f"Created key #{row.id} ({row.prefix}) with {tokens:,} tokens. It is shown only once:")
    click.echo(plaintext)


def key_fields(row: Any) -> dict[str, Any]:
    from app.billing import statements

    # The same live figures as GET /api/key (settled usage not yet in SQL included).
    report = statements.key_report(row, default_rpm=current_app.config["KEY_DEFAULT_RPM"], all_models=_route_ids())
    return {
        "id": row.id,
        "prefix": row.prefix,
        **report,
        "reasoning_passthrough": row.reasoning_passthrough,
        "email": row.email,
        "created_at": row.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _route_ids() -> list[str]:
    from app.models import ModelRoute

    return list(db.session.execute(db.select(ModelRoute.public_id).where(ModelRoute.enabled)).scalars())


@keys_cli.command("list")
def keys_list() -> None:
    from app.models import ApiKey

    rows = db.session.execute(db.select(ApiKey).order_by(ApiKey.id)).scalars().all()
    click.echo(f"{'ID':>5}  {'PREFIX':<22} {'STATUS':<8} {'USED':>12} {'QUOTA':>12}  NAME")
    for row in rows:
        click.echo(
            f"{row.id:>5}  {row.prefix:<22} {row.status:<8} {row.tokens_used:>12,} {row.tokens_quota:>12,}  {row.name}"
        )


@keys_cli.command("show")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_show(key: str, as_json: bool) -> None:
    fields = key_fields(_find(key))
    if as_json:
        click.echo(json.dumps(fields, indent=2))
        return
    for name, value in fields.items():
        click.echo(f"{name:>22}: {value}")


@keys_cli.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    row = key_lifecycle.revoke_key(_find(key))
    click.echo(f"Revoked key #{row.id} ({row.prefix}).")


@keys_cli.command("topup")
@click.argument("key")
@click.option("--tokens", type=int, required=True)
def keys_topup(key: str, tokens: int) -> None:
    if tokens <= 0:
        raise click.UsageError("--tokens must be a positive whole number")
    row = key_lifecycle.topup_key(_find(key), tokens)
    click.echo(f"Added {tokens:,} tokens to key #{row.id} ({row.prefix}); quota is now {row.tokens_quota:,}.")


@models_cli.command("list")
def models_list() -> None:
    from app.models import ModelRoute

    rows = db.session.execute(db.select(ModelRoute).order_by(ModelRoute.public_id)).scalars().all()
    click.echo(f"{'PUBLIC ID':<24} {'UPSTREAM':<12} {'UPSTREAM MODEL':<24} {'MULT MISS/HIT/COMPL':<20} {'ON':<3} EXTRA")
    for r in rows:
        mult = _multipliers_text(r.prompt_multiplier_e4, r.cache_hit_multiplier_e4, r.completion_multiplier_e4)
        click.echo(
            f"{r.public_id:<24} {r.upstream.name:<12} {r.upstream_model:<24} {mult:<20} "
            f"{'yes' if r.enabled else 'no':<3} {json.dumps(r.extra_body or {})}"
        )


@models_cli.command("set")
@click.argument("public_id")
@click.option("--upstream-model", help="The model id sent upstream.")
@click.option("--upstream", "upstream_name", help="Upstream name (see `upstreams list`).")
@click.option("--extra-body", help='JSON object merged into requests, e.g. \'{"thinking": {"type": "disabled"}}\'.')
@click.option("--prompt-multiplier", help="Billed tokens per cache-miss prompt token, e.g. 1 or 1.5 (4 decimals).")
@click.option(
    "--cache-hit-multiplier",
    help="Billed tokens per cache-hit prompt token, e.g. 0.02; 0 is allowed "
    "(default for a new route: DeepSeek's hit/miss price ratio times the prompt multiplier).",
)
@click.option("--completion-multiplier", help="Billed tokens per completion token (reasoning included), e.g. 2.")
@click.option("--enable/--disable", default=None)
def models_set(
    public_id: str,
    upstream_model: str | None,
    upstream_name: str | None,
    extra_body: str | None,
    prompt_multiplier: str | None,
    cache_hit_multiplier: str | None,
    completion_multiplier: str | None,
    enable: bool | None,
) -> None:
    """Create or change a public model route. Multipliers are decimals with up to 4 places."""
    from app.routing import catalog

    try:
        route = catalog.set_route(
            public_id,
            upstream_model=upstream_model,
            upstream_name=upstream_name,
            extra_body=_extra_body(extra_body),
            prompt_multiplier=_multiplier(prompt_multiplier, "--prompt-multiplier"),
            cache_hit_multiplier=_multiplier(cache_hit_multiplier, "--cache-hit-multiplier", allow_zero=True),
            completion_multiplier=_multiplier(completion_multiplier, "--completion-multiplier"),
            enabled=enable,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    mult = _multipliers_text(route.prompt_multiplier_e4, route.cache_hit_multiplier_e4, route.completion_multiplier_e4)
    click.echo(f"{route.public_id} -> {route.upstream.name}:{route.upstream_model} (miss/hit/completion {mult})")


def _multipliers_text(prompt: int, cache_hit: int, completion: int) -> str:
    return "/".join(f"x{format_multiplier(m)}" for m in (prompt, cache_hit, completion))


def _extra_body(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise click.UsageError("--extra-body must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise click.UsageError("--extra-body must be a JSON object")
    return parsed


@models_cli.command("add-target")
@click.argument("public_id")
@click.option("--upstream", "upstream_name", required=True, help="Upstream name (see `upstreams list`).")
@click.option("--upstream-model", help="The model id sent to this upstream (default: the model's own).")
@click.option("--extra-body", help="JSON object merged into requests to this target (default: the model's own).")
@click.option("--priority", type=int, help="Higher is tried first; lower priorities are the fallback (default 0).")
@click.option("--weight", type=int, help="Share of requests within its priority (default 1).")
def models_add_target(
    public_id: str,
    upstream_name: str,
    upstream_model: str | None,
    extra_body: str | None,
    priority: int | None,
    weight: int | None,
) -> None:
    """Add an upstream account to a model's pool, or change its target there."""
    from app.routing import catalog

    try:
        target = catalog.set_target(
            public_id,
            upstream_name,
            upstream_model=upstream_model,
            extra_body=_extra_body(extra_body),
            priority=priority,
            weight=_positive(weight, "--weight"),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(
        f"{public_id} -> {upstream_name}:{target.upstream_model} (priority {target.priority}, weight {target.weight})"
    )


@models_cli.command("remove-target")
@click.argument("public_id")
@click.option("--upstream", "upstream_name", required=True)
def models_remove_target(public_id: str, upstream_name: str) -> None:
    """Take an upstream account out of a model's pool."""
    from app.routing import catalog

    try:
        route = catalog.remove_target(public_id, upstream_name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{public_id}: {len(route.targets)} target(s) left")


@models_cli.command("show")
@click.argument("public_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_show(public_id: str, as_json: bool) -> None:
    """A model's settings and its targets with their live state."""
    from app.routing import catalog

    try:
        report = catalog.pool_report(public_id)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    mult = "prompt x{prompt_multiplier}, cache hit x{cache_hit_multiplier}, completion x{completion_multiplier}"
    state = "enabled" if report["enabled"] else "disabled"
    click.echo(f"{report['public_id']} ({state}, {mult.format(**report)})")
    click.echo(f"  {'UPSTREAM':<14} {'UPSTREAM MODEL':<24} {'PRIO':>4} {'WEIGHT':>6} {'IN FLIGHT':>9}  STATE")
    for t in report["targets"]:
        limit = t["max_concurrency"]
        in_flight = f"{t['in_flight']}/{limit}" if limit else "-"
        reason = f" ({t['reason']})" if t["state"] == "disabled" and t["reason"] else ""
        click.echo(
            f"  {t['upstream']:<14} {t['upstream_model']:<24} {t['priority']:>4} {t['weight']:>6} {in_flight:>9}  "
            f"{t['state']}{reason}"
        )


@upstreams_cli.command("list")
def upstreams_list() -> None:
    from app.models import Upstream

    for u in db.session.execute(db.select(Upstream).order_by(Upstream.id)).scalars():
        key = f"…{u.key_hint}" if u.api_key_encrypted else "(UPSTREAM_API_KEY or demo)"
        state = "switched off" if not u.enabled else u.status if u.status == "ok" else f"{u.status}: {u.status_reason}"
        limit = f"max {u.max_concurrency}" if u.max_concurrency else "no limit"
        click.echo(f"{u.name:<12} {u.base_url:<40} key {key:<28} {limit:<9} {state}")


@upstreams_cli.command("set")
@click.argument("name")
@click.option("--base-url")
@click.option("--api-key", help="Stored encrypted; never shown again.")
@click.option("--enable/--disable", default=None, help="--enable also puts an account the gateway disabled back.")
@click.option("--max-concurrency", type=int, help="Requests in flight at once on this account (0 = unlimited).")
@click.option(
    "--low-balance",
    metavar="AMOUNT",
    help="Email the admins once when the probed balance falls below AMOUNT (the account's currency, e.g. 5.00); "
    "'off' = never.",
)
def upstreams_set(
    name: str,
    base_url: str | None,
    api_key: str | None,
    enable: bool | None,
    max_concurrency: int | None,
    low_balance: str | None,
) -> None:
    from app.routing import catalog

    threshold = _amount_cents(low_balance) if low_balance is not None else None
    try:
        upstream = catalog.set_upstream(
            name, base_url=base_url, api_key=api_key, enabled=enable, max_concurrency=max_concurrency
        )
        if low_balance is not None:
            catalog.set_low_balance(name, threshold)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    limit = f", at most {upstream.max_concurrency} at once" if upstream.max_concurrency else ""
    warn = f", warns below {upstream.low_balance_text}" if upstream.low_balance_cents is not None else ""
    click.echo(f"upstream {upstream.name}: {upstream.base_url}{limit}{warn}")


def _amount_cents(text: str) -> int | None:
    """An amount in cents, "5.00" -> 500 (Decimal, never float); "off" -> None."""
    if text.strip().lower() == "off":
        return None
    if not re.fullmatch(AMOUNT_PATTERN, text.strip()):
        raise click.UsageError("--low-balance is an amount like 5 or 12.50 (at most two decimals), or 'off'")
    return amount_cents(text)


@upstreams_cli.command("probe")
def upstreams_probe() -> None:
    """Probe every enabled upstream now, as the beat does: put back those that answer, read balances."""
    from app.routing import probe

    for name, verdict in probe.probe_upstreams().items():
        click.echo(f"{name:<12} {verdict}")


def register_cli(app: Flask) -> None:
    from app.admin.commands import admin_cli
    from app.giftcodes.commands import codes_cli
    from app.orders.commands import orders_cli
    from app.quickstart import quickstart_command
    from app.store.commands import plans_cli

    for group in (keys_cli, models_cli, upstreams_cli, admin_cli, plans_cli, orders_cli, codes_cli):
        app.cli.add_command(group)
    app.cli.add_command(quickstart_command)
