"""The pool's health probe (app/routing/probe.py): the pure rules as tables, then the probe against
fake DeepSeek accounts on loopback, real Redis and the real SMTP sink."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.extensions import db
from app.models import AdminUser, Upstream
from app.routing import catalog, health, probe
from app.routing.pool import BreakerPolicy
from tests.conftest import UPSTREAM_SECRET, free_port
from tests.fake_deepseek import FakeDeepSeek, FakeServer
from tests.shop import mail, smtp_server  # noqa: F401 - the real SMTP sink
from tests.smtp_sink import SmtpSink, text_of
from workers import email as email_tasks

P = "rg"


# -- the rules ----------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("amount", "cents"),
    [
        ("110.00", 11000),
        ("0.29", 29),  # a float would make this 28
        ("12.345", 1234),  # rounded down: never more than the account holds
        ("0", 0),
        ("-1.50", -150),
        ("1e2", 10000),
        ("", None),
        ("abc", None),
        ("NaN", None),
        (None, None),
    ],
)
def test_amounts_become_exact_minor_units(amount, cents):
    assert probe.to_cents(amount) == cents


@pytest.mark.unit
@pytest.mark.parametrize(
    ("payload", "balance"),
    [
        (
            {"is_available": True, "balance_infos": [{"currency": "CNY", "total_balance": "110.00"}]},
            probe.Balance("CNY", 11000, True),
        ),
        (
            {"is_available": False, "balance_infos": [{"currency": "USD", "total_balance": "0.00"}]},
            probe.Balance("USD", 0, False),
        ),
        (
            {"balance_infos": [{"currency": "USD", "total_balance": "x"}, {"currency": "CNY", "total_balance": "1"}]},
            probe.Balance("CNY", 100, None),
        ),
        ({"is_available": True, "balance_infos": []}, None),
        ({"error": "nope"}, None),
        (None, None),
    ],
)
def test_the_balance_is_read_from_deepseeks_answer(payload, balance):
    assert probe.balance_from(payload) == balance


@pytest.mark.unit
@pytest.mark.parametrize(
    ("balance", "threshold", "warned", "change"),
    [
        (499, 500, False, probe.WARN),  # falls below: warn
        (400, 500, True, None),  # still below: warned already
        (500, 500, True, probe.CLEAR),  # back at the threshold: the next fall warns again
        (900, 500, False, None),
        (None, 500, False, None),  # no balance read: nothing known
        (None, 500, True, None),
        (100, None, True, probe.CLEAR),  # the threshold was removed
        (100, None, False, None),
    ],
)
def test_low_balance_warns_once_per_crossing(balance, threshold, warned, change):
    assert probe.low_balance_change(balance, threshold, warned) == change


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status", "balance", "verdict"),
    [
        (200, None, probe.OK),
        (200, probe.Balance("USD", 10, True), probe.OK),
        (200, probe.Balance("USD", 0, False), probe.EMPTY),
        (401, None, probe.REFUSED),
        (402, None, probe.REFUSED),
        (403, None, probe.REFUSED),
        (500, None, probe.UNREACHABLE),
        (429, None, probe.UNREACHABLE),
    ],
)
def test_verdicts(status, balance, verdict):
    assert probe.verdict_of(status, balance) == verdict


# -- the probe -----------------------------------------------------------------------------------------


@pytest.fixture
def app_extra(smtp_server: SmtpSink) -> dict[str, Any]:  # noqa: F811
    return {**smtp_server.config(), "MAIL_FROM": "RelayGate <ops@relay.test>", "POOL_PROBE_TIMEOUT": 0.5}


@pytest.fixture
def admins(app: Any) -> list[AdminUser]:
    rows = [AdminUser(email=f"ops{i}@example.com", active=i < 2) for i in range(3)]  # the third one left
    for row in rows:
        row.set_password("correct horse battery")
    db.session.add_all(rows)
    db.session.commit()
    return rows


def _upstream(name: str = "deepseek") -> Upstream:
    db.session.expire_all()
    return db.session.execute(db.select(Upstream).filter_by(name=name)).scalar_one()


def queued_alerts(redis: Any) -> list[list[Any]]:
    """The arguments of the upstream-alert tasks waiting in the broker, oldest first."""
    found = []
    for raw in reversed(redis.lrange("celery", 0, -1)):  # kombu pushes on the left
        message = json.loads(raw)
        if message["headers"]["task"] == "email.send_upstream_alert":
            found.append(json.loads(base64.b64decode(message["body"]))[0])
    return found


def test_an_account_that_answers_again_is_put_back_and_its_balance_recorded(app, redis, fake):
    upstream_id = _upstream().id
    health.disable(redis, P, upstream_id, "Insufficient Balance")
    catalog.mark_disabled(upstream_id, "Insufficient Balance")
    fake.set_account(total="110.07", currency="CNY")

    assert probe.probe_upstreams() == {"deepseek": probe.OK}

    assert not redis.exists(health.state_key(P, upstream_id))
    row = _upstream()
    assert (row.status, row.status_reason, row.probe_error) == ("ok", "", "")
    assert (row.balance_cents, row.balance_currency, row.balance_text) == (11007, "CNY", "110.07 CNY")
    assert row.balance_checked_at is not None and row.probed_at is not None
    assert fake.state.account_requests == ["/models", "/user/balance"]


def test_an_open_breaker_closes_when_the_account_answers(app, redis, fake):
    upstream_id = _upstream().id
    for _ in range(2):
        health.record_failure(redis, P, upstream_id, time.time(), BreakerPolicy(2, 60.0, 600.0))
    assert redis.hget(health.state_key(P, upstream_id), "open_until")
    probe.probe_upstreams()
    assert not redis.exists(health.state_key(P, upstream_id))


@pytest.mark.parametrize("status", [401, 402])
def test_a_refusing_account_is_taken_out_once_and_kept_out(app, redis, fake, admins, status):
    fake.set_account(status=status)
    assert probe.probe_upstreams() == {"deepseek": probe.REFUSED}
    assert probe.probe_upstreams() == {"deepseek": probe.REFUSED}
    upstream_id = _upstream().id
    assert redis.hget(health.state_key(P, upstream_id), "disabled") == f"GET /models answered HTTP {status}".encode()
    row = _upstream()
    assert row.status == "disabled" and row.probe_error == f"GET /models answered HTTP {status}"
    (alert,) = queued_alerts(redis)  # one event, though two probes saw it
    assert alert[:2] == [upstream_id, "disabled"]


def test_an_empty_account_stays_out_and_its_zero_balance_is_recorded(app, redis, fake):
    upstream_id = _upstream().id
    health.disable(redis, P, upstream_id, "Insufficient Balance")
    fake.set_account(total="0.00", available=False)
    assert probe.probe_upstreams() == {"deepseek": probe.EMPTY}
    assert redis.hget(health.state_key(P, upstream_id), "disabled") == b"Insufficient Balance"
    assert _upstream().balance_cents == 0


def test_an_unreachable_account_is_left_as_it_is(app, redis):
    catalog.set_upstream("deepseek", base_url=f"http://127.0.0.1:{free_port()}")
    upstream_id = _upstream().id
    health.disable(redis, P, upstream_id, "Authentication Fails")
    assert probe.probe_upstreams() == {"deepseek": probe.UNREACHABLE}
    assert redis.hget(health.state_key(P, upstream_id), "disabled") == b"Authentication Fails"
    assert _upstream().probe_error.startswith("no answer (")


def test_low_balance_warns_the_admins_once_per_crossing(app, redis, fake, admins, mail):  # noqa: F811
    upstream = _upstream()
    upstream.low_balance_cents = 500
    db.session.commit()
    for total in ("4.99", "3.00", "2.00"):  # below, and below, and below: one crossing
        fake.set_account(total=total)
        probe.probe_upstreams()
    (alert,) = queued_alerts(redis)
    assert alert[:2] == [upstream.id, "low_balance"]
    assert UPSTREAM_SECRET not in json.dumps(alert)

    email_tasks.send_upstream_alert(*alert)  # the task body, as the worker runs it
    email_tasks.send_upstream_alert(*alert)  # a redelivery sends nothing more
    sent = mail.messages  # each send returned after the sink's 250
    assert sorted(m["To"] for m in sent) == ["ops0@example.com", "ops1@example.com"]  # not the inactive admin
    assert sent[0]["Subject"] == "RelayGate: upstream deepseek is running low"
    body = text_of(sent[0])
    assert "has 2.00 USD left, below the 5.00 USD you set" in body and "/admin/upstreams" in body  # as of now
    assert UPSTREAM_SECRET not in body

    for total in ("5.00", "4.00"):  # topped up to the threshold, then down again: a second crossing
        fake.set_account(total=total)
        probe.probe_upstreams()
    assert [a[1] for a in queued_alerts(redis)] == ["low_balance", "low_balance"]
    assert _upstream().balance_cents == 400


@pytest.fixture
def frozen() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


def test_a_frozen_account_holds_the_probe_up_only_for_its_timeout(app, redis, fake, frozen):
    catalog.set_upstream("frozen", base_url=frozen, api_key="sk-frozen-0000")
    healthy = FakeServer(FakeDeepSeek()).start()
    try:
        catalog.set_upstream("later", base_url=healthy.base_url, api_key="sk-later-0000")
        frozen_id = _upstream("frozen").id
        health.disable(redis, P, frozen_id, "Insufficient Balance")
        started = time.monotonic()
        verdicts = probe.probe_upstreams()
        elapsed = time.monotonic() - started
    finally:
        healthy.stop()
    # Without timeouts this never returns (the test's time limit would end it).
    assert verdicts == {"deepseek": probe.OK, "frozen": probe.UNREACHABLE, "later": probe.OK}
    assert elapsed < 10, elapsed  # one 0.5 s read timeout, with room for a busy machine
    assert redis.hget(health.state_key(P, frozen_id), "disabled") == b"Insufficient Balance"
    assert _upstream("frozen").probe_error == "no answer (ReadTimeoutError)"


def test_switched_off_and_demo_upstreams_are_not_probed(app, fake):
    catalog.set_upstream("deepseek", enabled=False)
    catalog.set_upstream("demo", base_url="demo:")
    assert probe.probe_upstreams() == {}
    assert fake.state.account_requests == []
