"""POST /paypal/webhook: verification, storage under the event id, processing by the worker."""

from __future__ import annotations

import threading

from app.extensions import db
from app.models import ApiKey, Order, WebhookEvent
from app.store import webhooks
from tests.conftest import wait_until
from tests.fake_paypal import WEBHOOK_ID
from tests.store.conftest import reload, start_purchase


def _hook(live_server) -> str:
    return f"{live_server.url}/paypal/webhook"


def _events() -> list[WebhookEvent]:
    db.session.expire_all()
    return list(db.session.execute(db.select(WebhookEvent)).scalars())


def _paid_without_return(client, paypal, plan, **kwargs):
    """A buyer who paid and closed the tab: PayPal has a completed capture, our order does not."""
    order = start_purchase(client, plan, **kwargs)
    capture = paypal.capture_without_return(order.paypal_order_id)["purchase_units"][0]["payments"]["captures"][0]
    return order, capture


def test_forged_webhook_is_refused_and_changes_nothing(live_server, client, paypal, plan):
    order, capture = _paid_without_return(client, paypal, plan)
    event = paypal.event("PAYMENT.CAPTURE.COMPLETED", capture)
    forged = paypal.send_webhook(_hook(live_server), event, tamper=True)
    other_hook = paypal.send_webhook(_hook(live_server), event, webhook_id="WH-SOMEONE-ELSE")
    unsigned = client.post("/paypal/webhook", json=event)
    assert (forged.status_code, other_hook.status_code, unsigned.status_code) == (400, 400, 400)
    assert _events() == []
    assert reload(order).status == "created"
    assert db.session.execute(db.select(ApiKey)).first() is None


def test_same_webhook_100_times_racing_the_return_page_gives_one_key_and_one_credit(
    live_server, client, paypal, plan, make_key, store_worker, mail
):
    existing, existing_key = make_key(tokens=1_000, email="old@example.com")
    new_order, new_capture = _paid_without_return(client, paypal, plan, email="new@example.com")
    topup_order, topup_capture = _paid_without_return(client, paypal, plan, email="old@example.com", key=existing_key)
    events = [
        paypal.event("PAYMENT.CAPTURE.COMPLETED", new_capture),
        paypal.event("PAYMENT.CAPTURE.COMPLETED", topup_capture),
    ]
    statuses: list[int] = []

    def deliver(event, times):
        for _ in range(times):
            statuses.append(paypal.send_webhook(_hook(live_server), event).status_code)

    threads = [threading.Thread(target=deliver, args=(event, 25)) for event in events for _ in range(4)]
    for thread in threads:
        thread.start()
    for order in (new_order, topup_order):  # the buyer's browser comes back meanwhile
        client.get(f"/checkout/return/{order.public_id}")
    for thread in threads:
        thread.join()

    assert statuses == [200] * 200
    wait_until(lambda: all(e.status == "processed" for e in _events()) and len(mail.messages) >= 2, timeout=20)
    assert len(_events()) == 2
    keys = db.session.execute(db.select(ApiKey).order_by(ApiKey.id)).scalars().all()
    assert [k.email for k in keys] == ["old@example.com", "new@example.com"]  # one new key, no more
    assert keys[1].tokens_quota == 2_000_000
    assert keys[0].tokens_quota == 1_000 + 2_000_000  # credited once
    assert {reload(new_order).status, reload(topup_order).status} == {"fulfilled"}
    assert sorted(m["To"] for m in mail.messages) == ["new@example.com", "old@example.com"]


