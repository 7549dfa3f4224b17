"""Admission and settlement of one relayed request: reserve before, settle and record after."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app import jobs
from app.billing.keys import KeyInfo
from app.billing.pricing import Multipliers, billed_tokens
from app.billing.routes import RouteInfo
from app.relay.usage import Usage, estimate_prompt_tokens


@dataclass(frozen=True, slots=True)
class Reservation:
    request_id: str
    key_id: int
    reserved: int
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


def reserve(key: KeyInfo, route: RouteInfo, body: dict[str, Any], request_id: str) -> Reservation:
    estimate = estimate_prompt_tokens(body)
    requested = body.get("max_tokens")
    return Reservation(request_id, key.id, 0, estimate, requested if isinstance(requested, int) else None)


def release(reservation: Reservation) -> None:
    """Give back a reservation for a request that produced nothing."""


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
    """Bill once, by request id. Returns the billed tokens."""
    if usage is None:
        usage = (
            Usage(prompt_tokens=reservation.prompt_estimate, completion_tokens=output_events)
            if output_events
            else Usage()
        )
    billed = billed_tokens(usage.prompt_tokens, usage.completion_tokens, settlement.multipliers)
    now = time.monotonic()
    jobs.record_usage(
        {
            "request_id": settlement.request_id,
            "api_key_id": settlement.key_id,
            "model": settlement.model,
            "upstream_model": settlement.upstream_model,
            "stream": settlement.stream,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "cached_tokens": usage.cached_tokens,
            "billed_tokens": billed,
            "outcome": outcome,
            "status_code": status_code,
            "latency_ms": int((now - settlement.started_at) * 1000),
            "ttft_ms": int((first_output_at - settlement.started_at) * 1000) if first_output_at else None,
            "created_at": time.time(),
        }
    )
    return billed
