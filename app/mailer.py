"""Sending email over SMTP with the standard library: explicit timeouts, STARTTLS, optional login.

No Flask here: callers pass the settings, so a worker and a test use the same function.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any


class MailNotConfigured(RuntimeError):
    """SMTP_HOST is not set: nothing can be sent (a local install without a mail server)."""


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    user: str | None
    password: str | None
    starttls: bool
    timeout: float
    sender: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SmtpSettings:
        if not config.get("SMTP_HOST"):
            raise MailNotConfigured("SMTP_HOST is not set")
        return cls(
            host=config["SMTP_HOST"],
            port=int(config.get("SMTP_PORT") or 587),
            user=config.get("SMTP_USER"),
            password=config.get("SMTP_PASSWORD"),
            starttls=bool(config.get("SMTP_STARTTLS", True)),
            timeout=float(config.get("SMTP_TIMEOUT") or 15.0),
            sender=config.get("MAIL_FROM") or "no-reply@localhost",
        )


def build_message(
    *, sender: str, to: str, subject: str, text: str, html: str | None = None, message_id: str | None = None
) -> EmailMessage:
    """A text/plain message with an optional HTML alternative.

    A stable `message_id` lets mail clients and servers drop the duplicate that a retried
    send could produce after a lost SMTP reply."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id or make_msgid(domain=_domain_of(sender))
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    return message


def send(message: EmailMessage, settings: SmtpSettings) -> None:
    """Raises smtplib.SMTPException or OSError on failure; the caller decides whether to retry."""
    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
        if settings.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        smtp.send_message(message)


def _domain_of(address: str) -> str:
    domain = address.rsplit("@", 1)[-1].strip(" >")
    return domain or "localhost"
