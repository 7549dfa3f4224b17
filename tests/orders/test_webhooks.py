"""POST /paypal/webhook: verification, storage under the event id, processing by the worker,
exactly once however many times and however concurrently an event arrives."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import requests

from app.billing import quota
from app.billing.statements import remaining_tokens
from app.extensions import db
from app.models import ApiKey, Order, Plan, WebhookEvent, utcnow
from app.orders import pending, webhooks
from tests.conftest import wait_until
from tests.fake_paypal import WEBHOOK_ID
from tests.orders.racing import at_once, enqueue, queued_tasks, wait_for_workers
from tests.shop import reload, start_purchase


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


# -- exactly once, however many times and however concurrently an event arrives -----------------


def _deliver_at_once(paypal, server, deliveries) -> list[int]:
    """POST every delivery at the same moment to the storefront's gunicorn workers."""
    url = f"{server.url}/paypal/webhook"
    return [r.status_code for r in at_once([lambda e=e: paypal.send_webhook(url, e) for e in deliveries])]


def _process_everywhere(in_processes) -> None:
    """Every stored event, processed by four worker processes at the same moment (the task taken
    twice after a redelivery, a requeue racing the original, two workers on duplicate tasks)."""
    _check_outcomes(_run_everywhere(in_processes, [e.id for e in _events()]))


def _run_everywhere(in_processes, row_ids: list[int]) -> list[list[str]]:
    return in_processes("app.orders.webhooks:process_event", [(row_id,) for row_id in row_ids])


def _check_outcomes(outcomes: list[list[str]]) -> None:
    errors = [e.error for e in _events() if e.error]
    assert {o for results in outcomes for o in results} <= {"processed", "ignored", "processing"}, (outcomes, errors)


def _settle_unsynced_usage(redis, key_id: int, billed: int) -> None:
    """Usage billed in Redis whose record the worker has not written to SQL yet."""
    record = {"request_id": "req-unsynced", "api_key_id": key_id, "billed_tokens": billed}
    assert quota.settle(redis, "rg", key_id, "req-unsynced", 0, billed, json.dumps(record)) == 1


def _key(key_id: int) -> ApiKey:
    db.session.expire_all()
    return db.session.get(ApiKey, key_id)


def test_one_refund_delivered_twenty_times_at_once_takes_the_tokens_back_once(
    client, paypal, plan, redis, shop, in_processes
):
    order = start_purchase(client, plan)
    client.get(paypal.approve(order.paypal_order_id).split("testserver", 1)[1])
    order = reload(order)
    db.session.execute(db.update(ApiKey).where(ApiKey.id == order.api_key_id).values(tokens_used=400_000))
    db.session.commit()
    _settle_unsynced_usage(redis, order.api_key_id, 100_000)  # used: 400,000 in SQL + 100,000 in Redis
    refund = paypal.refund(order.paypal_capture_id)
    refunded = paypal.event("PAYMENT.CAPTURE.REFUNDED", refund)
    reversed_ = paypal.event("PAYMENT.CAPTURE.REVERSED", refund)  # the same refund, another event type
    again = paypal.event("PAYMENT.CAPTURE.REFUNDED", refund)  # the same refund under another event id
    statuses = _deliver_at_once(paypal, shop, [refunded] * 14 + [reversed_] * 3 + [again] * 3)
    _process_everywhere(in_processes)

    assert statuses == [200] * 20
    key = _key(order.api_key_id)
    assert (key.tokens_quota, key.tokens_used, remaining_tokens(key)) == (500_000, 400_000, 0)
    order = reload(order)
    assert (order.flagged, order.tokens_revoked) == (True, 1_500_000)
    assert order.status in ("refunded", "reversed")  # whichever of the two events came first
    assert f"{order.status} 1.00 USD: took back 1,500,000 of 2,000,000 tokens (500,000 already used)" == order.note
    assert sorted(e.status for e in _events()) == ["ignored", "ignored", "processed"]


