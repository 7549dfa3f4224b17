"""Admission and settlement of one relayed request: reserve before, settle and record after.

Redis round trips per chat completion, on top of authentication and the routes check: one for
admission (rate limit, concurrency cap and reservation in one script), one per QUOTA_HOLD_STEP
tokens of a streamed answer past the first (extending the hold), and one for settlement (release
the hold, bill, queue the usage record). The usage record goes to SQL through the
worker, which this process wakes at most every USAGE_DRAIN_KICK_SECONDS (one more trip then).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g, has_app_context
from redis.exceptions import RedisError

from app import jobs
from app.api.chat_request import ChatRequest
from app.api.errors import ApiError, quota_exceeded, rate_limited
from app.billing import balances, ledger, pricing, quota, ratelimit
from app.billing.errors import QuotaExceeded, RateLimited
from app.billing.keys import KeyInfo
from app.billing.pricing import Multipliers
from app.billing.routes import RouteInfo
from app.extensions import get_redis
from app.relay.stream import UPSTREAM_ERROR, StreamRelay
from app.relay.usage import Usage, estimate_prompt_tokens

log = logging.getLogger(__name__)


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


def reserve(key: KeyInfo, route: RouteInfo, chat: ChatRequest, request_id: str) -> Meter:
    """Admit the request or raise the 429 / 402 ApiError.

    The hold covers the prompt at its upper bound and, for a stream, a first step of the answer
    (QUOTA_HOLD_STEP tokens); the stream asks for more as the answer grows (Meter.extend). A
    non-stream answer cannot be counted as it comes, so it holds its whole max_tokens at once.
    The max_tokens sent upstream is the client's (or QUOTA_COMPLETION_ALLOWANCE), lowered to what
    the balance pays for."""
    config = current_app.config
    multipliers = multipliers_of(route)
    step = config["QUOTA_HOLD_STEP"]
    ask = quota.Ask(
        prompt_cost=chat.prompt_bound * multipliers.prompt,
        completion_multiplier=multipliers.completion * (1 if chat.stream else chat.choices),
        wanted=chat.max_tokens or config["QUOTA_COMPLETION_ALLOWANCE"],
        rpm=rpm_of(key),
        max_running=key.max_concurrent or 0,
        hold_ms=_hold_ms(),
        upfront=step if chat.stream else 0,
    )
    decision = quota.admit(
        get_redis(), _prefix(), key.id, request_id, ask, lambda: balances.sql_totals(key.id), _cache_seconds()
    )
    g.rate_window = decision.window
    admission = _admitted(decision, ask)
    return Meter(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        Settlement(
            request_id, key.id, route.public_id, route.upstream_model, chat.stream, multipliers, time.monotonic()
        ),
        chat,
        prompt_cost=ask.prompt_cost,
        max_tokens=admission.cap,
        held=admission.amount,
    )


def _admitted(decision: quota.Decision, ask: quota.Ask) -> pricing.Admission:
    if decision.status == quota.RATE_LIMITED:
        raise _too_many_requests(decision.window)
    if decision.status == quota.TOO_MANY_RUNNING:
        raise rate_limited(RateLimited(ask.max_running, 1, kind="concurrency"))
    if decision.status == quota.NO_QUOTA or decision.admission is None:
        needed = ask.prompt_cost + max(1, ask.completion_multiplier)
        raise quota_exceeded(QuotaExceeded(decision.used, decision.quota, needed, decision.held, decision.running))
    return decision.admission


def _too_many_requests(window: ratelimit.RateWindow) -> ApiError:
    return rate_limited(RateLimited(window.limit, ratelimit.retry_after_seconds(window)))


# -- the admitted request -------------------------------------------------------------------------


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


class Meter:
    """One admitted request: its hold, grown by extend() while a stream runs, and its settlement,
    which happens once however many times settle() or release() are called. It keeps the app,
    not the request, so a stream can use it after the view has returned (relay.stream.Budget)."""

    def __init__(
        self, app: Flask, settlement: Settlement, chat: ChatRequest, *, prompt_cost: int, max_tokens: int, held: int
    ) -> None:
        self.app = app
        self.settlement = settlement
        self.chat = chat
        self.prompt_cost = prompt_cost
        self.max_tokens = max_tokens  # completion tokens the upstream is asked for at most
        self.held = held  # billed tokens held for this request now
        self.billed: int | None = None
        self._multiplier = max(1, settlement.multipliers.completion)

    @property
    def covered(self) -> int:
        """Completion tokens the hold pays for."""
        return (self.held - self.prompt_cost) // self._multiplier

    def extend(self, produced: int) -> int:
        """Grow the hold to cover `produced` completion tokens and a step more, from the key's
        free balance; returns the completion tokens now covered (fewer than `produced`: stop)."""
        missing = produced - self.covered
        if missing <= 0:
            return self.covered
        step = self.app.config["QUOTA_HOLD_STEP"]
        settlement = self.settlement
        with _app_context(self.app):
            try:
                granted = quota.extend(
                    get_redis(),
                    _prefix(),
                    settlement.key_id,
                    settlement.request_id,
                    self.held,
                    (missing + step) * self._multiplier,
                    missing * self._multiplier,
                    _hold_ms(),
                    lambda: balances.sql_totals(settlement.key_id),
                    _cache_seconds(),
                )
            except RedisError:
                # The live ledger is unreachable: let the answer run to the max_tokens the balance
                # paid for at admission, as the upstream was asked; the bill is settled through SQL.
                log.warning("could not extend the hold of %s; trusting its max_tokens", settlement.request_id)
                granted = max(0, self.prompt_cost + self.max_tokens * self._multiplier - self.held)
        self.held += granted
        return self.covered

    def release(self, status_code: int) -> None:
        """Nothing reached the client (refused, unreachable, hung up before any output): nothing billed."""
        self.settle(usage=None, outcome=UPSTREAM_ERROR, delivered=0, status_code=status_code)

    def settle_stream(self, relay: StreamRelay) -> None:
        self.settle(
            usage=relay.usage,
            outcome=relay.outcome,
            delivered=relay.delivered,
            status_code=200,
            first_output_at=relay.first_output_at,
        )

    def settle(
        self,
        *,
        usage: Usage | None,
        outcome: str,
        delivered: int,
        status_code: int,
        first_output_at: float | None = None,
    ) -> int:
        """Bill once, by request id, under the one rule of pricing.billable_usage, and queue the
        usage record. Returns the billed tokens."""
        if self.billed is not None:
            return self.billed
        settlement = self.settlement
        reported = (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None
        estimate = estimate_prompt_tokens(self.chat.body) if reported is None and delivered > 0 else 0
        prompt, completion = pricing.billable_usage(reported, min(estimate, self.chat.prompt_bound), delivered)
        billed = pricing.billed_tokens(prompt, completion, settlement.multipliers)
        if billed > self.held:
            # Only an upstream that counts more than it sent gets here: the key is never billed past its hold.
            log.warning("%s: the upstream counted %s tokens, %s were held", settlement.request_id, billed, self.held)
            billed = self.held
        self.billed = billed
        record = _record(settlement, usage, prompt, completion, billed, outcome, status_code, first_output_at)
        with _app_context(self.app):
            _settle_live(settlement, self.held, billed, record)
        return billed


def _app_context(app: Flask) -> AbstractContextManager[Any]:
    # A stream extends and settles after its view returned, outside any context.
    return nullcontext() if has_app_context() else app.app_context()


def _settle_live(settlement: Settlement, held: int, billed: int, record: dict[str, Any]) -> None:
    try:
        queued = quota.settle(
            get_redis(),
            _prefix(),
            settlement.key_id,
            settlement.request_id,
            held,
            billed,
            json.dumps(record, separators=(",", ":")),
        )
    except RedisError:
        # The live ledger is unreachable: keep the durable one right; reconcile fixes Redis later.
        log.warning("live settle of %s failed; writing its usage record to SQL directly", settlement.request_id)
        ledger.write_record(record)
        return
    if queued > 0:
        _wake_drain()


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


def _hold_ms() -> int:
    return int(current_app.config["QUOTA_HOLD_SECONDS"] * 1000)


def _prefix() -> str:
    return current_app.config["BILLING_REDIS_PREFIX"]


def _cache_seconds() -> int:
    return quota.live_ttl(current_app.config)
