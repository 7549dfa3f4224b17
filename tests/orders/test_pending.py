"""The beat task that looks up unpaid orders at PayPal."""

from __future__ import annotations

from datetime import timedelta

from app.extensions import db
from app.models import ApiKey, Order, utcnow
from app.orders import fulfilment, pending
from tests.conftest import wait_until
from tests.shop import reload, start_purchase


def _age(order: Order, **delta: float) -> None:
    db.session.execute(
        db.update(Order)
        .where(Order.id == order.id)
        .values(created_at=utcnow() - timedelta(**delta), updated_at=utcnow() - timedelta(**delta))
    )
    db.session.commit()


def test_reconcile_task_finds_a_paid_order_and_delivers_the_key(app, client, paypal, plan, store_worker, mail):
    order = start_purchase(client, plan, email="gone@example.com")
    paypal.capture_without_return(order.paypal_order_id)  # paid, closed the tab, webhook lost
    _age(order, minutes=5)
    app.extensions["celery"].send_task("paypal.reconcile_orders")
    wait_until(lambda: reload(order).status == "fulfilled", timeout=15)
    message = mail.wait_for(1)[0]
    assert message["To"] == "gone@example.com" and "sk-gateway-" in message.get_body(("plain",)).get_content()
    assert db.session.execute(db.select(db.func.count(ApiKey.id))).scalar_one() == 1


def test_reconcile_captures_an_approved_order_and_leaves_fresh_ones_alone(client, paypal, plan):
    stale = start_purchase(client, plan)
    fresh = start_purchase(client, plan)
    for order in (stale, fresh):
        paypal.approve(order.paypal_order_id)
    _age(stale, minutes=5)
    counts = pending.reconcile_orders()
    assert counts["fulfilled"] == 1
    assert (reload(stale).status, reload(fresh).status) == ("fulfilled", "created")


def test_reconcile_expires_orders_never_approved(client, paypal, plan):
    order = start_purchase(client, plan)
    _age(order, hours=7)
    assert pending.reconcile_orders()["expired"] == 1
    assert reload(order).status == "expired"


def test_reconcile_stops_quietly_when_paypal_is_down(client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.approve(order.paypal_order_id)
    _age(order, minutes=5)
    paypal.fail_next_capture(503)
    assert pending.reconcile_orders()["unreachable"] == 1
    assert reload(order).status == "created"
    assert pending.reconcile_orders()["fulfilled"] == 1  # the next run


def test_delivered_key_is_wiped_after_the_reveal_window(app, client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.capture_without_return(order.paypal_order_id)
    _age(order, minutes=5)
    pending.reconcile_orders()
    order = reload(order)
    assert order.key_ciphertext  # kept: the buyer may still come back to the page
    db.session.execute(db.update(Order).where(Order.id == order.id).values(emailed_at=utcnow()))
    db.session.commit()
    later = utcnow() + timedelta(seconds=app.config["KEY_REVEAL_SECONDS"] + 60)
    assert fulfilment.wipe_delivered_keys(later) == 1
    assert reload(order).key_ciphertext is None


def test_orders_reconcile_runs_the_look_up_once_and_says_what_it_did(app, client, paypal, plan):
    order = start_purchase(client, plan)
    paypal.approve(order.paypal_order_id)
    _age(order, minutes=5)
    paypal.fail_next_capture(503)
    runner = app.test_cli_runner()
    down = runner.invoke(args=["orders", "reconcile"])
    assert down.exit_code != 0
    assert "unreachable 1" in down.output and "run it again later" in down.output
    done = runner.invoke(args=["orders", "reconcile"])
    assert done.exit_code == 0, done.output
    assert "fulfilled 1" in done.output
    assert reload(order).status == "fulfilled"