def test_two_partial_refunds_each_delivered_many_times_are_each_applied_once(client, paypal, plan, shop, in_processes):
    order = start_purchase(client, plan)
    client.get(paypal.approve(order.paypal_order_id).split("testserver", 1)[1])
    order = reload(order)
    first = paypal.event("PAYMENT.CAPTURE.REFUNDED", paypal.refund(order.paypal_capture_id, "0.25"))
    second = paypal.event("PAYMENT.CAPTURE.REFUNDED", paypal.refund(order.paypal_capture_id, "0.50"))
    assert _deliver_at_once(paypal, shop, [first, second] * 10) == [200] * 20
    _process_everywhere(in_processes)

    assert _key(order.api_key_id).tokens_quota == 500_000  # 2,000,000 - 500,000 - 1,000,000
    order = reload(order)
    assert (order.status, order.tokens_revoked) == ("refunded", 1_500_000)
    assert sorted(e.status for e in _events()) == ["processed", "processed"]


def test_a_denial_delivered_twenty_times_at_once_declines_the_order_once(client, paypal, plan, shop, in_processes):
    order = start_purchase(client, plan)
    paypal.fail_next_capture("PENDING")
    client.get(paypal.approve(order.paypal_order_id).split("testserver", 1)[1])
    assert reload(order).status == "pending"
    denied = {**paypal.order(order.paypal_order_id)["capture"], "status": "DECLINED"}
    events = [paypal.event("PAYMENT.CAPTURE.DENIED", denied), paypal.event("PAYMENT.CAPTURE.DECLINED", denied)]
    assert _deliver_at_once(paypal, shop, [events[0]] * 15 + [events[1]] * 5) == [200] * 20
    _process_everywhere(in_processes)

    order = reload(order)
    # One decline, so one new PayPal-Request-Id for the buyer's next attempt, not one per delivery.
    assert (order.status, order.capture_attempts, order.api_key_id) == ("declined", 1, None)
    assert db.session.execute(db.select(ApiKey)).first() is None


def _age(order: Order, minutes: int = 5) -> None:
    then = utcnow() - timedelta(minutes=minutes)
    db.session.execute(db.update(Order).where(Order.id == order.id).values(created_at=then, updated_at=then))
    db.session.commit()


def test_a_payment_reported_twenty_times_at_once_racing_the_return_page_and_the_reconciler_is_credited_once(
    app, client, paypal, plan, redis, shop, start_workers, in_processes, mail
):
    order, capture = _paid_without_return(client, paypal, plan, email="late@example.com")
    completed = paypal.event("PAYMENT.CAPTURE.COMPLETED", capture)
    approved = paypal.event("CHECKOUT.ORDER.APPROVED", {"id": order.paypal_order_id, "status": "APPROVED"})
    assert _deliver_at_once(paypal, shop, [completed, approved] * 10) == [200] * 20
    assert queued_tasks(redis) == 2  # one task per event, not one per delivery
    _age(order)  # old enough for the reconciler to look it up at PayPal

    start_workers(2)

    def reconciler():
        with app.app_context():
            return pending.reconcile_orders()

    return_path = f"/checkout/return/{order.public_id}"

    def return_page():
        return client.get(return_path).status_code

    row_ids = [e.id for e in _events()]

    def worker_processes():
        return _run_everywhere(in_processes, row_ids)

    enqueue(app, "paypal.reconcile_orders", [], 5)
    *_, outcomes = at_once([reconciler, return_page, reconciler, return_page, worker_processes])
    wait_for_workers(redis)
    _check_outcomes(outcomes)

    keys = db.session.execute(db.select(ApiKey)).scalars().all()
    assert [(k.email, k.tokens_quota) for k in keys] == [("late@example.com", 2_000_000)]
    order = reload(order)
    assert (order.status, order.api_key_id) == ("fulfilled", keys[0].id)
    assert sorted(e.status for e in _events()) == ["processed", "processed"]
    mail.wait_for(1)
    wait_for_workers(redis)
    assert [m["To"] for m in mail.messages] == ["late@example.com"]


