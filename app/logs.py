"""Log lines that carry the request id, as text or as one JSON object a line (LOG_FORMAT=json).

Every response has an `x-request-id`; the same id is on every log line the request causes, also
those written while a stream runs after its view has returned (the request context is gone by then:
a context variable carries the id, one per greenlet). A valid incoming X-Request-Id is reused on
pages; the API gives every request its own, because that id is also what a charge is idempotent by
and a client must not be able to choose it.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from flask import Flask, Response, g, has_request_context, request

from app.security import header_default

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_CURRENT: ContextVar[str] = ContextVar("request_id", default="-")
_VALID_INCOMING = re.compile(r"[A-Za-z0-9._:-]{8,64}")
# Blueprints whose request id is what a charge is idempotent by: always our own.
_OWN_IDS = frozenset({"api", "balance"})


def current_request_id() -> str:
    if has_request_context():
        return g.get("request_id") or _CURRENT.get()
    return _CURRENT.get()


def incoming_or_new(value: str | None) -> str:
    return value if value and _VALID_INCOMING.fullmatch(value) else uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def init_logging(app: Flask) -> None:
    """Format the root logger's output when this process has no logging of its own yet (gunicorn
    workers, the CLI); where a host set it up (Celery, pytest), only add the request id to it."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            JsonFormatter() if app.config.get("LOG_FORMAT") == "json" else logging.Formatter(TEXT_FORMAT)
        )
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    for handler in root.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
    app.before_request(_assign)
    app.after_request(_tag)


def _assign() -> None:
    incoming = None if request.blueprint in _OWN_IDS else request.headers.get("X-Request-Id")
    g.request_id = incoming_or_new(incoming)
    _CURRENT.set(g.request_id)


def _tag(response: Response) -> Response:
    header_default(response, "x-request-id", g.request_id)
    return response
