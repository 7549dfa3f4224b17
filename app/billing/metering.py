"""Metering one relayed request: hold before it goes upstream, grow the hold while a stream runs,
settle once however it ends, and queue its usage record.

Redis round trips per chat completion: one for admission (rate limit, concurrency cap and hold in
one script), one per QUOTA_HOLD_STEP tokens of a streamed answer past the first (extending the
hold), and one for settlement (release the hold, bill, queue the usage record). The record goes to
SQL through the worker, which this process wakes at most every USAGE_DRAIN_KICK_SECONDS. With
Redis down the record goes to SQL at once, and with SQL down too to this machine's spool (spool.py),
replayed after the next settlement that succeeds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from flask import Flask, current_app, has_app_context
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app import jobs, metrics
from app.billing import ledger, pricing, quota, ratelimit, spool, statements, tokenizer
from app.billing.errors import QuotaExceeded, RateLimited
from app.billing.key_lookup import KeyInfo
from app.billing.ledger import UsageEntry
from app.billing.pricing import Multipliers
from app.extensions import get_redis
from app.relay import bounds
from app.relay.stream import UPSTREAM_ERROR
from app.relay.usage import Usage, estimate_prompt_tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Demand:
    """What a request may cost, read from its body before anything is held."""

    prompt_bound: int  # prompt tokens the upstream can count at most (relay.bounds)
    max_tokens: int | None  # the client's limit, if it set one
    choices: int  # n
    stream: bool
    body: Mapping[str, Any]  # for the prompt estimate, needed only when no count comes back


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


class FinishedStream(Protocol):
    usage: Usage | None
    outcome: str
    delivered: int
    first_output_at: float | None


def rpm_of(key: KeyInfo) -> int:
    return key.rpm or current_app.config["KEY_DEFAULT_RPM"]


def reserve(
    key: KeyInfo,
    settlement: Settlement,
    demand: Demand,
    guard: Sequence[tuple[str, bytes]] = (),
    reads: Sequence[str] = (),
) -> Meter:
    """Admit the request or raise RateLimited / QuotaExceeded (both carry the rate window).

    The hold covers the prompt at its upper bound (the byte bound, or DeepSeek's tokenizer's count
    when the byte bound does not fit) and, for a stream, a first step of the answer
    (QUOTA_HOLD_STEP tokens); the stream asks for more as the answer grows (Meter.extend). A
    non-stream answer cannot be counted as it comes, so it holds its whole max_tokens at once.
    The max_tokens sent upstream is the client's (or QUOTA_COMPLETION_ALLOWANCE), lowered to what
    the balance pays for. Raises Stale, with nothing admitted, when a value in `guard` moved; the
    values of the `reads` keys, read in the same script, are in meter.reads."""
    config = current_app.config
    multipliers = settlement.multipliers
    ask = quota.Ask(
        prompt_cost=pricing.prompt_cost(demand.prompt_bound, multipliers),
        completion_multiplier=multipliers.completion * (1 if demand.stream else demand.choices),
        wanted=demand.max_tokens or config["QUOTA_COMPLETION_ALLOWANCE"],
        rpm=rpm_of(key),
        max_running=key.max_concurrent or 0,
        hold_ms=_hold_ms(),
        upfront=config["QUOTA_HOLD_STEP"] if demand.stream else 0,
    )
    decision = _admit(key, settlement.request_id, ask, guard, reads)
    prompt_bound = demand.prompt_bound
    if decision.status == quota.NO_QUOTA and _could_fit(decision, demand, multipliers):
        # The byte bound is loose: before refusing, count the prompt as DeepSeek would.
        counted = tokenizer.prompt_token_bound(demand.body, config["TOKENIZE_MAX_BYTES"])
        if counted is not None and counted < prompt_bound:
            prompt_bound = counted
            ask = dataclasses.replace(ask, prompt_cost=pricing.prompt_cost(counted, multipliers))
            decision = _admit(key, settlement.request_id, ask, guard, reads)
    admission = _admitted(decision, ask)
    meter = Meter(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        settlement,
        dataclasses.replace(demand, prompt_bound=prompt_bound),
        prompt_cost=ask.prompt_cost,
        max_tokens=admission.cap,
        held=admission.amount,
    )
    meter.window = decision.window
    meter.reads = decision.reads
    return meter


def _could_fit(decision: quota.Decision, demand: Demand, multipliers: Multipliers) -> bool:
    """Whether any count of the prompt could fit what is free: a key with nothing left is refused
    without spending CPU on its prompt (any count is at least the template's tokens)."""
    free = decision.quota - decision.used - decision.held
    least = pricing.prompt_cost(bounds.overhead(demand.body), multipliers)
    return free >= least + pricing.completion_cost(1, multipliers.completion)


def _admit(
    key: KeyInfo, request_id: str, ask: quota.Ask, guard: Sequence[tuple[str, bytes]], reads: Sequence[str]
) -> quota.Decision:
    def load() -> tuple[int, int]:
        return statements.sql_totals(key.id)

    return quota.admit(get_redis(), _prefix(), key.id, request_id, ask, load, _cache_seconds(), guard, reads)


def _admitted(decision: quota.Decision, ask: quota.Ask) -> pricing.Admission:
    window = decision.window
    if decision.status == quota.RATE_LIMITED:
        raise RateLimited(window.limit, ratelimit.retry_after_seconds(window), window=window)
    if decision.status == quota.TOO_MANY_RUNNING:
        raise RateLimited(ask.max_running, 1, kind="concurrency", window=window)
    if decision.status == quota.NO_QUOTA or decision.admission is None:
        needed = ask.prompt_cost + pricing.completion_cost(1, ask.completion_multiplier)
        raise QuotaExceeded(decision.used, decision.quota, needed, decision.held, decision.running, window=window)
    return decision.admission


class Meter:
    """One admitted request: its hold, grown by extend() while a stream runs, and its settlement,
    which happens once however many times settle() or release() are called. It keeps the app,
    not the request, so a stream can use it after the view has returned (relay.stream.Budget)."""

    def __init__(
        self, app: Flask, settlement: Settlement, demand: Demand, *, prompt_cost: int, max_tokens: int, held: int
    ) -> None:
        self.app = app
        self.settlement = settlement
        self.demand = demand
        self.prompt_cost = prompt_cost
        self.max_tokens = max_tokens  # completion tokens the upstream is asked for at most
        self.held = held  # billed tokens held for this request now
        self.billed: int | None = None
        self.window: ratelimit.RateWindow | None = None  # the rate limit as admission left it
        self.reads: tuple[bytes, ...] = ()  # the values admission read for the caller (reserve's `reads`)
        self.upstream = ""  # the upstream account that answered, once the relay knows (metrics only)
        self._multiplier = max(1, settlement.multipliers.completion)  # 1/UNIT per completion token
        metrics.admitted(settlement.stream)

    def served_by(self, upstream: str, upstream_model: str) -> None:
        """The account and model that answered, when failover chose another than the route's first."""
        self.upstream = upstream
        if upstream_model != self.settlement.upstream_model:
            self.settlement = dataclasses.replace(self.settlement, upstream_model=upstream_model)

    @property
    def covered(self) -> int:
        """Completion tokens the hold pays for (rounded down, as admission's cap)."""
        return pricing.completion_covered(self.held - self.prompt_cost, self._multiplier)

    def extend(self, produced: int) -> int:
        """Grow the hold to cover `produced` completion tokens and a step more, from the key's
        free balance; returns the completion tokens now covered (fewer than `produced`: stop)."""
        missing = produced - self.covered
        if missing <= 0:
            return self.covered
        step = self.app.config["QUOTA_HOLD_STEP"]
        settlement = self.settlement
        # In billed tokens, rounded up as admission's hold: what `produced` and a step more cost,
        # and the least that lets `produced` through, less what is held already.
        wanted = self._hold_for(produced + step) - self.held
        fewest = self._hold_for(produced) - self.held
        with _app_context(self.app):
            try:
                granted = quota.extend(
                    get_redis(),
                    _prefix(),
                    settlement.key_id,
                    settlement.request_id,
                    self.held,
                    wanted,
                    fewest,
                    _hold_ms(),
                    lambda: statements.sql_totals(settlement.key_id),
                    _cache_seconds(),
                )
            except RedisError:
                # The live ledger is unreachable: let the answer run to the max_tokens the balance
                # paid for at admission, as the upstream was asked; the bill is settled through SQL.
                log.warning("could not extend the hold of %s; trusting its max_tokens", settlement.request_id)
                granted = max(0, self._hold_for(self.max_tokens) - self.held)
        self.held += granted
        return self.covered

    def _hold_for(self, completion_tokens: int) -> int:
        return self.prompt_cost + pricing.completion_cost(completion_tokens, self._multiplier)

    def release(self, status_code: int) -> None:
        """Nothing reached the client (refused, unreachable, hung up before any output): nothing billed."""
        self.settle(usage=None, outcome=UPSTREAM_ERROR, delivered=0, status_code=status_code)

    def settle_stream(self, relay: FinishedStream) -> None:
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
        reported = _counts(usage) if usage is not None else None
        estimate = estimate_prompt_tokens(self.demand.body) if reported is None and delivered > 0 else 0
        counts = pricing.billable_usage(reported, min(estimate, self.demand.prompt_bound), delivered)
        billed = pricing.billed_tokens(counts, settlement.multipliers)
        if billed > self.held:
            # Only an upstream that counts more than it sent gets here: the key is never billed past its hold.
            log.warning("%s: the upstream counted %s tokens, %s were held", settlement.request_id, billed, self.held)
            billed = self.held
        self.billed = billed
        entry = _entry(settlement, usage, counts, billed, outcome, status_code, first_output_at)
        with _app_context(self.app):
            _settle_live(settlement, self.held, entry)
        metrics.settled(
            model=settlement.model,
            upstream=self.upstream,
            stream=settlement.stream,
            status=status_code,
            outcome=outcome,
            seconds=entry.latency_ms / 1000,
            first_token_seconds=None if entry.ttft_ms is None else entry.ttft_ms / 1000,
            billed=billed,
            reported=None if reported is None else (reported.prompt, reported.completion),
        )
        return billed


def _app_context(app: Flask) -> AbstractContextManager[Any]:
    # A stream extends and settles after its view returned, outside any context.
    return nullcontext() if has_app_context() else app.app_context()


def _settle_live(settlement: Settlement, held: int, entry: UsageEntry) -> None:
    try:
        queued = quota.settle(
            get_redis(), _prefix(), settlement.key_id, settlement.request_id, held, entry.billed_tokens, entry.to_json()
        )
    except RedisError:
        # The live ledger is unreachable: keep the durable one right; reconcile fixes Redis later
        # (and frees the hold once the record is in SQL).
        log.warning("live settle of %s failed; writing its usage record to SQL directly", settlement.request_id)
        _settle_durable(entry)
        return
    if queued > 0:
        _wake_drain()
    spool.replay_soon()


def _settle_durable(entry: UsageEntry) -> None:
    """The usage record straight into SQL or, when SQL fails as well, into this machine's spool.
    Never raises: the stream this settles still has its last frame to send."""
    record = entry.as_dict()
    try:
        ledger.write_record(record)
    except SQLAlchemyError as exc:
        log.warning("usage record %s not written to SQL either (%s)", entry.request_id, exc.__class__.__name__)
        spool.keep(record)
        return
    spool.replay_soon()


def _counts(usage: Usage) -> pricing.TokenCounts:
    # DeepSeek's prompt_tokens = hit + miss; a hit count past the prompt would bill negative misses.
    return pricing.TokenCounts(
        prompt=usage.prompt_tokens,
        cache_hit=min(usage.cached_tokens, usage.prompt_tokens),
        completion=usage.completion_tokens,
    )


def _entry(
    settlement: Settlement,
    usage: Usage | None,
    counts: pricing.TokenCounts,
    billed: int,
    outcome: str,
    status_code: int,
    first_output_at: float | None,
) -> UsageEntry:
    return UsageEntry(
        request_id=settlement.request_id,
        api_key_id=settlement.key_id,
        model=settlement.model,
        upstream_model=settlement.upstream_model,
        stream=settlement.stream,
        prompt_tokens=counts.prompt,
        completion_tokens=counts.completion,
        reasoning_tokens=usage.reasoning_tokens if usage else 0,
        cached_tokens=counts.cache_hit,  # the hits billed; the misses are prompt_tokens - cached_tokens
        billed_tokens=billed,
        outcome=outcome,
        status_code=status_code,
        latency_ms=int((time.monotonic() - settlement.started_at) * 1000),
        ttft_ms=int((first_output_at - settlement.started_at) * 1000) if first_output_at else None,
        created_at=time.time(),
        prompt_multiplier_e4=settlement.multipliers.prompt,
        cache_hit_multiplier_e4=settlement.multipliers.cache_hit,
        completion_multiplier_e4=settlement.multipliers.completion,
    )


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
        jobs.enqueue_usage_drain(delay)
    except Exception:  # noqa: BLE001 - the record is safe in the outbox; the beat drains it
        log.warning("could not wake the usage worker", exc_info=True)


def _hold_ms() -> int:
    return int(current_app.config["QUOTA_HOLD_SECONDS"] * 1000)


def _prefix() -> str:
    return current_app.config["BILLING_REDIS_PREFIX"]


def _cache_seconds() -> int:
    return quota.live_ttl(current_app.config)
