"""Storefront emails: retried on SMTP failure by the worker, never sent twice."""

from __future__ import annotations

from app.extensions import db
from app.models import Order
from app.orders import delivery
from tests.conftest import wait_until
from tests.shop import follow_paypal_return, reload, start_purchase
from tests.smtp_sink import text_of


def test_key_email_is_retried_until_smtp_accepts_it_and_sent_once(client, paypal, plan, store_worker, mail):
    mail.fail_next(2)
    order = start_purchase(client, plan, email="retry@example.com")
    follow_paypal_return(client, paypal, order)
    (message,) = mail.wait_for(1, timeout=30)
    assert mail.handler.refused == 2
    assert "sk-gateway-" in text_of(message)
    wait_until(lambda: reload(order).emailed_at is not None)  # the worker records it just after sending
    assert delivery.send_order_email(order.id) is False  # a late duplicate task sends nothing
    assert len(mail.messages) == 1


def test_topup_receipt_names_the_key_and_new_balance(client, paypal, plan, make_key, mail):
    row, key = make_key(tokens=1_000, email="old@example.com")
    order = start_purchase(client, plan, email="old@example.com", key=key)
    page = follow_paypal_return(client, paypal, order).get_data(as_text=True)
    assert "2,000,000 tokens were added to key" in page and row.prefix in page
    assert reload(order).kind == "topup"
    (message,) = mail.wait_for(1) if mail.messages else [None]
    if message is None:  # no worker here: run the task body
        assert delivery.send_order_email(order.id) is True
        (message,) = mail.wait_for(1)
    body = text_of(message)
    assert row.prefix in body and "2,001,000" in body and key not in body
    assert message["Subject"] == "2,000,000 tokens added to your RelayGate key"


def test_email_in_the_buyers_language(client, paypal, plan, mail):
    client.get("/?lang=zh")
    order = start_purchase(client, plan, email="zh@example.com")
    follow_paypal_return(client, paypal, order)
    assert db.session.get(Order, order.id).locale == "zh"
    delivery.send_order_email(order.id)
    (message,) = mail.wait_for(1)
    assert message["Subject"] == "你的 RelayGate API 密钥"


def test_without_a_public_url_links_follow_the_address_the_buyer_used(app, client, paypal, plan, mail, make_key):
    app.config["PUBLIC_BASE_URL"] = None
    app.config["SERVER_NAME"] = "shop.local:8050"  # the test client now uses this Host
    order = start_purchase(client, plan, email="port@example.com")
    assert paypal.order(order.paypal_order_id)["return_url"].startswith("http://shop.local:8050/checkout/return/")
    page = follow_paypal_return(client, paypal, order).get_data(as_text=True)
    assert "http://shop.local:8050/v1" in page

    # the email goes out later, from a worker that never saw the buyer's request
    assert reload(order).site_url == "http://shop.local:8050"
    assert delivery.send_order_email(order.id) is True
    assert "http://shop.local:8050/v1" in text_of(mail.wait_for(1)[0])

    make_key(tokens=10, email="lost@example.com")
    assert delivery.send_lost_key_link("lost@example.com", "en", "http://shop.local:8050") is True
    assert "http://shop.local:8050/lost-key/confirm/" in text_of(mail.wait_for(2)[1])

    app.config["PUBLIC_BASE_URL"] = "https://shop.example"  # once set, the operator's address wins over Host
    assert delivery.send_lost_key_link("lost@example.com", "en", "http://evil.example") is True
    assert "https://shop.example/lost-key/confirm/" in text_of(mail.wait_for(3)[2])
