"""The public status page's numbers: per public model, is it answering now, and how well it did over
the last hour and day. Read from the usage ledger (every request that reached the relay leaves one
record, failures included), never from upstream accounts: the page names no account, key or balance.

A request counts for the service when it ended well (done, or stopped by its own client) and against
it when the upstream failed, timed out or was overloaded; a request refused for the buyer's own
reasons (quota, a bad request the upstream rejected) says nothing about the service and is left out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func

from app.extensions import db
from app.models import ModelRoute, UsageRecord
from app.models.base import utcnow
from app.models.setting import STATUS_NOTICE_EN, STATUS_NOTICE_ZH, read_settings

NOW_WINDOW = timedelta(minutes=15)
WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(hours=24)}
CACHE_SECONDS = 30.0
_GOOD = {"done", "client_closed"}
_BAD = {"upstream_error", "timeout"}
DEGRADED_BELOW = 0.9  # success share, over NOW_WINDOW
MIN_SAMPLES = 5  # fewer requests than this in NOW_WINDOW say nothing either way


class State(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    QUIET = "quiet"  # too little traffic to tell


def counts_for_service(outcome: str, status_code: int) -> bool | None:
    """True: the service answered; False: it failed; None: the buyer's own doing, left out."""
    if outcome in _GOOD:
        return True
    if outcome in _BAD:
        client_error = 400 <= status_code < 500 and status_code not in (408, 429)
        return None if client_error else False
    return None


@dataclass(frozen=True, slots=True)
class Tally:
    good: int = 0
    bad: int = 0

    @property
    def total(self) -> int:
        return self.good + self.bad

    @property
    def success_percent(self) -> float | None:
        return None if self.total == 0 else 100.0 * self.good / self.total


def tally(rows: Iterable[tuple[str, int, int]]) -> Tally:
    """(outcome, status_code, count) rows, as GROUP BY gives them."""
    good = bad = 0
    for outcome, status_code, count in rows:
        verdict = counts_for_service(outcome, status_code)
        if verdict is True:
            good += count
        elif verdict is False:
            bad += count
    return Tally(good, bad)


def state_of(recent: Tally) -> State:
    if recent.total < MIN_SAMPLES:
        return State.QUIET
    return State.UP if recent.good >= DEGRADED_BELOW * recent.total else State.DEGRADED


@dataclass(frozen=True, slots=True)
class Window:
    tally: Tally
    median_ttft_ms: int | None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    public_id: str
    state: State
    windows: dict[str, Window]


def load() -> list[ModelStatus]:
    """Every enabled public model's status, cached per process for CACHE_SECONDS."""
    with _cache_lock:
        if _cache and time.monotonic() - _cache[0] < CACHE_SECONDS:
            return _cache[1]
    statuses = [_model_status(public_id) for public_id in _public_models()]
    with _cache_lock:
        _cache[:] = [time.monotonic(), statuses]
    return statuses


def notice(locale: str) -> str:
    """The operator's notice in the visitor's language, else in the other one; "" when none is set.
    Read on every view (not cached with the numbers): a notice should show as soon as it is saved."""
    texts = read_settings(STATUS_NOTICE_EN, STATUS_NOTICE_ZH)
    first, second = (STATUS_NOTICE_ZH, STATUS_NOTICE_EN) if locale == "zh" else (STATUS_NOTICE_EN, STATUS_NOTICE_ZH)
    return texts[first] or texts[second]


def forget() -> None:
    with _cache_lock:
        _cache.clear()


_cache: list = []  # [monotonic time, statuses]
_cache_lock = threading.Lock()


def _public_models() -> list[str]:
    stmt = db.select(ModelRoute.public_id).where(ModelRoute.enabled.is_(True)).order_by(ModelRoute.public_id)
    return list(db.session.execute(stmt).scalars())


def _model_status(public_id: str) -> ModelStatus:
    now = utcnow()
    recent = _tally(public_id, now - NOW_WINDOW)
    windows = {
        name: Window(_tally(public_id, now - span), _median_ttft(public_id, now - span))
        for name, span in WINDOWS.items()
    }
    return ModelStatus(public_id, state_of(recent), windows)


def _tally(public_id: str, since: datetime) -> Tally:
    stmt = (
        db.select(UsageRecord.outcome, UsageRecord.status_code, func.count())
        .where(UsageRecord.model == public_id, UsageRecord.created_at >= since)
        .group_by(UsageRecord.outcome, UsageRecord.status_code)
    )
    return tally(db.session.execute(stmt).all())


def _median_ttft(public_id: str, since: datetime) -> int | None:
    answered = (
        UsageRecord.model == public_id,
        UsageRecord.created_at >= since,
        UsageRecord.outcome == "done",
        UsageRecord.ttft_ms.is_not(None),
    )
    count = db.session.execute(db.select(func.count()).where(*answered)).scalar_one()
    if count == 0:
        return None
    stmt = db.select(UsageRecord.ttft_ms).where(*answered).order_by(UsageRecord.ttft_ms)
    return db.session.execute(stmt.offset(count // 2).limit(1)).scalar_one()
