"""Choosing targets from a public model's pool, and the circuit breaker's states: pure functions.

The order to try: the highest priority first, targets spread by weight within a priority, the
lower priorities as the fallback. A target out of the running (its account disabled, its breaker
open, or as many requests in flight as its account allows) is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Generic, TypeVar

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Breaker:
    """One upstream's breaker as stored: consecutive failures, when an open breaker lets a trial
    through (epoch seconds; 0 = never opened since the last success), and the back-off it opened
    for last (doubled each time a trial fails)."""

    failures: int = 0
    open_until: float = 0.0
    backoff: float = 0.0


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int  # consecutive failures that open the breaker
    backoff: float  # seconds it stays open the first time
    max_backoff: float  # the doubling stops here


def breaker_state(breaker: Breaker, now: float) -> str:
    if breaker.open_until == 0:
        return CLOSED
    return OPEN if now < breaker.open_until else HALF_OPEN


def after_failure(breaker: Breaker, now: float, policy: BreakerPolicy) -> Breaker:
    """A failed request (or trial). A half-open breaker opens again for twice as long."""
    failures = breaker.failures + 1
    state = breaker_state(breaker, now)
    if state == OPEN:
        return Breaker(failures, breaker.open_until, breaker.backoff)
    if state == HALF_OPEN:
        backoff = min(max(breaker.backoff, policy.backoff) * 2, policy.max_backoff)
        return Breaker(failures, now + backoff, backoff)
    if failures >= policy.failures:
        return Breaker(failures, now + policy.backoff, policy.backoff)
    return Breaker(failures, 0.0, 0.0)


def after_success(breaker: Breaker) -> Breaker:
    return Breaker()


@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    """A target with what is known of it live."""

    target: T
    priority: int
    weight: int
    disabled: bool = False
    breaker: str = CLOSED
    failures: int = 0  # consecutive failures its breaker has counted
    in_flight: int = 0
    limit: int | None = None  # requests its account may have in flight; None = unlimited

    @property
    def is_usable(self) -> bool:
        return not self.disabled and self.breaker != OPEN

    @property
    def has_room(self) -> bool:
        return self.limit is None or self.in_flight < self.limit


def attempt_order(candidates: Sequence[Candidate[T]], rand: float) -> list[Candidate[T]]:
    """The candidates to try, in order. `rand` is uniform in [0, 1)."""
    ready = sorted((c for c in candidates if c.is_usable and c.has_room), key=lambda c: -c.priority)
    order: list[Candidate[T]] = []
    for _, group in groupby(ready, key=lambda c: c.priority):
        order.extend(weighted_order(list(group), rand))
    return order


def weighted_order(group: list[Candidate[T]], rand: float) -> list[Candidate[T]]:
    """A weighted draw without replacement from one random number: after each pick, the number
    is rescaled to the pick's share, which leaves it uniform over what remains."""
    remaining, order = list(group), []
    while remaining:
        total = sum(max(c.weight, 0) for c in remaining)
        if total <= 0:
            return order + remaining
        point, start = rand * total, 0.0
        for index, candidate in enumerate(remaining):
            share = max(candidate.weight, 0)
            if share and point < start + share:
                rand = (point - start) / share
                order.append(remaining.pop(index))
                break
            start += share
        else:  # rand == 1.0 or rounding: the last one with weight
            order.append(remaining.pop(max(i for i, c in enumerate(remaining) if c.weight > 0)))
    return order


def is_waiting_for_room(candidates: Sequence[Candidate[T]]) -> bool:
    """True when some target is usable but all usable ones are full: worth waiting for a slot."""
    usable = [c for c in candidates if c.is_usable]
    return bool(usable) and not any(c.has_room for c in usable)
