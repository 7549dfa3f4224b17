"""`flask --app wsgi codes ...`: generate, list and void gift codes.

Wrong input exits non-zero with a one-line reason (click.UsageError / ClickException).
"""

from __future__ import annotations

from datetime import datetime

import click
from flask.cli import AppGroup

from app.giftcodes import service
from app.models import utcnow

codes_cli = AppGroup("codes", help="Gift codes: single-use codes for a plan.")
_CLI = service.Actor("cli")


@codes_cli.command("create")
@click.option("--plan", "plan_id", type=int, required=True, help="The plan the codes are worth (see `plans list`).")
@click.option("--count", type=int, required=True, help=f"How many codes (1 to {service.MAX_BATCH}).")
@click.option(
    "--expires",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Expiry date, YYYY-MM-DD (UTC): the codes stop working when that day begins.",
)
@click.option("--note", default="", help="A note for the admin, e.g. where the batch is sold.")
def codes_create(plan_id: int, count: int, expires: datetime | None, note: str) -> None:
    """Generate codes and print them, one a line and nothing else: they are not stored, only their hashes."""
    try:
        batch = service.generate(plan_id, count, actor=_CLI, expires_at=expires, note=note)
    except service.GiftCodeError as exc:
        raise click.UsageError(str(exc)) from None
    for code in batch.codes:
        click.echo(code)


@codes_cli.command("list")
@click.option("--unused", is_flag=True, help="Only codes that can still be redeemed.")
def codes_list(unused: bool) -> None:
    now = utcnow()
    click.echo(
        f"{'ID':>6}  {'CODE':<9} {'STATE':<9} {'PLAN':>5} {'TOKENS':>12}  {'EXPIRES':<10} {'BATCH':<9} KEY  NOTE"
    )
    for row in service.list_codes(unused=unused):
        expires = row.expires_at.strftime("%Y-%m-%d") if row.expires_at else "-"
        key = f"#{row.api_key_id}" if row.api_key_id else "-"
        click.echo(
            f"{row.id:>6}  {row.prefix + '…':<9} {row.state(now):<9} {row.plan_id:>5} {row.tokens:>12,}  "
            f"{expires:<10} {row.batch:<9} {key:<4} {row.note}"
        )


@codes_cli.command("void")
@click.argument("code")
def codes_void(code: str) -> None:
    """Make an unused code worthless (give the whole code, or its id from `codes list`)."""
    try:
        row = service.void(code, actor=_CLI)
    except service.GiftCodeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Voided gift code #{row.id} ({row.prefix}…).")
