"""Checkout through the pages: create at PayPal, approve, return, capture, key once, email once."""

from __future__ import annotations

import re

import pytest

from app.billing.key_format import hash_key
from app.extensions import db
from app.models import ApiKey, Order
from tests.conftest import wait_until
from tests.shop import csrf_token, follow_paypal_return, reload, start_purchase
from tests.smtp_sink import html_of, text_of

KEY = re.compile(r"sk-gateway-[A-Za-z0-9]{40}")


def test_order_is_created_at_paypal_with_the_price_of_the_plan_on_the_server(client, paypal, plan):
    form = {
        "csrf_token": csrf_token(client, f"/buy/{plan.id}"),
        "plan_id": plan.id,
        "email": "buyer@example.com",
        "kind": "new",
        "amount": "0.01",  # ignored: the browser cannot set a price
        "tokens": "999999999",
    }
    response = client.post("/checkout", data=form)
    order = db.session.execute(db.select(Order)).scalar_one()
    assert response.status_code == 303
    assert response.headers["Location"] == f"{paypal.base_url}/checkoutnow?token={order.paypal_order_id}"
    create = paypal.calls("/v2/checkout/orders")[0]
    assert create.body["purchase_units"][0]["amount"] == {"currency_code": "USD", "value": "1.00"}
    assert create.body["purchase_units"][0]["custom_id"] == order.public_id
    assert create.headers["Paypal-Request-Id"] == f"create-{order.public_id}"
    assert (order.tokens, order.amount_cents, order.status) == (2_000_000, 100, "created")


def test_whole_purchase_shows_the_key_once_and_emails_it_once(client, paypal, plan, store_worker, mail):
    order = start_purchase(client, plan, email="buyer@example.com")
    page = follow_paypal_return(client, paypal, order)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    key = KEY.search(page.get_data(as_text=True)).group(0)

    row = db.session.execute(db.select(ApiKey).filter_by(key_hash=hash_key(key))).scalar_one()
    assert (row.tokens_quota, row.email, row.status) == (2_000_000, "buyer@example.com", "active")
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200

    again = client.get(f"/order/{order.public_id}").get_data(as_text=True)
    assert key not in again and row.prefix in again

    message = mail.wait_for(1)[0]
    assert message["To"] == "buyer@example.com"
    assert key in text_of(message) and key in html_of(message)
    assert "http://testserver/v1" in text_of(message)
    wait_until(lambda: reload(order).key_ciphertext is None)  # page and email done: nothing left to read
    order = reload(order)
    assert order.status == "fulfilled" and order.emailed_at and order.revealed_at
    assert order.paypal_capture_id == paypal.order(order.paypal_order_id)["capture"]["id"]
    assert len(mail.messages) == 1


def test_the_key_is_shown_only_to_the_browser_that_paid(app, client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.approve(order.paypal_order_id)
    stranger = app.test_client()
    stranger.get(f"/checkout/return/{order.public_id}?token={order.paypal_order_id}")
    page = stranger.get(f"/order/{order.public_id}").get_data(as_text=True)
    assert reload(order).status == "fulfilled"
    assert not KEY.search(page)
    assert KEY.search(client.get(f"/order/{order.public_id}").get_data(as_text=True))


def test_declined_card_charges_nothing_and_says_so(client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.fail_next_capture("INSTRUMENT_DECLINED")
    page = follow_paypal_return(client, paypal, order).get_data(as_text=True)
    assert "PayPal declined the payment" in page and "Nothing was charged" in page
    assert reload(order).status == "declined"
    assert db.session.execute(db.select(ApiKey)).first() is None


def test_declined_order_is_still_fulfilled_when_the_buyer_pays_with_another_card(client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.fail_next_capture("INSTRUMENT_DECLINED")
    follow_paypal_return(client, paypal, order)
    page = follow_paypal_return(client, paypal, order).get_data(as_text=True)
    assert KEY.search(page)
    assert reload(order).status == "fulfilled"


def test_cancel_at_paypal_shows_a_clear_message(client, paypal, plan):
    order = start_purchase(client, plan)
    cancel = paypal.cancel_url(order.paypal_order_id).split("testserver", 1)[1]
    response = client.get(cancel, follow_redirects=True)
    assert "Payment cancelled" in response.get_data(as_text=True)
    assert reload(order).status == "cancelled"


def test_pending_capture_tells_the_buyer_to_wait_for_email(client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.fail_next_capture("PENDING")
    page = follow_paypal_return(client, paypal, order).get_data(as_text=True)
    assert "Payment pending at PayPal" in page and "b***@example.com" in page
    assert reload(order).status == "pending"
    assert db.session.execute(db.select(ApiKey)).first() is None


def test_capture_failing_at_paypal_leaves_the_order_for_a_retry(client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.fail_next_capture(500)
    page = follow_paypal_return(client, paypal, order).get_data(as_text=True)
    assert "Confirming your payment" in page
    assert reload(order).status == "approved"
    retry = client.get(f"/checkout/return/{order.public_id}", follow_redirects=True).get_data(as_text=True)
    assert KEY.search(retry)
    assert reload(order).status == "fulfilled"


def test_paypal_refusing_our_credentials_fails_cleanly_after_one_token_retry(client, paypal, plan):
    paypal.reject_all_tokens()
    form = {"csrf_token": csrf_token(client, f"/buy/{plan.id}"), "plan_id": plan.id, "email": "a@example.com"}
    response = client.post("/checkout", data=form)
    assert response.status_code == 400
    assert "PayPal could not be reached just now. Nothing was charged" in response.get_data(as_text=True)
    assert paypal.state.token_fetches == 2  # the SDK alone would recurse until RecursionError
    assert db.session.execute(db.select(Order.status)).scalar_one() == "failed"


def test_bad_email_and_unknown_plan_are_refused_with_a_message(client, paypal, plan):
    token = csrf_token(client, f"/buy/{plan.id}")
    bad_email = client.post("/checkout", data={"csrf_token": token, "plan_id": plan.id, "email": "nope"})
    assert bad_email.status_code == 400 and "valid email" in bad_email.get_data(as_text=True)
    no_plan = client.post("/checkout", data={"csrf_token": token, "plan_id": 999, "email": "a@example.com"})
    assert no_plan.status_code == 400 and "no longer on sale" in no_plan.get_data(as_text=True)
    assert paypal.calls("/v2/checkout/orders") == []


def test_a_capture_for_another_amount_is_held_for_review_until_an_operator_completes_it(client, paypal, plan):
    from app.orders import checkout

    order = start_purchase(client, plan)
    paypal.order(order.paypal_order_id)["amount"] = {"currency_code": "USD", "value": "0.01"}  # tampered order
    page = follow_paypal_return(client, paypal, order).get_data(as_text=True)
    assert "We are checking this payment" in page
    order = reload(order)
    assert (order.status, order.flagged, order.api_key_id) == ("review", True, None)

    assert checkout.fulfil_order(order.id).status == "fulfilled"
    with pytest.raises(checkout.AlreadyDone, match="the order is fulfilled; nothing was delivered again"):
        checkout.fulfil_order(order.id)  # twice: still one key
    assert db.session.execute(db.select(db.func.count(ApiKey.id))).scalar_one() == 1
