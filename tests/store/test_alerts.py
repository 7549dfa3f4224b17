"""Asking for the low-balance email: on the key's statement page (the key pasted once, never in a
URL) and with the checkout's box; bad input is refused in words and changes nothing."""

from __future__ import annotations

import pytest

from app.extensions import db
from app.models import ApiKey, Order
from tests.shop import csrf_token, follow_paypal_return


def _open_statement(client, key):
    token = csrf_token(client, "/balance")
    response = client.post("/balance/statement", data={"csrf_token": token, "key": key})
    assert response.status_code == 303 and key not in response.headers["Location"]
    return token


def _row(key_id):
    db.session.expire_all()
    return db.session.get(ApiKey, key_id)


def _alert_settings(key_id):
    row = _row(key_id)
    return row.low_balance_email, row.low_balance_locale


def test_the_statement_page_turns_the_email_on_and_off(client, make_key):
    row, key = make_key(tokens=1000, email="buyer@example.com")
    token = _open_statement(client, key)
    assert "Off: no email when the balance runs low." in client.get("/balance/statement").text

    saved = client.post(
        "/balance/alerts", data={"csrf_token": token, "low_balance_alert": "1", "email": "me@mail.test"}
    )
    assert saved.status_code == 303 and key not in saved.headers["Location"]
    page = client.get(saved.headers["Location"]).text
    assert "Saved." in page and "m***@mail.test" in page and "me@mail.test" not in page
    assert _alert_settings(row.id) == ("me@mail.test", "en")

    client.post("/balance/alerts", data={"csrf_token": token, "email": "me@mail.test"})  # box unticked
    assert _alert_settings(row.id) == (None, "en")


def test_without_an_address_the_purchase_address_is_used_in_the_pages_language(client, make_key):
    row, key = make_key(tokens=1000, email="buyer@example.com")
    client.get("/?lang=zh")
    token = _open_statement(client, key)
    page = client.get("/balance/statement").text
    assert "留空则使用购买时的邮箱（b***@example.com）。" in page
    client.post("/balance/alerts", data={"csrf_token": token, "low_balance_alert": "on", "email": "  "})
    assert _alert_settings(row.id) == ("buyer@example.com", "zh")


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"low_balance_alert": "1", "email": "not-an-address"}, "Please enter a valid email address"),
        ({"low_balance_alert": "1", "email": "a@b.c" + "x" * 260}, "Please enter a valid email address"),
        ({"low_balance_alert": "maybe", "email": "me@mail.test"}, "can only be ticked or left empty"),
        ({"low_balance_alert": ["1", "1"], "email": "me@mail.test"}, "can only be ticked or left empty"),
    ],
)
def test_bad_input_is_refused_in_words_and_changes_nothing(client, make_key, form, message):
    row, key = make_key(tokens=1000, email="buyer@example.com")
    token = _open_statement(client, key)
    client.post("/balance/alerts", data={"csrf_token": token, "low_balance_alert": "1", "email": "kept@mail.test"})

    refused = client.post("/balance/alerts", data={"csrf_token": token, **form})
    assert refused.status_code == 400 and message in refused.text
    assert refused.headers["Cache-Control"] == "no-store"
    assert _alert_settings(row.id) == ("kept@mail.test", "en")
    if form["email"] == "not-an-address":
        assert 'value="not-an-address"' in refused.text  # what was typed is still there to fix


def test_a_key_bought_without_an_address_needs_one(client, make_key):
    row, key = make_key(tokens=1000)
    token = _open_statement(client, key)
    refused = client.post("/balance/alerts", data={"csrf_token": token, "low_balance_alert": "1"})
    assert refused.status_code == 400 and "please enter one for the low-balance email" in refused.text
    assert _alert_settings(row.id) == (None, "en")


def test_only_a_key_pasted_in_this_browser_can_be_changed(client, make_key):
    row, _key = make_key(tokens=1000, email="buyer@example.com")
    token = csrf_token(client, "/balance")
    response = client.post("/balance/alerts", data={"csrf_token": token, "low_balance_alert": "1"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/balance")
    assert client.post("/balance/alerts", data={"low_balance_alert": "1"}).status_code == 400  # no CSRF token
    assert _alert_settings(row.id) == (None, "en")


def _checkout(client, plan, email, key=None, **extra):
    path = "/topup" if key else f"/buy/{plan.id}"
    form = {"csrf_token": csrf_token(client, path), "plan_id": plan.id, "email": email, **extra}
    form.update({"kind": "topup", "key": key} if key else {"kind": "new"})
    return client.post("/checkout", data=form)


def _latest_order():
    db.session.expire_all()
    return db.session.execute(db.select(Order).order_by(Order.id.desc())).scalars().first()


def test_the_box_at_checkout_turns_the_email_on_for_the_new_key_once_paid(client, paypal, plan):
    client.get("/?lang=zh")
    assert _checkout(client, plan, "ticked@example.com", low_balance_alert="1").status_code == 303
    order = _latest_order()
    assert order.low_balance_alert is True and order.api_key_id is None  # nothing until it is paid
    follow_paypal_return(client, paypal, order)
    assert _alert_settings(_latest_order().api_key_id) == ("ticked@example.com", "zh")

    assert _checkout(client, plan, "unticked@example.com").status_code == 303
    follow_paypal_return(client, paypal, _latest_order())
    assert _alert_settings(_latest_order().api_key_id) == (None, "en")


def test_the_box_on_a_top_up_turns_the_email_on_for_that_key(client, paypal, plan, make_key):
    row, key = make_key(tokens=1000, email="old@example.com")
    assert _checkout(client, plan, "old@example.com", key=key, low_balance_alert="1").status_code == 303
    follow_paypal_return(client, paypal, _latest_order())
    assert _alert_settings(row.id) == ("old@example.com", "en")


def test_a_box_value_no_browser_sends_is_refused_and_the_form_keeps_the_rest(client, plan):
    refused = _checkout(client, plan, "kept@example.com", low_balance_alert="please")
    assert refused.status_code == 400 and "can only be ticked or left empty" in refused.text
    assert 'value="kept@example.com"' in refused.text and _latest_order() is None

    bad_email = _checkout(client, plan, "nope", low_balance_alert="1")
    assert bad_email.status_code == 400 and 'name="low_balance_alert" value="1" checked' in bad_email.text
