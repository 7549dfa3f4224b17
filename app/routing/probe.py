"""The pool's health probe, run by a Celery beat task: each enabled upstream account is asked the two
cheap questions DeepSeek answers, `GET /models` and `GET /user/balance`. An account that answers
again is put back in service (its disabled switch and circuit breaker cleared); one that refuses
(401/402/403) is kept out, or taken out; each balance is recorded exactly, and the admins are
warned once each time a balance falls below its account's threshold.

Every request has a bounded timeout (POOL_PROBE_TIMEOUT), so a frozen upstream delays the probe by
at most a few timeouts and never hangs it. API keys go only into the Authorization header: not into
logs, errors or task payloads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

import urllib3
from flask import current_app

from app.extensions import db, get_redis
from app.models import Upstream, utcnow
from app.relay.account import Unreachable, balance_urls, get_json
from app.relay.demo import is_demo
from app.routing import catalog, health

log = logging.getLogger(__name__)

OK = "ok"  # answered: back in service if it was out
REFUSED = "refused"  # the account itself was refused: kept out
EMPTY = "empty"  # answers, but DeepSeek says the balance cannot pay for requests: left as it is
UNREACHABLE = "unreachable"  # no answer, a timeout or a server error: left as it is

WARN = "warn"
CLEAR = "clear"

_REFUSING = frozenset({401, 402, 403})


@dataclass(frozen=True, slots=True)
class Balance:
    currency: str
    cents: int  # minor units (cents, fen), rounded down: never more than the account holds
    available: bool | None  # DeepSeek's is_available


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: str
    detail: str = ""  # why, in one line, for the admin (never a key)
    balance: Balance | None = None


@dataclass(frozen=True, slots=True)
class Account:
    upstream_id: int
    name: str
    base_url: str
    api_key: str = field(repr=False)


# -- pure -------------------------------------------------------------------------------------------


def to_cents(amount: Any) -> int | None:
    """A decimal amount string ("110.00") in minor units, exactly; None when it is no number."""
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return int((value * 100).to_integral_value(rounding=ROUND_FLOOR))


def balance_from(payload: Any) -> Balance | None:
    """The first readable entry of DeepSeek's balance_infos (an account holds one currency)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("balance_infos"), list):
        return None
    available = payload.get("is_available")
    for info in payload["balance_infos"]:
        cents = to_cents(info.get("total_balance")) if isinstance(info, dict) else None
        if cents is not None:
            currency = str(info.get("currency") or "")[:8]
            return Balance(currency, cents, None if available is None else bool(available))
    return None


def low_balance_change(balance_cents: int | None, threshold_cents: int | None, warned: bool) -> str | None:
    """WARN when the balance is below the threshold and the admins have not been warned since it
    last was at or above it; CLEAR when it is back (so the next fall warns again); else None."""
    if threshold_cents is None:
        return CLEAR if warned else None
    if balance_cents is None:
        return None
    if balance_cents < threshold_cents:
        return None if warned else WARN
    return CLEAR if warned else None


def verdict_of(models_status: int, balance: Balance | None) -> str:
    if models_status in _REFUSING:
        return REFUSED
    if models_status >= 400:
        return UNREACHABLE
    if balance is not None and balance.available is False:
        return EMPTY
    return OK


# -- asking an account -----------------------------------------------------------------------------


def ask(pool: urllib3.PoolManager, account: Account, timeout: float) -> Answer:
    """Never raises for the upstream's sake: no answer is an UNREACHABLE answer."""
    try:
        status, _ = get_json(pool, account.base_url.rstrip("/") + "/models", account.api_key, timeout)
        if status >= 400:
            return Answer(verdict_of(status, None), f"GET /models answered HTTP {status}")
        for url in balance_urls(account.base_url):
            status, payload = get_json(pool, url, account.api_key, timeout)
            if status in _REFUSING:
                return Answer(REFUSED, f"GET /user/balance answered HTTP {status}")
            if status < 400:
                balance = balance_from(payload)
                empty = balance is not None and balance.available is False
                return Answer(verdict_of(200, balance), "the balance is not available" if empty else "", balance)
    except Unreachable as exc:
        return Answer(UNREACHABLE, f"no answer ({exc.cause})")
    return Answer(OK)  # no balance endpoint: not every OpenAI-format upstream has one


# -- the probe --------------------------------------------------------------------------------------


def _accounts() -> list[Account]:
    """The enabled upstreams with a key, as plain values (no transaction stays open over HTTP)."""
    accounts = []
    for upstream in db.session.execute(db.select(Upstream).where(Upstream.enabled).order_by(Upstream.id)).scalars():
        try:
            key = catalog.upstream_api_key(upstream)
        except ValueError:
            log.warning("upstream %s: stored key unreadable, not probed", upstream.name)
            continue
        if key and not is_demo(upstream.base_url, key):
            accounts.append(Account(upstream.id, upstream.name, upstream.base_url, key))
    db.session.rollback()
    return accounts


def probe_upstreams() -> dict[str, str]:
    """Probe every enabled upstream once, one after the other. Returns {name: verdict}."""
    pool = current_app.extensions["account_pool"]
    timeout = current_app.config["POOL_PROBE_TIMEOUT"]
    verdicts = {}
    for account in _accounts():
        answer = ask(pool, account, timeout)
        apply(account, answer, utcnow())
        verdicts[account.name] = answer.verdict
        log.info("upstream %s probed: %s %s", account.name, answer.verdict, answer.detail)
    return verdicts


def apply(account: Account, answer: Answer, now: datetime) -> None:
    """Write what the probe learnt: the live switch in Redis, the row, the low-balance warning."""
    redis, prefix = get_redis(), current_app.config["BILLING_REDIS_PREFIX"]
    if answer.verdict == REFUSED:
        if health.disable(redis, prefix, account.upstream_id, answer.detail):
            catalog.mark_disabled(account.upstream_id, answer.detail)  # tells the admins, once
    elif answer.verdict == OK and redis.exists(health.state_key(prefix, account.upstream_id)):
        health.restore(redis, prefix, account.upstream_id)
        log.warning("upstream %s answers again: back in service", account.name)
    upstream = db.session.get(Upstream, account.upstream_id)
    if upstream is None:
        return
    upstream.probed_at = now
    upstream.probe_error = "" if answer.verdict in (OK, EMPTY) else answer.detail[:300]
    if answer.verdict == OK and upstream.status != health.OK:
        upstream.status, upstream.status_reason = health.OK, ""
    if answer.balance is not None:
        upstream.balance_cents, upstream.balance_currency = answer.balance.cents, answer.balance.currency
        upstream.balance_checked_at = now
    db.session.commit()
    _warn_on_crossing(upstream, now)


def _warn_on_crossing(upstream: Upstream, now: datetime) -> None:
    change = low_balance_change(
        upstream.balance_cents, upstream.low_balance_cents, upstream.low_balance_warned_at is not None
    )
    if change is None:
        return
    # Conditional: two probes running at once (a slow beat tick overlapping the next) warn once.
    warned_at = Upstream.low_balance_warned_at
    still = warned_at.is_(None) if change == WARN else warned_at.is_not(None)
    won = db.session.execute(
        db.update(Upstream)
        .where(Upstream.id == upstream.id, still)
        .values(low_balance_warned_at=now if change == WARN else None)
    ).rowcount
    db.session.commit()
    if change == WARN and won:
        catalog.alert_admins(upstream.id, "low_balance")
