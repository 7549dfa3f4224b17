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

# Task name -> the service function its worker task wraps, for embedded mode.
SERVICES = {
    RECORD_USAGE: "app.billing.ledger:write_record",
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


def record_usage(record: dict[str, Any]) -> None:
    """Queue one usage record (plain values, no secrets) for the durable ledger."""
    _send(RECORD_USAGE, record)
