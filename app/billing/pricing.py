"""Billed tokens and admission arithmetic (pure).

The quota unit is the billed token. A route has three multipliers, each an exact count of
1/UNIT (app.models.multiplier): one for the prompt tokens DeepSeek missed in its cache, one for
the prompt tokens it hit, one for completion tokens (reasoning included). A request's bill is

    ceil((miss × prompt + hit × cache_hit + completion × completion) / UNIT)

rounded up once, at the end. Everything here is integer arithmetic. Holds round up and the
completion cap rounds down, so a hold always covers the bill it is settled with.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models.multiplier import UNIT

# Admission never asks for more than this many 1/UNIT of completion, so the same arithmetic in
# quota.py's Lua (doubles, exact below 2**53) stays exact; it caps max_tokens at 2**50 / multiplier.
MAX_COMPLETION_UNITS = 2**50


@dataclass(frozen=True, slots=True)
class Multipliers:
    """A route's multipliers in 1/UNIT: UNIT bills a token as one billed token."""

    prompt: int = UNIT  # a prompt token DeepSeek did not have cached (a cache miss)
    cache_hit: int = UNIT  # a prompt token served from DeepSeek's context cache
    completion: int = UNIT  # reasoning included

    @property
    def prompt_hold(self) -> int:
        """Per prompt token before the answer: whether a token will hit the cache is not known yet."""
        return max(self.prompt, self.cache_hit)


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """What one request is billed for, in the upstream's tokens."""

    prompt: int = 0  # hits included, as DeepSeek's prompt_tokens = hit + miss
    cache_hit: int = 0  # never more than prompt
    completion: int = 0  # reasoning included

    @property
    def cache_miss(self) -> int:
        return self.prompt - self.cache_hit


@dataclass(frozen=True, slots=True)
class Admission:
    """What a request may spend: `cap` completion tokens, `amount` billed tokens held for it."""

    cap: int
    amount: int


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def billed_units(counts: TokenCounts, multipliers: Multipliers) -> int:
    """The exact charge before rounding, in 1/UNIT of a billed token."""
    return (
        counts.cache_miss * multipliers.prompt
        + counts.cache_hit * multipliers.cache_hit
        + counts.completion * multipliers.completion
    )


def billed_tokens(counts: TokenCounts, multipliers: Multipliers) -> int:
    """The request's bill: its three parts summed exactly, then rounded up once to a whole token."""
    return ceil_div(billed_units(counts, multipliers), UNIT)


def prompt_cost(prompt_bound: int, multipliers: Multipliers) -> int:
    """Billed tokens held for a prompt of at most `prompt_bound` tokens, hits or misses."""
    return ceil_div(prompt_bound * multipliers.prompt_hold, UNIT)


def completion_cost(tokens: int, multiplier: int) -> int:
    """Billed tokens held for `tokens` completion tokens at `multiplier` (1/UNIT), rounded up."""
    return ceil_div(tokens * multiplier, UNIT)


def completion_covered(amount: int, multiplier: int) -> int:
    """Completion tokens that `amount` billed tokens pay for, rounded down: the inverse of
    completion_cost, so that completion_cost(completion_covered(a, m), m) <= a."""
    return amount * UNIT // max(1, multiplier)


def billable_usage(reported: TokenCounts | None, prompt_estimate: int, delivered: int) -> TokenCounts:
    """The tokens to bill: the one rule for every way a request can end.

    The upstream's own count when it sent one (the answer was finished), with its cache split.
    Without it (the client hung up, the upstream failed, the answer was cut for quota) the client
    pays for what reached it: nothing at all if no output did, else the prompt estimate, all of it
    as cache misses (no split is known), plus the `delivered` output tokens (counted from the
    stream's events, relay.bounds, or estimated from the text of a whole answer that came without
    a count)."""
    if reported is not None:
        return reported
    if delivered <= 0:
        return TokenCounts()
    return TokenCounts(prompt=prompt_estimate, completion=delivered)


def admit(free: int, prompt_cost: int, completion_multiplier: int, wanted: int, upfront: int = 0) -> Admission | None:
    """The reservation for one request against `free` billed tokens, or None when the balance
    cannot pay for the prompt bound and at least one completion token.

    `prompt_cost` is in billed tokens (prompt_cost()), `completion_multiplier` in 1/UNIT. The
    completion cap (the max_tokens sent upstream) is what the client asked for, or the default
    allowance, lowered to what the balance pays for. The hold covers the prompt bound and
    `upfront` completion tokens of the cap (0: all of it); a stream asks for the rest as its
    answer grows. quota.py's Lua script computes the same thing, step by step, atomically;
    tests/billing/test_quota.py checks they agree."""
    multiplier = max(1, completion_multiplier)
    wanted = min(wanted, MAX_COMPLETION_UNITS // multiplier)
    room = free - prompt_cost
    if room <= 0:
        return None
    # Only a balance short of the whole ask is divided: room * UNIT < wanted * multiplier <= 2**50.
    cap = wanted if room >= completion_cost(wanted, multiplier) else completion_covered(room, multiplier)
    if cap < 1:
        return None
    held = min(cap, upfront) if upfront > 0 else cap
    return Admission(cap=cap, amount=prompt_cost + completion_cost(held, multiplier))


def legacy_dollars(tokens: int, tokens_per_dollar: int) -> float:
    """Tokens shown as the dollar amounts one-api's legacy billing endpoints return (display only:
    the JSON those clients parse wants a number; no bill is computed from it)."""
    return round(tokens / max(1, tokens_per_dollar), 6)
