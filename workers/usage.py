from __future__ import annotations

from typing import Any

from celery import shared_task

from app.billing import ledger


@shared_task(name="usage.record", ignore_result=True)
def record(record: dict[str, Any]) -> None:
    ledger.write_record(record)
