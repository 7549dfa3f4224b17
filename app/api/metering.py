"""Admission and settlement of one relayed request: reserve before, settle and record after.

Redis round trips per chat completion, on top of authentication and the routes check: one for
admission (rate limit, concurrency cap and reservation in one script) and one for settlement
(release the hold, bill, queue the usage record). The usage record goes to SQL through the
worker, which this process wakes at most every USAGE_DRAIN_KICK_SECONDS (one more trip then).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import current_app, g
from redis.exceptions import RedisError

from app import jobs
from app.api.errors import ApiError, quota_exceeded, rate_limited
from app.billing import balances, ledger, pricing, quota, ratelimit
from app.billing.errors import QuotaExceeded, RateLimited
from app.billing.keys import KeyInfo
from app.billing.pricing import Multipliers
from app.billing.routes import RouteInfo
from app.extensions import get_redis
from app.relay.stream import UPSTREAM_ERROR
from app.relay.usage import Usage, estimate_prompt_tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reservation:
    request_id: str
    key_id: int
    reserved: int  # billed tokens held for this request
    prompt_estimate: int
    max_tokens: int | None  # the cap sent upstream, or None to leave the client's value alone


@dataclass(frozen=True, slots=True)
class Settlement:
    """Everything a usage record needs, captured as plain values (no request or session)."""

    request_id: str
    key_id: int
    model: str
    upstream_model: str
    stream: bool
    multipliers: Multipliers
    started_at: float


def multipliers_of(route: RouteInfo) -> Multipliers:
    return Multipliers(route.prompt_multiplier, route.completion_multiplier)


# -- admission ------------------------------------------------------------------------------------


def rpm_of(key: KeyInfo) -> int:
    return key.rpm or current_app.config["KEY_DEFAULT_RPM"]


@contextmanager
def rate_limit_first(key: KeyInfo, request_id: str) -> Iterator[None]:
    """Wrap the steps between authentication and reserve(): if one refuses the request (400, 404),
    the request still counts against the rate limit, and a key over its limit gets the 429.

    The rate limit itself is checked by reserve(), in the same round trip as the reservation, so a
    valid request pays for one trip, not two."""
    try:
        yield
    except ApiError:
        window = ratelimit.hit(get_redis(), _prefix(), key.id, request_id, rpm_of(key))
        g.rate_window = window
        if window.limited:
            raise _too_many_requests(window) from None
        raise


def peek_rate_limit(key: KeyInfo) -> None:
    """For responses that do not count (/v1/models, balance look-ups): report the window as it is."""
    g.rate_window = ratelimit.peek(get_redis(), _prefix(), key.id, rpm_of(key))


def rate_limit_headers() -> dict[str, str]:
    window = g.get("rate_window")
    return ratelimit.headers(window) if window is not None and window.limit > 0 else {}


def reserve(key: KeyInfo, route: RouteInfo, body: dict[str, Any], request_id: str) -> Reservation:
    """Admit the request or raise the 429 / 402 ApiError. The upstream max_tokens is capped to what
    the balance can pay for, and that much is held until settle() or release()."""
    config = current_app.config
    multipliers = multipliers_of(route)
    estimate = estimate_prompt_tokens(body)
    wanted = requested_max_tokens(body)
    allowance = config["QUOTA_COMPLETION_ALLOWANCE"]
    ask = quota.Ask(
        prompt_cost=estimate * multipliers.prompt,
        completion_multiplier=multipliers.completion,
        wanted=wanted or allowance,
        rpm=rpm_of(key),
        max_running=key.max_concurrent or 0,
        hold_ms=int(config["QUOTA_HOLD_SECONDS"] * 1000),
    )
    decision = quota.admit(
        get_redis(), _prefix(), key.id, request_id, ask, lambda: balances.sql_totals(key.id), _cache_seconds()
    )
    g.rate_window = decision.window
    admission = _admitted(decision, ask)
    # Leave the client's max_tokens (or the upstream's default) alone unless the balance needs less.
    capped = admission.cap if admission.cap < (wanted or allowance) else None
    return Reservation(request_id, key.id, admission.amount, estimate, capped)


def requested_max_tokens(body: dict[str, Any]) -> int | None:
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _admitted(decision: quota.Decision, ask: quota.Ask) -> pricing.Admission:
    if decision.status == quota.RATE_LIMITED:
        raise _too_many_requests(decision.window)
    if decision.status == quota.TOO_MANY_RUNNING:
        raise rate_limited(RateLimited(ask.max_running, 1, kind="concurrency"))
    if decision.status == quota.NO_QUOTA or decision.admission is None:
        raise quota_exceeded(QuotaExceeded(decision.used, decision.quota, ask.prompt_cost))
    return decision.admission


def _too_many_requests(window: ratelimit.RateWindow) -> ApiError:
    return rate_limited(RateLimited(window.limit, ratelimit.retry_after_seconds(window)))


# -- settlement -----------------------------------------------------------------------------------


def release(reservation: Reservation, settlement: Settlement, status_code: int) -> None:
    """A request that produced nothing (the upstream refused or could not be reached): bill
    nothing, free the hold, and record the failure."""
    settle(
        reservation,
        settlement,
        usage=Usage(),
        outcome=UPSTREAM_ERROR,
        output_events=0,
        status_code=status_code,
        first_output_at=None,
    )


def settle(
    reservation: Reservation,
    settlement: Settlement,
    *,
    usage: Usage | None,
    outcome: str,
    output_events: int,
    status_code: int,
    first_output_at: float | None,
) -> int:
    """Bill once, by request id, and queue the usage record. Returns the billed tokens.

    The upstream's reported usage when there is one; otherwise the prompt estimate plus one token
    per output event received (a client that hung up mid-stream), or nothing if nothing came."""
    reported = (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None
    prompt, completion = pricing.billable_usage(reported, reservation.prompt_estimate, output_events)
    billed = pricing.billed_tokens(prompt, completion, settlement.multipliers)
    record = _record(settlement, usage, prompt, completion, billed, outcome, status_code, first_output_at)
    try:
        queued = quota.settle(
            get_redis(),
            _prefix(),
            reservation.key_id,
            reservation.request_id,
            reservation.reserved,
            billed,
            json.dumps(record, separators=(",", ":")),
        )
    except RedisError:
        # The live ledger is unreachable: keep the durable one right; reconcile fixes Redis later.
        log.warning("live settle of %s failed; writing its usage record to SQL directly", settlement.request_id)
        ledger.write_record(record)
        return billed
    if queued > 0:
        _wake_drain()
    return billed


def _record(
    settlement: Settlement,
    usage: Usage | None,
    prompt: int,
    completion: int,
    billed: int,
    outcome: str,
    status_code: int,
    first_output_at: float | None,
) -> dict[str, Any]:
    now = time.monotonic()
    return {
        "request_id": settlement.request_id,
        "api_key_id": settlement.key_id,
        "model": settlement.model,
        "upstream_model": settlement.upstream_model,
        "stream": settlement.stream,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "reasoning_tokens": usage.reasoning_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "billed_tokens": billed,
        "outcome": outcome,
        "status_code": status_code,
        "latency_ms": int((now - settlement.started_at) * 1000),
        "ttft_ms": int((first_output_at - settlement.started_at) * 1000) if first_output_at else None,
        "created_at": time.time(),
    }


class _DrainWaker:
    """Wakes the worker to drain the outbox: at once if it was not woken in the last interval,
    else once at the end of the interval (the worker drains everything queued when it runs). So
    every settled record is followed by a drain that starts after it, at a cost of at most two
    messages per interval per process however many requests settle."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = float("-inf")
        self._trailing = float("-inf")
        self._lock = threading.Lock()

    def delay(self, now: float) -> float | None:
        """Seconds until the drain to ask for now, or None when one already comes later."""
        with self._lock:
            if now - self._last >= self.interval:
                self._last = now
                return 0.0
            if self._trailing > now:
                return None
            self._trailing = self._last + self.interval
            return self._trailing - now


def _wake_drain() -> None:
    extensions = current_app.extensions
    waker = extensions.get("usage_drain_waker")
    if waker is None:
        interval = 0.0 if jobs.runs_in_process() else current_app.config["USAGE_DRAIN_KICK_SECONDS"]
        waker = extensions.setdefault("usage_drain_waker", _DrainWaker(interval))
    delay = waker.delay(time.monotonic())
    if delay is None:
        return
    try:
        jobs.drain_usage(delay)
    except Exception:  # noqa: BLE001 - the record is safe in the outbox; the beat drains it
        log.warning("could not wake the usage worker", exc_info=True)


def _prefix() -> str:
    return current_app.config["BILLING_REDIS_PREFIX"]


def _cache_seconds() -> int:
    return quota.live_ttl(current_app.config)
