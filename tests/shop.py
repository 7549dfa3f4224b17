"""Storefront fixtures: the fake PayPal, the SMTP sink, the seeded plan, a worker wired to both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from app.extensions import db
from app.models import Order
from app.orders.plans import seed_plans
from tests import fake_paypal
from tests.fake_paypal import FakePayPal, FakePayPalServer
from tests.smtp_sink import SmtpSink


@pytest.fixture(scope="session")
def paypal_server() -> Iterator[FakePayPalServer]:
    server = FakePayPalServer().start()
    yield server
    server.stop()


@pytest.fixture
def paypal(paypal_server: FakePayPalServer) -> Iterator[FakePayPal]:
    paypal_server.fake.reset()
    yield paypal_server.fake


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def mail(smtp_server: SmtpSink) -> Iterator[SmtpSink]:
    smtp_server.reset()
    yield smtp_server
    smtp_server.reset()


def paypal_settings(base_url: str) -> dict[str, Any]:
    return {
        "PAYPAL_CLIENT_ID": fake_paypal.CLIENT_ID,
        "PAYPAL_CLIENT_SECRET": fake_paypal.CLIENT_SECRET,
        "PAYPAL_API_BASE": base_url,
        "PAYPAL_WEBHOOK_ID": fake_paypal.WEBHOOK_ID,
        "PAYPAL_TIMEOUT": 5.0,
    }


@pytest.fixture
def app_extra(paypal_server: FakePayPalServer, smtp_server: SmtpSink) -> dict[str, Any]:
    return {
        **paypal_settings(paypal_server.base_url),
        **smtp_server.config(),
        "MAIL_FROM": "RelayGate <shop@relay.test>",
    }


@pytest.fixture
def worker_env(paypal_server: FakePayPalServer, smtp_server: SmtpSink) -> dict[str, str]:
    """The same settings for a worker subprocess, which builds its app from the environment."""
    settings = {k: str(v) for k, v in paypal_settings(paypal_server.base_url).items()}
    return {**settings, **smtp_server.env(), "MAIL_FROM": "RelayGate <shop@relay.test>"}


@pytest.fixture
def store_worker(celery_worker_factory: Any, worker_env: dict[str, str], paypal: FakePayPal, mail: SmtpSink) -> Any:
    return celery_worker_factory(**worker_env)


@pytest.fixture
def plan(app: Any) -> Any:
    seed_plans()
    from app.orders.plans import active_plans

    return active_plans()[0]


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: Any, path: str) -> str:
    page = client.get(path)
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def start_purchase(client: Any, plan: Any, email: str = "buyer@example.com", key: str | None = None) -> Order:
    """Submit the buy (or top-up) form; returns the order, whose PayPal order now waits for approval."""
    path = "/topup" if key else f"/buy/{plan.id}"
    form = {"csrf_token": csrf_token(client, path), "plan_id": plan.id, "email": email}
    form.update({"kind": "topup", "key": key} if key else {"kind": "new"})
    response = client.post("/checkout", data=form)
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    db.session.expire_all()
    return db.session.execute(db.select(Order).order_by(Order.id.desc())).scalars().first()


def follow_paypal_return(client: Any, paypal: FakePayPal, order: Order) -> Any:
    """The buyer approves at PayPal and comes back; returns the order page response."""
    return_url = paypal.approve(order.paypal_order_id)
    path = return_url.split("//", 1)[1].split("/", 1)[1]
    response = client.get("/" + path)
    assert response.status_code == 303
    return client.get(response.headers["Location"])


def reload(order: Order) -> Order:
    db.session.expire_all()
    return db.session.get(Order, order.id)


@pytest.fixture
def shop(gunicorn_factory: Any, worker_env: dict[str, str], paypal: FakePayPal, mail: SmtpSink) -> Any:
    """The storefront under gunicorn with two worker processes, wired to the fake PayPal and the sink."""
    return gunicorn_factory(workers=2, **worker_env)


@pytest.fixture
def start_workers(celery_worker_factory: Any, worker_env: dict[str, str], paypal: FakePayPal, mail: SmtpSink) -> Any:
    """Start `count` Celery worker processes on the shared broker (started on demand: a test may
    first look at what was queued)."""

    def start(count: int = 2) -> list[Any]:
        return [celery_worker_factory(**worker_env) for _ in range(count)]

    return start


@pytest.fixture
def in_processes(db_url: str, fake_server: Any, app_extra: dict[str, Any]) -> Any:
    """Call a service function from four fresh processes at the same moment (see racing.run_in_processes)."""
    from tests.conftest import app_overrides
    from tests.orders.racing import run_in_processes

    config = app_overrides(db_url, fake_server.base_url, **app_extra)
    return lambda target, calls, **options: run_in_processes(config, target, calls, **options)
