"""Usage ledger tasks: thin shells over app.billing.reconcile. All are idempotent, so a
redelivery after a worker was killed (late acks) changes nothing."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError

from app.billing import ledger, reconcile

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OperationalError)


@shared_task(name="usage.record", ignore_result=True)
def record(record: dict[str, Any]) -> None:
    """One record sent directly (older releases did this per request); still accepted."""
    ledger.write_record(record)


@shared_task(
    name="usage.drain",
    ignore_result=True,
    autoretry_for=_TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=5,
)
def drain() -> int:
    return reconcile.drain_outbox()


@shared_task(name="usage.reconcile", ignore_result=True, autoretry_for=_TRANSIENT, retry_backoff=True, max_retries=3)
def reconcile_usage() -> dict[str, int]:
    return reconcile.reconcile()
