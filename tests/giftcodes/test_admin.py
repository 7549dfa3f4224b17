"""The admin's gift codes: generate a batch, download it as CSV once, void one code or a batch."""

from __future__ import annotations

import csv
import io

import flask_babel

from app.extensions import db
from app.giftcodes.code_format import hash_code, normalise
from app.models import AuditLog
from app.models.gift_code import GiftCode
from tests.giftcodes.test_service import make_plan, redeem

CODE_LINE = r"RG(-[0-9A-Z]{4}){5}"


def _generate(admin, plan, **fields):
    form = {"plan": plan.id, "count": "3", "expires": "2099-06-30", "note": "=Shop A", **fields}
    return admin.post("/admin/codes/new", form)


def _codes_on(page: str) -> list[str]:
    start = page.index('data-testid="new-codes">') + len('data-testid="new-codes">')
    return page[start : page.index("</textarea>", start)].split()


def test_generate_shows_the_codes_once_and_the_csv_holds_them(admin):
    plan = make_plan()
    assert "Gift codes" in admin.get("/admin/codes").text
    assert plan.name in admin.get("/admin/codes/new").text
    created = _generate(admin, plan)
    assert created.status_code == 200 and created.headers["Cache-Control"] == "no-store"
    codes = _codes_on(created.text)
    assert len(codes) == 3 and all(normalise(c) == c for c in codes)
    assert "they will not be shown again" in created.text

    download = admin.post("/admin/codes/export", {"codes": " ".join(codes)})
    assert download.mimetype == "text/csv" and "attachment" in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [r["code"] for r in rows] == codes
    assert {(r["tokens"], r["expires_at"], r["note"], r["plan_id"]) for r in rows} == {
        ("3000000", "2099-06-30", "'=Shop A", str(plan.id))  # a note cannot run as a spreadsheet formula
    }
    forged = admin.post("/admin/codes/export", {"codes": "RG-0000-0000-0000-0000-0000 hello"})
    assert forged.text.strip() == ",".join(("code", "prefix", "batch", "plan_id", "tokens", "expires_at", "note"))

    listing = admin.get("/admin/codes").text
    assert all(c[:7] in listing and c[8:] not in listing for c in codes)
    entry = db.session.execute(db.select(AuditLog).filter_by(action="giftcode.create")).scalar_one()
    assert (entry.actor, entry.details["count"]) == ("ops@example.com", 3)


def test_bad_generation_input_shows_the_form_again_and_stores_nothing(admin):
    plan = make_plan()
    page = _generate(admin, plan, count="0", expires="2000-01-01")
    assert page.status_code == 400
    assert (
        "Enter a whole number from 1 to 1,000." in page.text and "The expiry date must be in the future." in page.text
    )
    assert _generate(admin, plan, count="1001").status_code == 400
    assert db.session.execute(db.select(db.func.count(GiftCode.id))).scalar_one() == 0


def test_void_one_code_then_the_rest_of_its_batch(admin):
    plan = make_plan()
    first, second, third = _codes_on(_generate(admin, plan).text)
    redeem(first)
    row = db.session.execute(db.select(GiftCode).filter_by(code_hash=hash_code(second))).scalar_one()
    assert admin.post("/admin/codes/void", {"code_id": row.id}).status_code == 302
    assert "can no longer be redeemed" in admin.get("/admin/codes").text
    refused = admin.post("/admin/codes/void", {"code_id": row.id})  # already void: says so, changes nothing
    assert refused.status_code == 302 and "was not voided" in admin.get("/admin/codes").text

    assert admin.post("/admin/codes/void-batch", {"batch": row.batch}).status_code == 302
    db.session.expire_all()
    states = {c.code_hash: c.status for c in db.session.execute(db.select(GiftCode)).scalars()}
    assert [states[hash_code(c)] for c in (first, second, third)] == ["redeemed", "void", "void"]
    actions = db.session.execute(db.select(AuditLog.action).order_by(AuditLog.id)).scalars().all()
    assert actions[1:] == ["giftcode.create", "giftcode.redeem", "giftcode.void", "giftcode.void_batch"]
    assert "redeemed" in admin.get("/admin/codes?state=redeemed").text
    assert admin.get("/admin/codes?state=unused").text.count('<td data-label="#">') == 0


def test_the_codes_pages_are_in_chinese(admin):
    plan = make_plan()
    flask_babel.refresh()
    page = admin.get("/admin/codes?lang=zh").text
    assert "礼品码" in page and "生成兑换码" in page
    flask_babel.refresh()
    assert "请立即复制或下载这些兑换码。" in _generate(admin, plan).text
