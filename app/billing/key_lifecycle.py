"""Key lifecycle: create, top up, take back, edit, replace, revoke. Used by the CLI, the order
domain and the admin; the only writer of keys and their quotas.

SQL is the record; each change also drops the live Redis state it makes stale (cached KeyInfo,
cached quota) so that every process sees it on its next request. Changes made inside a caller's
transaction (an order credited or refunded with its order row) do that themselves once the
transaction commits, and never when it rolls back: no caller choreographs cache refreshes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import case, event
from sqlalchemy.orm import Session

from app.billing import key_lookup, quota
from app.billing.key_format import display_prefix, generate_key, hash_key, looks_like_key
from app.extensions import db, get_redis
from app.models import ApiKey, utcnow


class KeyNotFound(LookupError):
    pass


log = logging.getLogger(__name__)
_AFTER_COMMIT = "billing.after_commit"


def _prefix() -> str:
    return current_app.config["BILLING_REDIS_PREFIX"]


def _after_commit(callback: Callable[[], None]) -> None:
    """Run `callback` once the current transaction commits; drop it if it rolls back."""
    db.session.info.setdefault(_AFTER_COMMIT, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop(_AFTER_COMMIT, ()):
        try:
            callback()
        except Exception:  # noqa: BLE001 - SQL is right; a stale cache ages out (LIVE_STATE_TTL)
            log.warning("could not refresh the live state after a commit", exc_info=True)


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_AFTER_COMMIT, None)


def _forget_after_commit(key_id: int, key_hash: str | None = None) -> None:
    """Every process rereads the key's quota (and KeyInfo, given its hash) once this commits."""
    redis, prefix = get_redis(), _prefix()

    def forget() -> None:
        quota.forget_quota(redis, prefix, key_id)
        if key_hash:
            key_lookup.invalidate(redis, prefix, key_hash)

    _after_commit(forget)


def create_key(
    *,
    tokens: int,
    name: str = "",
    rpm: int | None = None,
    models: Iterable[str] | None = None,
    expires_at: datetime | None = None,
    email: str | None = None,
    reasoning_passthrough: bool = False,
    max_concurrent: int | None = None,
    commit: bool = True,
) -> tuple[ApiKey, str]:
    """A new key with `tokens` billed tokens. Returns the row and the key, which exists nowhere else."""
    if tokens < 0:
        raise ValueError("tokens must not be negative")
    plaintext = generate_key()
    row = ApiKey(
        key_hash=hash_key(plaintext),
        prefix=display_prefix(plaintext),
        name=name,
        email=email,
        status="active",
        tokens_quota=tokens,
        tokens_used=0,
        rpm=rpm,
        max_concurrent=max_concurrent,
        allowed_models=sorted(set(models)) if models else None,
        reasoning_passthrough=reasoning_passthrough,
        expires_at=expires_at,
    )
    db.session.add(row)
    if commit:
        db.session.commit()
    else:
        db.session.flush()
    return row, plaintext


def find_key(reference: str) -> ApiKey:
    """By the full key, its numeric id, or its display prefix."""
    stmt = db.select(ApiKey)
    if reference.startswith("sk-") and "…" not in reference:
        row = db.session.execute(stmt.filter_by(key_hash=hash_key(reference))).scalar_one_or_none()
    elif reference.isdigit():
        row = db.session.get(ApiKey, int(reference))
    else:
        row = db.session.execute(stmt.filter_by(prefix=reference)).scalar_one_or_none()
    if row is None:
        raise KeyNotFound(reference)
    return row


def find_pasted_key(key_text: str | None) -> ApiKey | None:
    """The key a buyer pasted into a form, whatever its status, or None. Only a whole key finds
    anything: never an id or a display prefix, which find_key also accepts from operators."""
    key_text = (key_text or "").strip()
    if not looks_like_key(key_text):
        return None
    try:
        return find_key(key_text)
    except KeyNotFound:
        return None


def refresh_live_state(row: ApiKey) -> None:
    """Drop the cached KeyInfo so that every process reloads it on its next request."""
    key_lookup.invalidate(get_redis(), _prefix(), row.key_hash)
    quota.forget_quota(get_redis(), _prefix(), row.id)  # also reread the quota, whatever was edited


