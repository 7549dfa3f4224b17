"""The admins' email about an upstream account (delivery.send_upstream_alert): every active admin
once per event, also when SMTP fails halfway and the task is retried; nothing when it is over."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest

from app.extensions import db
from app.models import AdminUser, Upstream
from app.orders import delivery
from app.routing import catalog
from tests.conftest import UPSTREAM_SECRET
from tests.smtp_sink import SmtpSink, text_of


@pytest.fixture
def admins(app: Any) -> None:
    for i in range(2):
        admin = AdminUser(email=f"ops{i}@example.com", active=True)
        admin.set_password("correct horse battery")
        db.session.add(admin)
    db.session.commit()


def _disabled() -> Upstream:
    upstream = db.session.execute(db.select(Upstream).filter_by(name="deepseek")).scalar_one()
    catalog.mark_disabled(upstream.id, "Authentication Fails, Your api key is invalid")
    return upstream


def test_a_retry_after_smtp_failed_halfway_emails_only_the_admins_not_yet_told(admins, mail: SmtpSink):
    upstream = _disabled()
    mail.refuse_to("ops1@example.com")  # the second admin's message fails: the task fails and is retried
    with pytest.raises(smtplib.SMTPException):
        delivery.send_upstream_alert(upstream.id, "disabled", "disabled-e1")
    assert [m["To"] for m in mail.messages] == ["ops0@example.com"]
    mail.handler.refused_addresses.clear()
    assert delivery.send_upstream_alert(upstream.id, "disabled", "disabled-e1") == 1  # ops1 only
    assert delivery.send_upstream_alert(upstream.id, "disabled", "disabled-e1") == 0
    assert sorted(m["To"] for m in mail.messages) == ["ops0@example.com", "ops1@example.com"]
    body = text_of(mail.messages[0])
    assert "took the upstream account deepseek out of service" in body and "Authentication Fails" in body
    assert UPSTREAM_SECRET not in body and "http://testserver/admin/upstreams" in body


def test_nothing_is_sent_once_the_account_is_back(admins, mail: SmtpSink):
    upstream = _disabled()
    catalog.set_upstream("deepseek", enabled=True)  # put back before the worker got to it
    assert delivery.send_upstream_alert(upstream.id, "disabled", "disabled-e2") == 0
    assert delivery.send_upstream_alert(upstream.id, "low_balance", "low-e2") == 0  # never warned
    assert mail.messages == []


def test_the_email_is_in_the_sites_default_language(app, admins, mail: SmtpSink):
    app.config["BABEL_DEFAULT_LOCALE"] = "zh"
    upstream = _disabled()
    assert delivery.send_upstream_alert(upstream.id, "disabled", "disabled-e3") == 2
    assert mail.messages[0]["Subject"] == "RelayGate：上游 deepseek 已被下线"
    assert "网关已将上游账户 deepseek 下线" in text_of(mail.messages[0])
