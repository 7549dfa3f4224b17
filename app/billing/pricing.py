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


def billable_usage(reported: tuple[int, int] | None, prompt_estimate: int, delivered: int) -> tuple[int, int]:
    """(prompt, completion) tokens to bill: the one rule for every way a request can end.

    The upstream's own count when it sent one (the answer was finished). Without it (the client
    hung up, the upstream failed, the answer was cut for quota) the client pays for what reached
    it: nothing at all if no output did, else the prompt estimate plus the `delivered` output
    tokens (counted from the stream's events, relay.bounds, or estimated from the text of a whole
    answer that came without a count)."""
    if reported is not None:
        return reported
    if delivered <= 0:
        return 0, 0
    return prompt_estimate, delivered


def admit(free: int, prompt_cost: int, completion_multiplier: int, wanted: int, upfront: int = 0) -> Admission | None:
    """The reservation for one request against `free` billed tokens, or None when the balance
    cannot pay for the prompt bound and at least one completion token.

    The completion cap (the max_tokens sent upstream) is what the client asked for, or the default
    allowance, lowered to what the balance pays for. The hold covers the prompt bound and
    `upfront` completion tokens of the cap (0: all of it); a stream asks for the rest as its
    answer grows. quota.py's Lua script computes the same thing atomically;
    tests/billing/test_quota.py checks they agree."""
    multiplier = max(1, completion_multiplier)
    cap = min(wanted, (free - prompt_cost) // multiplier)
    if cap < 1:
        return None
    held = min(cap, upfront) if upfront > 0 else cap
    return Admission(cap=cap, amount=prompt_cost + held * multiplier)


def legacy_dollars(tokens: int, tokens_per_dollar: int) -> float:
    """Tokens shown as the dollar amounts one-api's legacy billing endpoints return."""
    return round(tokens / max(1, tokens_per_dollar), 6)
