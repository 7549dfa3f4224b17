"""Orders in the admin: what was bought, by whom, PayPal ids, refunds; completion and key resend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests

from app.extensions import db
from app.models import ApiKey, AuditLog, Order, Plan, WebhookEvent, utcnow
from tests.admin.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_from
from tests.conftest import app_overrides
from tests.orders.racing import at_once, one_replacement_email, run_in_processes, wait_for_workers
from tests.smtp_sink import SmtpSink


def _order(plan: Plan, **fields) -> Order:
    values = {
        "public_id": uuid.uuid4().hex,
        "plan_id": plan.id,
        "email": "buyer@example.com",
        "tokens": plan.tokens,
        "amount_cents": plan.price_cents,
        "status": "created",
        **fields,
    }
    order = Order(**values)
    db.session.add(order)
    db.session.commit()
    return order


def _plan() -> Plan:
    plan = Plan(name="2M tokens", tokens=2_000_000, price_cents=100)
    db.session.add(plan)
    db.session.commit()
    return plan


def test_orders_list_shows_buyer_paypal_ids_amounts_and_refunds(admin, make_key):
    plan = _plan()
    row, _ = make_key()
    now = utcnow()
    _order(
        plan,
        email="paid@example.com",
        status="fulfilled",
        paypal_order_id="PP-ORDER-1",
        paypal_capture_id="PP-CAP-1",
        paid_at=now,
        fulfilled_at=now,
        api_key_id=row.id,
    )
    _order(
        plan,
        email="refund@example.com",
        status="refunded",
        paypal_order_id="PP-ORDER-2",
        paid_at=now,
        fulfilled_at=now,
        refunded_at=now,
        tokens_revoked=1_500_000,
        amount_cents=250,
    )
    _order(plan, email="left@example.com", status="cancelled")
    page = admin.get("/admin/orders").text
    for text in ("paid@example.com", "PP-ORDER-1", "$1.00", "$2.50", "fulfilled", "refunded", "cancelled"):
        assert text in page
    assert "refund@example.com" not in admin.get("/admin/orders", query_string={"status": "fulfilled"}).text
    assert "left@example.com" not in admin.get("/admin/orders", query_string={"q": "PP-ORDER-1"}).text
    refunded = admin.get("/admin/orders", query_string={"status": "refunded"}).text
    assert "refund@example.com" in refunded and "paid@example.com" not in refunded
    detail = admin.get("/admin/orders/2").text
    assert "1,500,000 unused tokens taken back" in detail and "PP-ORDER-2" in detail


def test_orders_needing_attention_are_counted_on_the_overview_and_listed(admin):
    plan = _plan()
    now = utcnow()
    _order(plan, email="stuck@example.com", status="approved", paypal_order_id="A", updated_at=now - timedelta(hours=1))
    _order(plan, email="review@example.com", status="review", paypal_order_id="B")
    _order(plan, email="paid@example.com", status="created", paypal_order_id="C", paid_at=now)
    _order(plan, email="fresh@example.com", status="approved", paypal_order_id="D")  # buyer still at PayPal
    _order(plan, email="done@example.com", status="fulfilled", paypal_order_id="E", paid_at=now, fulfilled_at=now)
    assert "3 orders need attention" in admin.get("/admin/").text
    listed = admin.get("/admin/orders", query_string={"status": "attention"}).text
    assert all(e in listed for e in ("stuck@", "review@", "paid@"))
    assert "fresh@" not in listed and "done@" not in listed


def test_order_page_shows_its_webhooks(admin):
    plan = _plan()
    order = _order(plan, status="approved", paypal_order_id="PP-7", paypal_capture_id="CAP-7")
    for event_id, resource in (("WH-1", "PP-7"), ("WH-2", "CAP-7"), ("WH-3", "SOMEONE-ELSE")):
        db.session.add(
            WebhookEvent(event_id=event_id, event_type="PAYMENT.CAPTURE.COMPLETED", resource_id=resource, payload={})
        )
    db.session.commit()
    page = admin.get(f"/admin/orders/{order.id}").text
    assert "WH-1" in page and "WH-2" in page and "WH-3" not in page
    assert "Complete order" in page and "Resend key" not in page


def test_completing_a_fulfilled_order_is_refused(admin, make_key):
    plan = _plan()
    row, _ = make_key()
    now = utcnow()
    order = _order(plan, status="fulfilled", paypal_order_id="P1", paid_at=now, fulfilled_at=now, api_key_id=row.id)
    page = admin.get(f"/admin/orders/{order.id}").text
    assert "Complete order" not in page and "Resend key (replacement)" in page
    response = admin.post(f"/admin/orders/{order.id}/complete", follow_redirects=True)
    assert "already fulfilled or refunded" in response.text
    assert db.session.execute(db.select(AuditLog).filter_by(action="order.complete")).first() is None


def test_manual_completion_goes_through_the_order_domain(app, admin):
    plan = _plan()
    order = _order(plan, status="review", paypal_order_id="P2")
    admin.post(f"/admin/orders/{order.id}/complete", follow_redirects=True)
    db.session.expire_all()
    assert db.session.get(Order, order.id).fulfilled_at is not None
    assert db.session.execute(db.select(AuditLog).filter_by(action="order.complete")).scalar_one()


def test_resend_is_refused_for_an_order_without_a_key(admin):
    plan = _plan()
    order = _order(plan, status="cancelled", paypal_order_id="P3")
    response = admin.post(f"/admin/orders/{order.id}/resend", follow_redirects=True)
    assert "Only a fulfilled order for a new key can have its key replaced." in response.text


# -- one click or twenty at once: the same single effect -------------------------------------------


@pytest.fixture
def mail() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def dashboard(gunicorn_factory, celery_worker_factory, admin_user, mail) -> Iterator[tuple[str, requests.Session, str]]:
    """The admin under gunicorn (two worker processes) and two Celery workers that send email to
    the sink; returns its URL, a logged-in session and that session's CSRF token."""
    env = {**mail.env(), "MAIL_FROM": "RelayGate <shop@relay.test>"}
    server = gunicorn_factory(workers=2, **env)
    for _ in range(2):
        celery_worker_factory(**env)
    session = requests.Session()
    login = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    login["csrf_token"] = csrf_from(session.get(f"{server.url}/admin/login", timeout=10).text)
    assert session.post(f"{server.url}/admin/login", data=login, allow_redirects=False, timeout=10).status_code == 302
    yield server.url, session, csrf_from(session.get(f"{server.url}/admin/keys/new", timeout=10).text)
    session.close()  # gunicorn's graceful stop would wait for these kept-alive connections