def topup_key(row: ApiKey, tokens: int) -> ApiKey:
    """An operator's top-up: its own transaction."""
    credit(row.id, tokens)
    db.session.commit()
    return row


def credit(key_id: int, tokens: int, *, extend_days: int | None = None) -> ApiKey:
    """Add `tokens` to the key's quota, and `extend_days` to an expiry it has, in the caller's
    transaction, with the key's row locked until it ends (top-ups may race each other)."""
    if tokens <= 0:
        raise ValueError("tokens must be a positive whole number")
    db.session.execute(db.update(ApiKey).where(ApiKey.id == key_id).values(tokens_quota=ApiKey.tokens_quota + tokens))
    row = db.session.get(ApiKey, key_id, populate_existing=True)
    if extend_days and row.expires_at is not None:
        row.expires_at = max(row.expires_at, utcnow()) + timedelta(days=extend_days)
    _forget_after_commit(row.id, row.key_hash)
    return row


def revoke_key(row: ApiKey, *, commit: bool = True) -> ApiKey:
    row.status = "revoked"
    row.revoked_at = utcnow()
    if commit:
        db.session.commit()
        refresh_live_state(row)
    return row


def update_key(row: ApiKey, **changes: Any) -> ApiKey:
    """Edit rpm, expiry, models, name, passthrough, concurrency. Quota changes go through topup_key."""
    allowed = {
        "name",
        "rpm",
        "expires_at",
        "allowed_models",
        "reasoning_passthrough",
        "max_concurrent",
        "note",
        "email",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    for field, value in changes.items():
        setattr(row, field, value)
    db.session.commit()
    refresh_live_state(row)
    return row


def take_back_tokens(key_id: int, tokens: int, *, commit: bool = True) -> int:
    """Remove up to `tokens` unused tokens (a refunded or reversed purchase). Returns how many.

    One UPDATE bounded in SQL by what is left, so take-backs racing each other, top-ups and the
    usage worker can never push the quota below what was used. Usage settled in Redis but not yet
    in SQL, and tokens held by requests still running, count as used: they will be. What was
    used cannot be taken back; the caller records the shortfall. With commit=False it joins the
    caller's transaction."""
    if tokens <= 0:
        return 0
    live = quota.live_usage(get_redis(), _prefix(), key_id)
    before = _lock_quota(key_id)
    if before is None:
        return 0
    unused = ApiKey.tokens_quota - ApiKey.tokens_used - (live.pending + live.held)
    taken = case((unused >= tokens, tokens), (unused > 0, unused), else_=0)
    after = db.session.execute(
        db.update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(tokens_quota=ApiKey.tokens_quota - taken)
        .returning(ApiKey.tokens_quota)
    ).scalar_one()
    _forget_after_commit(key_id)
    if commit:
        db.session.commit()
    return before - after


def _lock_quota(key_id: int) -> int | None:
    """The key's quota, read under the row's write lock (held until commit), so that before and
    after a bounded UPDATE tell exactly what it took. A no-op UPDATE locks on SQLite and
    PostgreSQL alike, where SELECT ... FOR UPDATE does not exist on SQLite."""
    return db.session.execute(
        db.update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(tokens_quota=ApiKey.tokens_quota)
        .returning(ApiKey.tokens_quota)
    ).scalar_one_or_none()


def replace_key(row: ApiKey) -> str | None:
    """Give the account a new secret (a lost key). Returns the new key, which exists nowhere else,
    or None when the secret already changed since `row` was read (a racing replacement won).

    The row stays, so the balance, limits, usage history and orders stay with it; the old key
    stops authenticating as soon as its cached KeyInfo is dropped, which happens here."""
    old_hash = row.key_hash
    plaintext = generate_key()
    changed = db.session.execute(
        db.update(ApiKey)
        .where(ApiKey.id == row.id, ApiKey.key_hash == old_hash)
        .values(key_hash=hash_key(plaintext), prefix=display_prefix(plaintext))
    )
    db.session.commit()
    if changed.rowcount != 1:
        return None
    key_lookup.invalidate(get_redis(), _prefix(), old_hash)
    return plaintext
