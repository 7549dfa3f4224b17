"""The optional low-balance email: who asked for it, and when a key has just dropped below a tenth
of its quota.

Decided where usage reaches SQL (the usage drain, reconcile.py), never on the request path. A key's
alert is armed while the quota it was last claimed at (low_balance_alerted_quota) is below its
quota now. The claim is one conditional UPDATE that moves that marker up to the quota, so however
many drains see the same crossing at once, in however many processes, exactly one of them queues
the email; a top-up raises the quota above the marker and re-arms the alert: one email per top-up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from app import jobs
from app.extensions import db
from app.models import ApiKey

log = logging.getLogger(__name__)

LOW_FRACTION_DIVISOR = 10  # "low" means fewer than 1/10 of the quota left


def is_low(quota: int, used: int) -> bool:
    """Fewer than a tenth of `quota` tokens left. Integers only: (quota - used) / quota < 1/10."""
    return quota > 0 and (quota - used) * LOW_FRACTION_DIVISOR < quota


def should_alert(quota: int, used: int, alerted_quota: int | None, opted_in: bool) -> bool:
    """Whether the key is due its low-balance email: asked for, low now, and not yet alerted at
    this quota (a top-up since the last alert raised the quota above `alerted_quota`)."""
    return opted_in and is_low(quota, used) and (alerted_quota is None or alerted_quota < quota)


def subscribe(key_id: int, email: str, locale: str, *, commit: bool = True) -> None:
    """Turn the email on (or change its address and language). `email` is already validated."""
    values = {"low_balance_email": email, "low_balance_locale": locale if locale in ("en", "zh") else "en"}
    db.session.execute(db.update(ApiKey).where(ApiKey.id == key_id).values(**values))
    if commit:
        db.session.commit()


def unsubscribe(key_id: int) -> None:
    db.session.execute(db.update(ApiKey).where(ApiKey.id == key_id).values(low_balance_email=None))
    db.session.commit()


def is_email_due(key: ApiKey, quota: int) -> bool:
    """Whether the email claimed at `quota` should still go out: the buyer has neither opted out
    nor topped up since (then it has done what the email asks), and it has not gone out yet."""
    return (
        key.status == "active"
        and bool(key.low_balance_email)
        and key.tokens_quota == quota
        and key.low_balance_alerted_quota == quota
        and (key.low_balance_emailed_quota is None or key.low_balance_emailed_quota < quota)
    )


def record_emailed(key_id: int, quota: int) -> None:
    """The email claimed at `quota` reached the SMTP server: a retried task must not send it again."""
    emailed = ApiKey.low_balance_emailed_quota
    db.session.execute(
        db.update(ApiKey)
        .where(ApiKey.id == key_id, emailed.is_(None) | (emailed < quota))
        .values(low_balance_emailed_quota=quota)
    )
    db.session.commit()


def alert_low_keys(key_ids: Iterable[int]) -> list[int]:
    """Queue the low-balance email of each of `key_ids` that is due one, claiming it first.
    Returns the ids queued now. Commits; the caller's session must hold no pending work."""
    ids = sorted(set(key_ids))
    if not ids:
        return []
    rows = db.session.execute(
        db.select(
            ApiKey.id,
            ApiKey.tokens_quota,
            ApiKey.tokens_used,
            ApiKey.low_balance_alerted_quota,
            ApiKey.low_balance_email,
        ).where(ApiKey.id.in_(ids), ApiKey.status == "active", ApiKey.low_balance_email.is_not(None))
    ).all()
    db.session.rollback()  # end the read: each claim below is its own short transaction
    due = [row for row in rows if should_alert(row[1], row[2], row[3], row[4] is not None)]
    return [row.id for row in due if _claim_and_queue(row.id, int(row.tokens_quota), row.low_balance_alerted_quota)]


def _claim_and_queue(key_id: int, quota: int, seen: int | None) -> bool:
    if not _move_marker(key_id, quota, seen, quota):
        return False  # another drain claimed it, or a top-up or opt-out got there first
    try:
        jobs.enqueue_low_balance_email(key_id, quota)
    except Exception:
        # Nothing was queued: give the claim back, so that the next drain tries again.
        log.exception("key %s: low-balance email not queued", key_id)
        _move_marker(key_id, quota, quota, seen)
        return False
    log.info("key %s: low-balance email queued at quota %s", key_id, quota)
    return True


def _move_marker(key_id: int, quota: int, seen: int | None, new: int | None) -> bool:
    """Set the alerted marker to `new` only if it is still `seen` and the quota still `quota`:
    the row's write lock makes racing claims queue up, and all but the first find it changed."""
    marker = ApiKey.low_balance_alerted_quota
    stmt = db.update(ApiKey).where(
        ApiKey.id == key_id,
        ApiKey.tokens_quota == quota,
        ApiKey.low_balance_email.is_not(None),
        marker.is_(None) if seen is None else marker == seen,
    )
    claimed = db.session.execute(stmt.values(low_balance_alerted_quota=new)).rowcount == 1
    db.session.commit()
    return claimed
