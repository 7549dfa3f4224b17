"""app.mailer against the aiosmtpd sink."""

from __future__ import annotations

import smtplib

import pytest

from app import mailer
from tests.smtp_sink import html_of, text_of


def _settings(sink) -> mailer.SmtpSettings:
    return mailer.SmtpSettings.from_config({**sink.config(), "MAIL_FROM": "Shop <shop@relay.test>", "SMTP_TIMEOUT": 5})


def _message(**kwargs) -> mailer.EmailMessage:
    return mailer.build_message(
        sender="Shop <shop@relay.test>", to="b@example.com", subject="你好 key", text="plain 文本", **kwargs
    )


def test_sends_text_and_html_with_a_stable_message_id(mail):
    mailer.send(_message(html="<p>html</p>", message_id="<order-1@relay.test>"), _settings(mail))
    (received,) = mail.wait_for(1)
    assert received["Subject"] == "你好 key" and received["Message-ID"] == "<order-1@relay.test>"
    assert text_of(received).strip() == "plain 文本" and "<p>html</p>" in html_of(received)
    assert mail.handler.envelopes[0] == ("shop@relay.test", ["b@example.com"])


def test_a_refusing_server_raises_for_the_caller_to_retry(mail):
    mail.fail_next(1)
    with pytest.raises(smtplib.SMTPDataError):
        mailer.send(_message(), _settings(mail))
    assert mail.messages == []


def test_no_smtp_host_means_not_configured():
    with pytest.raises(mailer.MailNotConfigured):
        mailer.SmtpSettings.from_config({"SMTP_HOST": None})
