"""`flask --app wsgi plans seed|list`: the packages on sale."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.extensions import db
from app.models import Plan
from app.orders.plans import seed_plans

plans_cli = AppGroup("plans", help="Token packages on sale in the storefront.")


@plans_cli.command("seed")
def plans_seed() -> None:
    """Add the default packages that are missing (idempotent)."""
    added = seed_plans()
    click.echo(f"Added {added} plan(s)." if added else "Default plans already present.")


@plans_cli.command("list")
def plans_list() -> None:
    rows = db.session.execute(db.select(Plan).order_by(Plan.sort_order, Plan.id)).scalars()
    click.echo(f"{'ID':>4}  {'NAME':<24} {'TOKENS':>14} {'PRICE':>10}  ACTIVE")
    for plan in rows:
        price = f"{plan.price_cents / 100:.2f} {plan.currency}"
        click.echo(f"{plan.id:>4}  {plan.name:<24} {plan.tokens:>14,} {price:>10}  {'yes' if plan.active else 'no'}")
