"""Billed tokens from usage and a route's integer multipliers (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Multipliers:
    prompt: int = 1
    completion: int = 1


def billed_tokens(prompt_tokens: int, completion_tokens: int, multipliers: Multipliers) -> int:
    """Prompt and completion tokens (reasoning is part of completion) times the route's multipliers."""
    return prompt_tokens * multipliers.prompt + completion_tokens * multipliers.completion


def completion_cap(balance: int, prompt_cost: int, multipliers: Multipliers) -> int:
    """How many completion tokens a balance can still pay for after the prompt (never negative)."""
    return max(0, (balance - prompt_cost) // max(1, multipliers.completion))