@pytest.fixture
def in_processes(db_url, fake_server) -> Any:
    """The admin's button pressed in four more browsers, served by four more processes at once."""
    config = app_overrides(db_url, fake_server.base_url)
    login = ("tests.orders.racing:admin_browser", (ADMIN_EMAIL, ADMIN_PASSWORD))
    return lambda path, meanwhile: run_in_processes(
        config, "tests.orders.racing:submit", [(path,)], prepare=login, meanwhile=meanwhile
    )


def _press_everywhere_at_once(dashboard, in_processes, path: str) -> None:
    """The operator's button pressed 16 times at once on the gunicorn workers and 4 times on other processes."""
    url, session, token = dashboard

    def click():
        return session.post(f"{url}{path}", data={"csrf_token": token}, allow_redirects=False, timeout=30).status_code

    pages: list[int] = []
    processes = in_processes(path, meanwhile=lambda: pages.extend(at_once([click] * 16)))
    pages += [status for results in processes for status in results]
    assert pages == [302] * 20  # each answered with a redirect back to the order page


def _audit(action: str) -> int:
    return db.session.execute(db.select(db.func.count(AuditLog.id)).filter_by(action=action)).scalar_one()


def test_completing_an_order_many_times_at_once_delivers_one_key_and_one_email(
    app, redis, dashboard, in_processes, mail
):
    order = _order(_plan(), status="review", paypal_order_id="PP-R", paypal_capture_id="CAP-R", flagged=True)
    _press_everywhere_at_once(dashboard, in_processes, f"/admin/orders/{order.id}/complete")
    wait_for_workers(redis)

    assert _audit("order.complete") == 1
    db.session.expire_all()
    keys = db.session.execute(db.select(ApiKey)).scalars().all()
    assert [(k.email, k.tokens_quota) for k in keys] == [("buyer@example.com", 2_000_000)]
    assert db.session.get(Order, order.id).status == "fulfilled"
    assert [m["To"] for m in mail.wait_for(1)] == ["buyer@example.com"]
    wait_for_workers(redis)
    assert len(mail.messages) == 1


def test_resending_a_key_many_times_at_once_replaces_it_once_and_sends_one_email(
    redis, make_key, dashboard, in_processes, mail
):
    row, old_key = make_key(tokens=2_000_000, email="buyer@example.com")
    now = utcnow()
    paid = {"paid_at": now, "fulfilled_at": now, "api_key_id": row.id}
    order = _order(_plan(), status="fulfilled", paypal_order_id="PP-S", **paid)
    _press_everywhere_at_once(dashboard, in_processes, f"/admin/orders/{order.id}/resend")
    wait_for_workers(redis)

    assert _audit("order.resend_key") == 1
    one_replacement_email(mail, redis, row.id, old_key)
