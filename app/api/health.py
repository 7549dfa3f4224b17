"""Health checks for load balancers and orchestrators: cheap, unauthenticated, never counted.

/healthz: the process is up and serving. /readyz: the database and Redis both answer (each within
its connect and read timeouts, seconds); 503 otherwise, so a balancer stops sending traffic here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from flask import Blueprint, Response
from sqlalchemy import text

from app.extensions import db, get_redis

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return _json({"status": "ok"}, 200)


@bp.get("/readyz")
def readyz() -> Response:
    checks = {"database": _check(_ping_database), "redis": _check(lambda: get_redis().ping())}
    ready = all(result == "ok" for result in checks.values())
    return _json({"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503)


def _ping_database() -> None:
    try:
        db.session.execute(text("SELECT 1"))
    finally:
        db.session.rollback()


def _check(probe: Callable[[], object]) -> str:
    started = time.monotonic()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which kind
        return f"{type(exc).__name__} after {time.monotonic() - started:.1f} s"
    return "ok"


def _json(payload: object, status: int) -> Response:
    return Response(
        json.dumps(payload), status=status, mimetype="application/json", headers={"Cache-Control": "no-store"}
    )
