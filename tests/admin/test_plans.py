"""Plans: create, edit, retire and restore; bad input saves nothing."""

from __future__ import annotations

from app.extensions import db
from app.models import AuditLog, Plan


def _plan_form(**overrides):
    return {
        "name": "2M tokens",
        "name_zh": "200万 tokens",
        "tokens": "2000000",
        "price": "0.29",
        "currency": "usd",
        "models": ["deepseek-v4-flash"],
        "rpm": "",
        "valid_days": "30",
        "sort_order": "2",
        "active": "y",
        **overrides,
    }


def test_create_plan_stores_the_exact_price_in_cents(admin):
    response = admin.post("/admin/plans/new", _plan_form())
    assert response.status_code == 302
    plan = db.session.execute(db.select(Plan)).scalar_one()
    assert (plan.price_cents, plan.currency, plan.tokens) == (29, "USD", 2_000_000)  # 0.29 * 100 in floats is 28.99…
    assert (plan.models, plan.rpm, plan.valid_days, plan.sort_order, plan.active) == (
        ["deepseek-v4-flash"],
        None,
        30,
        2,
        True,
    )
    page = admin.get("/admin/plans").text
    assert "$0.29" in page and "200万 tokens" in page
    entry = db.session.execute(db.select(AuditLog).filter_by(action="plan.create")).scalar_one()
    assert entry.details["price_cents"] == 29


def test_bad_plan_input_shows_the_form_again_and_saves_nothing(admin):
    response = admin.post("/admin/plans/new", _plan_form(name="", tokens="0", price="1.999", currency="dollars"))
    assert response.status_code == 400
    for message in (
        "Give the plan a name.",
        "Enter a whole number from 1 to 1,000,000,000,000.",
        "Enter a price like 4.99 (at most two decimals).",
        "Use a three-letter currency code such as USD.",
    ):
        assert message in response.text
    free = admin.post("/admin/plans/new", _plan_form(price="0.00"))
    assert free.status_code == 400 and "The price must be more than zero." in free.text
    assert db.session.execute(db.select(db.func.count(Plan.id))).scalar_one() == 0


def test_edit_plan_keeps_the_form_filled_and_changes_only_that_plan(admin):
    admin.post("/admin/plans/new", _plan_form())
    admin.post("/admin/plans/new", _plan_form(name="other", price="5"))
    first = db.session.execute(db.select(Plan).filter_by(name="2M tokens")).scalar_one()
    form = admin.get(f"/admin/plans/{first.id}/edit").text
    assert 'value="0.29"' in form and 'value="2000000"' in form
    bad = admin.post(f"/admin/plans/{first.id}/edit", _plan_form(price="free"))
    assert bad.status_code == 400
    db.session.expire_all()
    assert db.session.get(Plan, first.id).price_cents == 29
    assert admin.post(f"/admin/plans/{first.id}/edit", _plan_form(price="1.10", models=[])).status_code == 302
    db.session.expire_all()
    assert (db.session.get(Plan, first.id).price_cents, db.session.get(Plan, first.id).models) == (110, None)
    assert db.session.execute(db.select(Plan).filter_by(name="other")).scalar_one().price_cents == 500


def test_retire_and_restore_a_plan(admin):
    admin.post("/admin/plans/new", _plan_form())
    plan = db.session.execute(db.select(Plan)).scalar_one()
    assert admin.post(f"/admin/plans/{plan.id}/retire").status_code == 302
    db.session.expire_all()
    assert db.session.get(Plan, plan.id).active is False
    assert "Put on sale" in admin.get("/admin/plans").text
    admin.post(f"/admin/plans/{plan.id}/restore")
    db.session.expire_all()
    assert db.session.get(Plan, plan.id).active is True
    actions = [e.action for e in db.session.execute(db.select(AuditLog).order_by(AuditLog.id)).scalars()]
    assert actions[-2:] == ["plan.retire", "plan.restore"]
