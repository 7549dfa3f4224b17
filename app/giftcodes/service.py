"""Gift codes: generate a batch for a plan, redeem one exactly once, void unused ones, list them.

A redemption is one transaction: a conditional UPDATE claims the code (unused and not expired ->
redeemed), the key is created or credited, and the audit entry is written, then it commits. Racing
tabs and scripts all run the UPDATE; one of them changes the row, the others change nothing (on
PostgreSQL they wait for the row lock and then find it redeemed; SQLite has one writer at a time).
A crash before the commit leaves the code unused and no tokens anywhere.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Select, or_

from app import jobs, secretbox
from app.billing import key_lifecycle
from app.billing.statements import remaining_tokens
from app.extensions import db, get_redis
from app.giftcodes import throttle
from app.giftcodes.code_format import display_prefix, generate_code, hash_code, normalise
from app.models import ApiKey, AuditLog, Plan, utcnow
from app.models.gift_code import GiftCode
from app.orders.checkout import CheckoutError, normalise_email

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_NOTE = 200


class GiftCodeError(ValueError):
    """An operator's request that cannot be done; the message says why in one line."""


class RedeemError(Exception):
    """Something the buyer can act on. `reason` picks the page's message: unknown | used | void |
    expired | throttled | key | key_revoked | email."""

    def __init__(self, reason: str, *, retry_after: int = 0, expired_on: datetime | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.expired_on = expired_on


@dataclass(frozen=True, slots=True)
class Actor:
    """Who does it, for the audit log: an admin's email, "cli" or "store"."""

    name: str
    admin_id: int | None = None
    ip: str = ""


@dataclass(frozen=True, slots=True)
class Batch:
    batch: str
    plan_id: int
    codes: tuple[str, ...]  # the plain codes: they exist nowhere else


@dataclass(frozen=True, slots=True)
class Redemption:
    kind: str  # new | topup
    key_id: int
    key_prefix: str
    tokens: int
    remaining: int
    key: str | None  # the new key, for this page only; None for a top-up


def _audit(action: str, target: str, actor: Actor, **details: Any) -> None:
    db.session.add(
        AuditLog.entry(action, target, actor=actor.name, admin_id=actor.admin_id, ip=actor.ip, details=details)
    )


# -- generate ------------------------------------------------------------------------------------


def generate(plan_id: int, count: int, *, actor: Actor, expires_at: datetime | None = None, note: str = "") -> Batch:
    """`count` new codes for the plan, worth its tokens now, valid until `expires_at` (UTC, exclusive)."""
    plan = db.session.get(Plan, plan_id)
    if plan is None:
        raise GiftCodeError(f"no plan #{plan_id} (see `plans list`)")
    if not 1 <= count <= MAX_BATCH:
        raise GiftCodeError(f"the count must be from 1 to {MAX_BATCH}")
    if expires_at is not None and expires_at <= utcnow():
        raise GiftCodeError("the expiry date must be in the future")
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise GiftCodeError(f"the note must be at most {MAX_NOTE} characters")
    batch = secrets.token_hex(4)
    codes = tuple(generate_code() for _ in range(count))
    common = {"batch": batch, "plan_id": plan.id, "tokens": plan.tokens, "note": note, "expires_at": expires_at}
    db.session.add_all(
        GiftCode(code_hash=hash_code(c), prefix=display_prefix(c), status="unused", created_by=actor.name, **common)
        for c in codes
    )
    _audit("giftcode.create", f"batch:{batch}", actor, count=count, **common)
    db.session.commit()
    log.info("gift codes: batch %s, %s code(s) for plan #%s", batch, count, plan.id)
    return Batch(batch=batch, plan_id=plan.id, codes=codes)


# -- redeem --------------------------------------------------------------------------------------


def redeem(
    code_text: str,
    *,
    client_ip: str,
    key_text: str | None = None,
    email: str = "",
    locale: str = "en",
    site: str | None = None,
) -> Redemption:
    """Redeem a typed code for a new key (`key_text` None) or onto the pasted key. Raises RedeemError.

    The attempt counts against `client_ip` before the code is checked."""
    email = _optional_email(email) if key_text is None else ""
    redis, prefix = get_redis(), current_app.config["BILLING_REDIS_PREFIX"]
    wait = throttle.attempt(redis, prefix, client_ip)
    if wait:
        raise RedeemError("throttled", retry_after=wait)
    code = normalise(code_text)
    if code is None:
        raise RedeemError("unknown")
    key = _key_to_credit(key_text) if key_text is not None else None
    done = _redeem_once(code, key, email, Actor("store", ip=client_ip))
    throttle.give_back(redis, prefix, client_ip)
    if done.key and email:
        ciphertext = secretbox.encrypt(done.key, current_app.config["SECRET_KEY"])
        jobs.enqueue_gift_key_email(done.key_id, ciphertext, locale, site)
    return done


def _optional_email(value: str) -> str:
    if not (value or "").strip():
        return ""
    try:
        return normalise_email(value)
    except CheckoutError:
        raise RedeemError("email") from None


def _key_to_credit(key_text: str) -> ApiKey:
    row = key_lifecycle.find_pasted_key(key_text)
    if row is None:
        raise RedeemError("key")
    if row.status != "active":
        raise RedeemError("key_revoked")
    return row


def _redeem_once(code: str, key: ApiKey | None, email: str, actor: Actor) -> Redemption:
    now = utcnow()
    code_hash = hash_code(code)
    claimed = db.session.execute(
        db.update(GiftCode)
        .where(
            GiftCode.code_hash == code_hash,
            GiftCode.status == "unused",
            or_(GiftCode.expires_at.is_(None), GiftCode.expires_at > now),
        )
        .values(status="redeemed", redeemed_at=now, redeemed_kind="topup" if key else "new")
        .returning(GiftCode.id)
    ).scalar_one_or_none()
    if claimed is None:
        db.session.rollback()
        raise _why_not(code_hash, now)
    row = db.session.get(GiftCode, claimed, populate_existing=True)
    target, plaintext = _credit(row, key, email, now)
    row.api_key_id = target.id
    _audit(  # on the key, as an operator's top-up is, so that the key's history shows it
        "giftcode.redeem",
        f"key:{target.id}",
        actor,
        gift_code_id=row.id,
        code=row.prefix,
        kind=row.redeemed_kind,
        key_id=target.id,
        key_prefix=target.prefix,
        plan_id=row.plan_id,
        tokens=row.tokens,
    )
    db.session.commit()  # the claim, the tokens and the audit entry land together, or none does
    log.info("gift code %s redeemed: %s tokens on key #%s (%s)", row.prefix, row.tokens, target.id, row.redeemed_kind)
    return Redemption(
        kind=row.redeemed_kind or "new",
        key_id=target.id,
        key_prefix=target.prefix,
        tokens=row.tokens,
        remaining=remaining_tokens(target),
        key=plaintext,
    )


def _credit(row: GiftCode, key: ApiKey | None, email: str, now: datetime) -> tuple[ApiKey, str | None]:
    """The plan's models, rpm and valid_days apply as for a purchase; its tokens as when generated."""
    plan = row.plan
    if key is not None:
        return key_lifecycle.credit(key.id, row.tokens, extend_days=plan.valid_days), None
    return key_lifecycle.create_key(
        tokens=row.tokens,
        name=f"gift {row.prefix}",
        rpm=plan.rpm,
        models=plan.models,
        expires_at=now + timedelta(days=plan.valid_days) if plan.valid_days else None,
        email=email or None,
        commit=False,
    )


def _why_not(code_hash: str, now: datetime) -> RedeemError:
    row = db.session.execute(db.select(GiftCode).filter_by(code_hash=code_hash)).scalar_one_or_none()
    if row is None:
        return RedeemError("unknown")
    if row.status == "unused" and row.is_expired(now):
        return RedeemError("expired", expired_on=row.expires_at)
    return RedeemError("used" if row.status == "redeemed" else "void")


# -- void ----------------------------------------------------------------------------------------


def find(reference: str) -> GiftCode:
    """By the full code (as typed) or the row id."""
    code = normalise(reference)
    if code is not None:
        row = db.session.execute(db.select(GiftCode).filter_by(code_hash=hash_code(code))).scalar_one_or_none()
    else:
        row = db.session.get(GiftCode, int(reference)) if reference.strip().isdigit() else None
    if row is None:
        raise GiftCodeError(f"no gift code matches {reference.strip()[:12]!r} (give the whole code or its id)")
    return row


def void(reference: str, *, actor: Actor) -> GiftCode:
    """Make an unused code worthless. A redeemed or void one is left as it is (GiftCodeError)."""
    row = find(reference)
    changed = db.session.execute(
        db.update(GiftCode)
        .where(GiftCode.id == row.id, GiftCode.status == "unused")
        .values(status="void", voided_at=utcnow())
    )
    if changed.rowcount != 1:
        db.session.rollback()
        db.session.refresh(row)
        raise GiftCodeError(f"{row.prefix}… is {row.status} already: nothing to void")
    _audit("giftcode.void", f"giftcode:{row.id}", actor, code=row.prefix, batch=row.batch)
    db.session.commit()
    db.session.refresh(row)
    return row


def void_batch(batch: str, *, actor: Actor) -> int:
    """Void every unused code of a batch (a leaked list). Returns how many."""
    changed = db.session.execute(
        db.update(GiftCode)
        .where(GiftCode.batch == batch, GiftCode.status == "unused")
        .values(status="void", voided_at=utcnow())
    )
    if changed.rowcount:
        _audit("giftcode.void_batch", f"batch:{batch}", actor, count=changed.rowcount)
    db.session.commit()
    return changed.rowcount


# -- list ----------------------------------------------------------------------------------------


def query(*, state: str = "", batch: str = "", now: datetime | None = None) -> Select[Any]:
    """Codes, newest first. `state`: unused (redeemable now), expired, redeemed, void, or "" for all."""
    now = now or utcnow()
    live = or_(GiftCode.expires_at.is_(None), GiftCode.expires_at > now)
    stmt = db.select(GiftCode).order_by(GiftCode.created_at.desc(), GiftCode.id.desc())
    if batch:
        stmt = stmt.where(GiftCode.batch == batch)
    if state == "unused":
        stmt = stmt.where(GiftCode.status == "unused", live)
    elif state == "expired":
        stmt = stmt.where(GiftCode.status == "unused", ~live)
    elif state in ("redeemed", "void"):
        stmt = stmt.where(GiftCode.status == state)
    return stmt


def list_codes(*, unused: bool = False) -> list[GiftCode]:
    return list(db.session.execute(query(state="unused" if unused else "")).scalars())


def rows_for_export(codes: Sequence[str]) -> list[tuple[str, GiftCode]]:
    """The plain codes just shown to an operator with their rows, for the CSV; codes that are not
    ours are left out, so the download can only ever list real codes."""
    wanted = {hash_code(c): c for c in (normalise(text) for text in codes) if c}
    if not wanted:
        return []
    rows = db.session.execute(db.select(GiftCode).where(GiftCode.code_hash.in_(wanted))).scalars()
    return sorted(((wanted[r.code_hash], r) for r in rows), key=lambda pair: pair[1].id)
