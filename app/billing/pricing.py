"""Billed tokens and admission arithmetic (pure).

The quota unit is the billed token: prompt and completion tokens (reasoning is part of completion)
times the route's integer multipliers. Everything here is integers; nothing rounds down in the
buyer's favour or against it, because nothing is divided except the completion cap, which rounds
down so that the reservation always covers it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Multipliers:
    prompt: int = 1
    completion: int = 1


@dataclass(frozen=True, slots=True)
class Admission:
    """What a request may spend: `cap` completion tokens, `amount` billed tokens held for it."""

    cap: int
    amount: int


def billed_tokens(prompt_tokens: int, completion_tokens: int, multipliers: Multipliers) -> int:
    """Prompt and completion tokens (reasoning is part of completion) times the route's multipliers."""
    return prompt_tokens * multipliers.prompt + completion_tokens * multipliers.completion


def billable_usage(reported: tuple[int, int] | None, prompt_estimate: int, output_events: int) -> tuple[int, int]:
    """(prompt, completion) tokens to bill.

    The upstream's own count when it sent one. Without it (a client that hung up, an upstream that
    died mid-answer) the prompt estimate plus one token per streamed output event, and nothing at
    all when nothing was produced."""
    if reported is not None:
        return reported
    if output_events <= 0:
        return 0, 0
    return prompt_estimate, output_events


def admit(free: int, prompt_cost: int, completion_multiplier: int, wanted: int) -> Admission | None:
    """The reservation for one request against `free` billed tokens, or None when the balance
    cannot pay for the prompt estimate and at least one completion token.

    The completion cap is what the client asked for (or the default allowance), lowered to what
    the balance pays for; the reservation covers the prompt estimate and the whole cap, so the
    key can overspend only by the amount the prompt estimate was short. quota.py's Lua script
    computes the same thing atomically; tests/billing/test_quota.py checks they agree."""
    multiplier = max(1, completion_multiplier)
    cap = min(wanted, (free - prompt_cost) // multiplier)
    if cap < 1:
        return None
    return Admission(cap=cap, amount=prompt_cost + cap * multiplier)


def legacy_dollars(tokens: int, tokens_per_dollar: int) -> float:
    """Tokens shown as the dollar amounts one-api's legacy billing endpoints return."""
    return round(tokens / max(1, tokens_per_dollar), 6)