def test_approved_webhook_captures_for_a_buyer_who_closed_the_tab(live_server, client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.approve(order.paypal_order_id)
    resource = {"id": order.paypal_order_id, "status": "APPROVED", "intent": "CAPTURE"}
    assert paypal.send_webhook(_hook(live_server), paypal.event("CHECKOUT.ORDER.APPROVED", resource)).status_code == 200
    (event,) = _events()
    assert webhooks.process_event(event.id) == "processed"  # the task body, run here
    assert reload(order).status == "fulfilled"
    assert paypal.calls("/capture")[0].headers["Paypal-Request-Id"] == f"capture-{order.paypal_order_id}"
    assert webhooks.process_event(event.id) == "processed"  # a second run changes nothing
    assert len(paypal.calls("/capture")) == 1


def test_pending_capture_is_fulfilled_when_paypal_completes_it(live_server, client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.fail_next_capture("PENDING")
    client.get(paypal.approve(order.paypal_order_id).split("testserver", 1)[1])
    assert reload(order).status == "pending"
    completed = paypal.complete_pending(order.paypal_order_id)
    paypal.send_webhook(_hook(live_server), paypal.event("PAYMENT.CAPTURE.COMPLETED", completed))
    webhooks.process_event(_events()[0].id)
    assert reload(order).status == "fulfilled"
    assert "sk-gateway-" in client.get(f"/order/{order.public_id}").get_data(as_text=True)


def test_denied_capture_marks_the_order_declined(live_server, client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.fail_next_capture("PENDING")
    client.get(paypal.approve(order.paypal_order_id).split("testserver", 1)[1])
    denied = {**paypal.order(order.paypal_order_id)["capture"], "status": "DECLINED"}
    paypal.send_webhook(_hook(live_server), paypal.event("PAYMENT.CAPTURE.DENIED", denied))
    webhooks.process_event(_events()[0].id)
    assert reload(order).status == "declined"
    assert "PayPal declined the payment" in client.get(f"/order/{order.public_id}").get_data(as_text=True)


def test_refund_takes_back_the_unused_tokens_once_and_flags_the_order(live_server, client, paypal, plan):
    order = start_purchase(client, plan)
    client.get(paypal.approve(order.paypal_order_id).split("testserver", 1)[1])
    order = reload(order)
    key = db.session.get(ApiKey, order.api_key_id)
    key.tokens_used = 500_000  # the buyer used a quarter before asking for the money back
    db.session.commit()
    refund = paypal.refund(order.paypal_capture_id)
    paypal.send_webhook(_hook(live_server), paypal.event("PAYMENT.CAPTURE.REFUNDED", refund))
    paypal.send_webhook(_hook(live_server), paypal.event("PAYMENT.CAPTURE.REVERSED", refund))  # same refund
    for event in _events():
        webhooks.process_event(event.id)

    db.session.expire_all()
    key = db.session.get(ApiKey, order.api_key_id)
    assert (key.tokens_quota, key.tokens_remaining) == (500_000, 0)
    order = reload(order)
    assert (order.status, order.flagged, order.tokens_revoked) == ("refunded", True, 1_500_000)
    assert "500,000 already used" in order.note
    assert [e.status for e in _events()] == ["processed", "ignored"]


def test_partial_refund_takes_back_a_proportional_share(live_server, client, paypal, plan):
    order = start_purchase(client, plan)
    client.get(paypal.approve(order.paypal_order_id).split("testserver", 1)[1])
    order = reload(order)
    paypal.send_webhook(
        _hook(live_server), paypal.event("PAYMENT.CAPTURE.REFUNDED", paypal.refund(order.paypal_capture_id, "0.25"))
    )
    webhooks.process_event(_events()[0].id)
    db.session.expire_all()
    assert db.session.get(ApiKey, order.api_key_id).tokens_quota == 1_500_000
    assert reload(order).tokens_revoked == 500_000


def test_unknown_event_types_are_stored_and_ignored(live_server, paypal):
    event = paypal.event("BILLING.SUBSCRIPTION.CREATED", {"id": "I-123"})
    assert paypal.send_webhook(_hook(live_server), event).status_code == 200
    (row,) = _events()
    assert webhooks.process_event(row.id) == "ignored"
    assert row.event_id == event["id"] and row.event_type == "BILLING.SUBSCRIPTION.CREATED"


def test_webhook_is_refused_when_no_webhook_id_is_configured(app, live_server, paypal):
    app.config["PAYPAL_WEBHOOK_ID"] = None
    event = paypal.event("PAYMENT.CAPTURE.COMPLETED", {"id": "X"})
    assert paypal.send_webhook(_hook(live_server), event, webhook_id=WEBHOOK_ID).status_code == 400
    assert _events() == []
    assert db.session.execute(db.select(Order)).first() is None
