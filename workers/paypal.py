"""PayPal tasks: thin shells over app.store services. Only PayPal outages are retried."""

from __future__ import annotations

from celery import shared_task

from app.orders import pending, webhooks
from app.orders.paypal import PayPalUnavailable


@shared_task(
    name="paypal.process_webhook",
    ignore_result=True,
    autoretry_for=(PayPalUnavailable,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=12,
)
def process_webhook(event_row_id: int) -> None:
    webhooks.process_event(event_row_id)


@shared_task(name="paypal.reconcile_orders", ignore_result=True)
def reconcile_orders() -> None:
    pending.reconcile_orders()
