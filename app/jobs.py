"""enqueue functions: the web app's only knowledge of the workers. Tasks are sent by name.

Embedded mode (no broker) runs the same service function in-process instead of queueing.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from flask import current_app

log = logging.getLogger(__name__)

RECORD_USAGE = "usage.record"
DRAIN_USAGE = "usage.drain"
RECONCILE_USAGE = "usage.reconcile"
PAYPAL_WEBHOOK = "paypal.process_webhook"
PAYPAL_RECONCILE = "paypal.reconcile_orders"
EMAIL_ORDER = "email.send_order_email"
EMAIL_LOST_KEY_LINK = "email.send_lost_key_link"
EMAIL_REPLACEMENT_KEY = "email.send_replacement_key"
EMAIL_GIFT_KEY = "email.send_gift_key"
EMAIL_UPSTREAM_ALERT = "email.send_upstream_alert"
POOL_PROBE = "pool.probe"
EMAIL_LOW_BALANCE = "email.send_low_balance"

# Task name -> the service function its worker task wraps, for embedded mode.
SERVICES = {
    RECORD_USAGE: "app.billing.ledger:write_record",
    DRAIN_USAGE: "app.billing.reconcile:drain_outbox",
    RECONCILE_USAGE: "app.billing.reconcile:reconcile",
    PAYPAL_WEBHOOK: "app.orders.webhooks:process_event",
    PAYPAL_RECONCILE: "app.orders.pending:reconcile_orders",
    EMAIL_ORDER: "app.orders.delivery:send_order_email",
    EMAIL_LOST_KEY_LINK: "app.orders.delivery:send_lost_key_link",
    EMAIL_REPLACEMENT_KEY: "app.orders.delivery:send_replacement_key",
    EMAIL_GIFT_KEY: "app.orders.delivery:send_gift_key",
    EMAIL_UPSTREAM_ALERT: "app.orders.delivery:send_upstream_alert",
    POOL_PROBE: "app.routing.probe:probe_upstreams",
    EMAIL_LOW_BALANCE: "app.orders.delivery:send_low_balance_email",
}
TASK_NAMES = tuple(SERVICES)


def _run_locally(name: str, args: tuple[Any, ...]) -> None:
    module, _, function = SERVICES[name].partition(":")
    try:
        getattr(importlib.import_module(module), function)(*args)
    except Exception:
        log.exception("in-process job %s failed", name)


def _send(name: str, *args: Any) -> None:
    celery = current_app.extensions["celery"]
    if celery.conf.task_always_eager:
        _run_locally(name, args)
    else:
        celery.send_task(name, args=args)


def enqueue_usage_record(record: dict[str, Any]) -> None:
    """Queue one usage record (plain values, no secrets) for the durable ledger."""
    _send(RECORD_USAGE, record)


def enqueue_usage_drain(delay: float = 0.0) -> None:
    """Wake the worker (after `delay` seconds) to move the usage records queued in Redis into SQL."""
    celery = current_app.extensions["celery"]
    if celery.conf.task_always_eager:
        _run_locally(DRAIN_USAGE, ())
    else:
        celery.send_task(DRAIN_USAGE, countdown=delay or None)


def runs_in_process() -> bool:
    """Embedded mode: jobs run right here, in the caller's process."""
    return bool(current_app.extensions["celery"].conf.task_always_eager)


def enqueue_paypal_webhook(event_row_id: int) -> None:
    """Queue a stored PayPal webhook event (by its row id) for processing."""
    _send(PAYPAL_WEBHOOK, event_row_id)


def enqueue_order_email(order_id: int) -> None:
    """Queue the new-key or top-up email of a fulfilled order. The key is read, encrypted, from the row."""
    _send(EMAIL_ORDER, order_id)


def enqueue_lost_key_link(email: str, locale: str, site: str) -> None:
    """`site`: the address the visitor used, for the link (app.site)."""
    _send(EMAIL_LOST_KEY_LINK, email, locale, site)


def enqueue_replacement_key(key_id: int, key_ciphertext: str, locale: str, site: str) -> None:
    """`key_ciphertext` is app.secretbox output: the task payload never holds a readable key."""
    _send(EMAIL_REPLACEMENT_KEY, key_id, key_ciphertext, locale, site)


def enqueue_gift_key_email(key_id: int, key_ciphertext: str, locale: str, site: str | None) -> None:
    """The key a gift code created, to the address given with it. `key_ciphertext` is app.secretbox
    output: the task payload never holds a readable key."""
    _send(EMAIL_GIFT_KEY, key_id, key_ciphertext, locale, site)


def enqueue_upstream_alert(upstream_id: int, kind: str, event: str) -> None:
    """Email every admin about an upstream account: "disabled" (taken out after a 401/402) or
    "low_balance". Ids only: the task payload never holds a key or the upstream's reason text."""
    _send(EMAIL_UPSTREAM_ALERT, upstream_id, kind, event)


def enqueue_low_balance_email(key_id: int, quota: int) -> None:
    """The low-balance email of a key whose alert was claimed at `quota` (plain ids, no secrets)."""
    _send(EMAIL_LOW_BALANCE, key_id, quota)
