"""The PayPal wrapper against the fake: timeouts, bounded 401 retry, idempotency, normalised errors."""

from __future__ import annotations

import json

import pytest

from app.orders import paypal as pp
from tests.fake_paypal import WEBHOOK_ID
from tests.shop import paypal_settings


@pytest.fixture
def app_extra(paypal_server, smtp_server):
    return {**paypal_settings(paypal_server.base_url), "PAYPAL_TIMEOUT": 0.5}


def _create(reference: str = "ref-1") -> pp.PayPalOrder:
    return pp.create_order(
        reference=reference,
        amount_cents=1050,
        currency="USD",
        description="2M tokens",
        return_url="http://shop.test/r",
        cancel_url="http://shop.test/c",
    )


def test_create_sends_the_amount_as_a_decimal_string_and_an_idempotency_key(app, paypal):
    first = _create()
    again = _create()
    assert first.id == again.id and first.status == "PAYER_ACTION_REQUIRED"
    assert first.approve_url == f"{paypal.base_url}/checkoutnow?token={first.id}"
    sent = paypal.calls("/v2/checkout/orders")[0]
    assert sent.body["purchase_units"][0]["amount"] == {"currency_code": "USD", "value": "10.50"}
    assert sent.headers["Paypal-Request-Id"] == "create-ref-1"
    assert "Paypal-Request-Id" not in paypal.calls("/v1/oauth2/token")[0].headers  # the SDK leaks it there


def test_expired_token_is_refreshed_once(app, paypal):
    order = _create()
    paypal.expire_tokens()
    assert pp.get_order(order.id).id == order.id
    assert paypal.state.token_fetches == 2


def test_a_401_that_persists_fails_after_one_refresh(app, paypal):
    paypal.reject_all_tokens()
    with pytest.raises(pp.PayPalError) as raised:
        pp.get_order("ABC")
    assert raised.value.status == 401
    assert paypal.state.token_fetches == 2


def test_a_hanging_paypal_times_out(app, paypal):
    paypal.state.delay = 1.5
    with pytest.raises(pp.PayPalUnavailable):
        pp.get_order("ABC")


def test_errors_are_normalised(app, paypal):
    with pytest.raises(pp.PayPalError) as not_found:
        pp.get_order("NOSUCHORDER")
    assert (not_found.value.status, not_found.value.name, not_found.value.issue) == (
        404,
        "RESOURCE_NOT_FOUND",
        "INVALID_RESOURCE_ID",
    )
    order = _create()
    with pytest.raises(pp.PayPalError) as not_approved:
        pp.capture_order(order.id)
    assert (not_approved.value.status, not_approved.value.issue) == (422, "ORDER_NOT_APPROVED")
    paypal.approve(order.id)
    paypal.fail_next_capture(500)
    with pytest.raises(pp.PayPalUnavailable):
        pp.capture_order(order.id, attempt=1)
    with pytest.raises(pp.PayPalError) as bad_id:
        pp.get_order("../v1/oauth2")
    assert bad_id.value.name == "INVALID_RESOURCE_ID"


def test_capture_after_a_decline_is_a_new_request(app, paypal):
    order = _create()
    paypal.approve(order.id)
    paypal.fail_next_capture("INSTRUMENT_DECLINED")
    with pytest.raises(pp.PayPalError):
        pp.capture_order(order.id)
    captured = pp.capture_order(order.id, attempt=1)
    assert captured.capture is not None and captured.capture.status == "COMPLETED"
    assert captured.capture.amount_cents == 1050
    ids = [seen.headers["Paypal-Request-Id"] for seen in paypal.calls("/capture")]
    assert ids == [f"capture-{order.id}", f"capture-{order.id}-1"]


def test_unreachable_paypal_is_unavailable(app):
    app.config["PAYPAL_API_BASE"] = "http://127.0.0.1:9"
    app.extensions.pop("paypal", None)
    with pytest.raises(pp.PayPalUnavailable):
        pp.get_order("ABC")


def test_webhook_verification_posts_the_event_byte_for_byte(app, paypal):
    event = paypal.event("PAYMENT.CAPTURE.COMPLETED", {"id": "CAP1", "amount": {"value": "1.00"}})
    raw = json.dumps(event, indent=3, ensure_ascii=False).encode()  # any formatting PayPal chooses
    headers = paypal.sign(json.dumps(event, separators=(",", ":")).encode())
    assert pp.verify_webhook(headers, raw, WEBHOOK_ID) is True
    sent = paypal.calls("verify-webhook-signature")[0]
    assert sent.body["webhook_event"] == event and sent.body["webhook_id"] == WEBHOOK_ID
    assert pp.verify_webhook(headers, raw, "WH-OTHER") is False
    assert pp.verify_webhook({}, raw, WEBHOOK_ID) is False  # no headers: not even asked


def test_not_configured_is_its_own_error(app):
    app.config["PAYPAL_CLIENT_ID"] = None
    app.extensions.pop("paypal", None)
    with pytest.raises(pp.PayPalNotConfigured):
        pp.get_order("ABC")
