"""`flask --app wsgi codes create|list|void`: codes alone on stdout, a one-line reason for bad input."""

from __future__ import annotations

import pytest

from app.extensions import db
from app.giftcodes.code_format import hash_code, normalise
from app.giftcodes.commands import codes_cli
from app.models import AuditLog
from app.models.gift_code import GiftCode
from tests.giftcodes.test_service import make_plan, redeem


def run(runner, *args: str):
    return runner.invoke(codes_cli, list(args))


def test_create_prints_one_code_a_line_and_nothing_else(runner):
    plan = make_plan()
    result = run(
        runner, "create", "--plan", str(plan.id), "--count", "3", "--expires", "2099-01-31", "--note", "Shop A"
    )
    assert result.exit_code == 0, result.output
    codes = result.stdout.splitlines()
    assert len(codes) == 3 and all(normalise(c) == c for c in codes)
    rows = db.session.execute(db.select(GiftCode).order_by(GiftCode.id)).scalars().all()
    assert [r.code_hash for r in rows] == [hash_code(c) for c in codes]
    assert {(r.expires_at.isoformat(), r.note, r.created_by) for r in rows} == {
        ("2099-01-31T00:00:00", "Shop A", "cli")
    }
    assert db.session.execute(db.select(AuditLog).filter_by(action="giftcode.create")).scalar_one().actor == "cli"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--plan", "999", "--count", "1"], "no plan #999"),
        (["--count", "0"], "the count must be from 1 to 1000"),
        (["--count", "5000"], "the count must be from 1 to 1000"),
        (["--count", "1", "--expires", "31/01/2099"], "'31/01/2099' does not match the format '%Y-%m-%d'"),
        (["--count", "1", "--expires", "2000-01-01"], "the expiry date must be in the future"),
        (["--count", "1", "--note", "x" * 300], "the note must be at most 200 characters"),
        (["--count", "many"], "'many' is not a valid integer"),
    ],
)
def test_create_refuses_bad_input_with_a_reason_and_stores_nothing(runner, args, reason):
    plan = make_plan()
    result = run(runner, "create", *(["--plan", str(plan.id)] if "--plan" not in args else []), *args)
    assert result.exit_code != 0 and reason in result.output
    assert not any(normalise(line) for line in result.stdout.splitlines())  # no code was printed
    assert db.session.execute(db.select(db.func.count(GiftCode.id))).scalar_one() == 0


def test_list_shows_each_code_by_prefix_and_state_and_unused_leaves_out_the_rest(runner):
    plan = make_plan()
    codes = run(runner, "create", "--plan", str(plan.id), "--count", "3").stdout.splitlines()
    redeem(codes[0])
    assert run(runner, "void", codes[1]).exit_code == 0
    listing = run(runner, "list").stdout
    for code, state in zip(codes, ("redeemed", "void", "unused"), strict=True):
        line = next(line for line in listing.splitlines() if code[:7] in line)
        assert state in line and code[8:] not in listing
    assert "#1" in listing  # the key the redeemed code made
    unused = run(runner, "list", "--unused").stdout.splitlines()
    assert len(unused) == 2 and codes[2][:7] in unused[1]


def test_void_takes_the_code_or_its_id_and_refuses_what_cannot_be_voided(runner):
    plan = make_plan()
    first, second = run(runner, "create", "--plan", str(plan.id), "--count", "2").stdout.splitlines()
    voided = run(runner, "void", first.lower().replace("-", ""))
    assert voided.exit_code == 0 and f"({first[:7]}…)" in voided.output
    row_id = db.session.execute(db.select(GiftCode.id).filter_by(code_hash=hash_code(second))).scalar_one()
    assert run(runner, "void", str(row_id)).exit_code == 0
    again = run(runner, "void", first)
    assert again.exit_code == 1 and "is void already: nothing to void" in again.output
    unknown = run(runner, "void", "RG-0000-0000-0000-0000-0000")
    assert unknown.exit_code == 1 and "no gift code matches" in unknown.output and len(unknown.output.splitlines()) == 1
    actions = db.session.execute(db.select(AuditLog.action).order_by(AuditLog.id)).scalars().all()
    assert actions == ["giftcode.create", "giftcode.void", "giftcode.void"]


def test_a_redeemed_code_cannot_be_voided(runner):
    plan = make_plan()
    (code,) = run(runner, "create", "--plan", str(plan.id), "--count", "1").stdout.splitlines()
    redeem(code)
    result = run(runner, "void", code)
    assert result.exit_code == 1 and "is redeemed already" in result.output
