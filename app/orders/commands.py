"""`flask --app wsgi orders ...`: run the pending-order look-up at PayPal once, by hand."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.orders import pending

orders_cli = AppGroup("orders", help="Orders: look up unpaid orders at PayPal.")


@orders_cli.command("reconcile")
def orders_reconcile() -> None:
    """What the beat does every PAYPAL_RECONCILE_SECONDS: orders left unpaid in our books (a closed
    tab, a lost webhook) are looked up at PayPal, and the paid ones fulfilled."""
    counts = pending.reconcile_orders()
    click.echo(", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "nothing to look up")
    if counts.get("unreachable"):
        raise click.ClickException(
            f"PayPal could not be reached for {counts['unreachable']} order(s); run it again later"
        )
