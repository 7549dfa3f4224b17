"""Email tasks: thin shells over app.orders.delivery. SMTP failures are retried with backoff;
delivery records what was sent, so a retry never sends a second copy."""

from __future__ import annotations

import smtplib

from celery import shared_task

from app.orders import delivery

_RETRY = {
    "autoretry_for": (smtplib.SMTPException, OSError),
    "retry_backoff": True,
    "retry_backoff_max": 900,
    "max_retries": 10,
    "ignore_result": True,
}


@shared_task(name="email.send_order_email", **_RETRY)
def send_order_email(order_id: int) -> None:
    delivery.send_order_email(order_id)


@shared_task(name="email.send_lost_key_link", **_RETRY)
def send_lost_key_link(email: str, locale: str, site: str | None = None) -> None:
    delivery.send_lost_key_link(email, locale, site)


@shared_task(name="email.send_replacement_key", **_RETRY)
def send_replacement_key(key_id: int, key_ciphertext: str, locale: str, site: str | None = None) -> None:
    delivery.send_replacement_key(key_id, key_ciphertext, locale, site)


@shared_task(name="email.send_gift_key", **_RETRY)
def send_gift_key(key_id: int, key_ciphertext: str, locale: str, site: str | None = None) -> None:
    delivery.send_gift_key(key_id, key_ciphertext, locale, site)


@shared_task(name="email.send_upstream_alert", **_RETRY)
def send_upstream_alert(upstream_id: int, kind: str, event: str) -> None:
    delivery.send_upstream_alert(upstream_id, kind, event)


@shared_task(name="email.send_low_balance", **_RETRY)
def send_low_balance_email(key_id: int, quota: int) -> None:
    delivery.send_low_balance_email(key_id, quota)