def test_top_ups_and_a_refund_delivered_twenty_times_at_once_credit_and_take_back_once(
    client, paypal, make_key, shop, in_processes
):
    month = Plan(name="2M tokens, 30 days", tokens=2_000_000, price_cents=100, valid_days=30, active=True)
    db.session.add(month)
    db.session.commit()
    expires = (utcnow() + timedelta(days=10)).replace(microsecond=0)
    row, key = make_key(tokens=1_000, email="old@example.com", expires_at=expires)
    first, first_capture = _paid_without_return(client, paypal, month, email="old@example.com", key=key)
    second, second_capture = _paid_without_return(client, paypal, month, email="old@example.com", key=key)
    paid = [paypal.event("PAYMENT.CAPTURE.COMPLETED", c) for c in (first_capture, second_capture)]
    assert _deliver_at_once(paypal, shop, paid * 10) == [200] * 20
    _process_everywhere(in_processes)

    topped_up = _key(row.id)
    assert topped_up.tokens_quota == 1_000 + 2 * 2_000_000
    assert topped_up.expires_at == expires + timedelta(days=60)  # both extensions, neither lost
    assert {reload(first).status, reload(second).status} == {"fulfilled"}

    refund = paypal.event("PAYMENT.CAPTURE.REFUNDED", paypal.refund(reload(first).paypal_capture_id))
    assert _deliver_at_once(paypal, shop, [refund] * 20) == [200] * 20
    _process_everywhere(in_processes)

    assert _key(row.id).tokens_quota == 1_000 + 2_000_000
    assert (reload(first).status, reload(first).tokens_revoked) == ("refunded", 2_000_000)
    assert (reload(second).status, reload(second).tokens_revoked) == ("fulfilled", 0)


def test_an_event_being_processed_is_left_alone_until_its_claim_expires(live_server, client, paypal, plan):
    order = start_purchase(client, plan)
    client.get(paypal.approve(order.paypal_order_id).split("testserver", 1)[1])
    order = reload(order)
    refund = paypal.event("PAYMENT.CAPTURE.REFUNDED", paypal.refund(order.paypal_capture_id))
    assert paypal.send_webhook(_hook(live_server), refund).status_code == 200
    (event,) = _events()
    claimed = {"status": "processing", "claimed_at": utcnow()}  # another worker is on it right now
    db.session.execute(db.update(WebhookEvent).where(WebhookEvent.id == event.id).values(**claimed))
    db.session.commit()

    assert webhooks.process_event(event.id) == "processing"
    assert (reload(order).status, _key(order.api_key_id).tokens_quota) == ("fulfilled", 2_000_000)
    assert pending.reconcile_orders()["events_requeued"] == 0

    died = utcnow() - webhooks.CLAIM_LEASE - timedelta(seconds=1)  # that worker was killed
    db.session.execute(db.update(WebhookEvent).where(WebhookEvent.id == event.id).values(claimed_at=died))
    db.session.commit()
    assert pending.reconcile_orders()["events_requeued"] == 1
    assert webhooks.process_event(event.id) == "processed"
    assert (reload(order).status, _key(order.api_key_id).tokens_quota) == ("refunded", 0)
    assert webhooks.process_event(event.id) == "processed"  # a late copy of the task changes nothing


def test_malformed_webhooks_are_refused_with_a_clear_error(live_server, paypal):
    good = paypal.event("PAYMENT.CAPTURE.COMPLETED", {"id": "CAP-1"})
    bad = [
        {k: v for k, v in good.items() if k != "id"},
        {**good, "id": 12345},
        {**good, "id": ""},
        {**good, "id": "x" * 200},
        {**good, "event_type": ["PAYMENT.CAPTURE.COMPLETED"]},
        {k: v for k, v in good.items() if k != "resource"},
        {**good, "resource": ["CAP-1"]},
        {**good, "resource": "CAP-1"},
        {**good, "resource": {"id": {"nested": True}}},
    ]
    for event in bad:
        response = paypal.send_webhook(_hook(live_server), event)
        assert response.status_code == 400, event
        assert "malformed event" in response.json()["error"], event
    not_json = requests.post(_hook(live_server), data=b"[1, 2]", timeout=10)
    assert not_json.status_code == 400 and "malformed event" in not_json.json()["error"]
    assert _events() == []
