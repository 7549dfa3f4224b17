"""Billed tokens and admission arithmetic: pure tables, and properties over random inputs."""

from __future__ import annotations

import random

import pytest

from app.billing.pricing import (
    MAX_COMPLETION_UNITS,
    Admission,
    Multipliers,
    TokenCounts,
    admit,
    billable_usage,
    billed_tokens,
    billed_units,
    completion_cost,
    completion_covered,
    legacy_dollars,
    prompt_cost,
)
from app.models.multiplier import UNIT, parse_multiplier

pytestmark = pytest.mark.unit


def m(prompt: str = "1", hit: str = "1", completion: str = "1") -> Multipliers:
    """Multipliers as an operator types them."""
    return Multipliers(parse_multiplier(prompt), parse_multiplier(hit, allow_zero=True), parse_multiplier(completion))


@pytest.mark.parametrize(
    ("prompt", "hit", "completion", "multipliers", "billed"),
    [
        (0, 0, 0, m(), 0),  # nothing used: nothing billed, not one rounded-up token
        (0, 0, 0, m("0.0001", "0", "0.0001"), 0),
        (10, 0, 5, m(), 15),
        (10, 0, 5, m("2", "2", "2"), 30),
        (10, 0, 5, m("1", "1", "4"), 30),
        (1_000_000, 0, 250_000, m("3", "3", "1"), 3_250_000),
        (7, 0, 0, m("2", "2", "9"), 14),
        (1, 0, 0, m("0.0001", "0", "1"), 1),  # 0.0001 of a token still costs one whole token
        (0, 0, 1, m("1", "1", "0.0001"), 1),
        (1, 1, 0, m("1", "0.0001", "1"), 1),  # one cache hit at 0.0001
        (10_000, 0, 0, m("0.0001", "0", "1"), 1),  # exactly one token: no extra round-up
        (10_001, 0, 0, m("0.0001", "0", "1"), 2),
        (10_000, 9_000, 500, m("1", "0.02", "1"), 1_680),  # 1,000 + 180 + 500
        (10_000, 9_000, 500, m("2", "0.0667", "2"), 3_601),  # 2,000 + 600.3 + 1,000 = 3,600.3, up once
        (3, 3, 0, m("1", "0.3333", "1"), 1),  # 0.9999: one round-up for the sum, not one per token
        (100, 50, 0, m("1", "0", "1"), 50),  # free cache hits
        (1, 0, 1, m("0.5", "0.5", "0.5"), 1),  # two halves are one token, not two rounded-up halves
    ],
)
def test_the_bill_is_three_exact_parts_rounded_up_once(prompt, hit, completion, multipliers, billed):
    assert billed_tokens(TokenCounts(prompt, hit, completion), multipliers) == billed


def test_the_parts_are_cache_misses_hits_and_completion():
    counts = TokenCounts(prompt=1_200, cache_hit=1_000, completion=350)
    assert counts.cache_miss == 200
    assert billed_units(counts, m("1", "0.02", "2")) == 200 * UNIT + 1_000 * 200 + 350 * 2 * UNIT


@pytest.mark.parametrize(
    ("reported", "estimate", "events", "billed_usage"),
    [
        (TokenCounts(12, 0, 40), 30, 3, TokenCounts(12, 0, 40)),  # the upstream's count wins, whatever we saw
        (TokenCounts(12, 9, 0), 30, 0, TokenCounts(12, 9, 0)),  # with its cache split
        (None, 30, 0, TokenCounts()),  # nothing reached the client (failed, hung up, cut before output): nothing
        (None, 30, 7, TokenCounts(30, 0, 7)),  # hung up mid-stream: no split known, so all misses
    ],
)
def test_billable_usage_prefers_the_upstream_count(reported, estimate, events, billed_usage):
    assert billable_usage(reported, estimate, events) == billed_usage


@pytest.mark.parametrize(
    ("bound", "multipliers", "cost"),
    [
        (100, m("1", "0.02", "1"), 100),  # the split is unknown before the answer: the dearer of the two
        (100, m("0.5", "0.02", "1"), 50),
        (100, m("0.1", "0.5", "1"), 50),  # a hit dearer than a miss (an odd route, but covered)
        (3, m("0.3333", "0", "1"), 1),
        (0, m(), 0),
    ],
)
def test_the_prompt_is_held_at_the_dearer_of_miss_and_hit(bound, multipliers, cost):
    assert prompt_cost(bound, multipliers) == cost


X1, X2 = UNIT, 2 * UNIT


@pytest.mark.parametrize(
    ("free", "prompt_cost_", "multiplier", "wanted", "expected"),
    [
        (1000, 10, X1, 100, Admission(cap=100, amount=110)),  # plenty: the client's max_tokens stands
        (1000, 10, X1, 5000, Admission(cap=990, amount=1000)),  # capped to what the balance pays for
        (1000, 10, X2, 5000, Admission(cap=495, amount=1000)),
        (1001, 10, X2, 5000, Admission(cap=495, amount=1000)),  # rounds down: the hold covers the cap
        (11, 10, X1, 5000, Admission(cap=1, amount=11)),  # room for one completion token
        (10, 10, X1, 5000, None),  # the prompt alone eats the balance
        (11, 10, X2, 5000, None),  # one token would cost 2
        (0, 3, X1, 10, None),
        (-50, 3, X1, 10, None),  # overspent by an estimate error
        (11, 10, 3_000, 5000, Admission(cap=3, amount=11)),  # 0.3: one billed token pays for 3
        (12, 10, 3_000, 5000, Admission(cap=6, amount=12)),
        (11, 10, 1, 5000, Admission(cap=5000, amount=11)),  # 0.0001: 5,000 tokens cost 0.5, held as 1
        (11, 10, 1, 10_000, Admission(cap=10_000, amount=11)),
        (11, 10, 1, 10_001, Admission(cap=10_000, amount=11)),
        (10**15, 0, X1, 10**18, Admission(cap=MAX_COMPLETION_UNITS // X1, amount=MAX_COMPLETION_UNITS // X1)),
    ],
)
def test_admission_caps_completion_to_the_balance(free, prompt_cost_, multiplier, wanted, expected):
    assert admit(free, prompt_cost_, multiplier, wanted) == expected


@pytest.mark.parametrize(
    ("free", "prompt_cost_", "multiplier", "wanted", "upfront", "expected"),
    [
        (100_000, 10, X1, 32_768, 2048, Admission(cap=32_768, amount=2058)),  # a stream: the cap, a step held
        (100_000, 10, X2, 32_768, 2048, Admission(cap=32_768, amount=4106)),
        (1000, 10, X1, 32_768, 2048, Admission(cap=990, amount=1000)),  # the step is more than the cap
        (1000, 10, X1, 20, 2048, Admission(cap=20, amount=30)),
        (100_000, 10, 2_500, 32_768, 2049, Admission(cap=32_768, amount=523)),  # 512.25 held as 513
    ],
)
def test_a_stream_holds_one_step_of_its_cap(free, prompt_cost_, multiplier, wanted, upfront, expected):
    assert admit(free, prompt_cost_, multiplier, wanted, upfront) == expected


@pytest.mark.parametrize(("tokens", "multiplier"), [(0, 1), (1, 1), (3, 3_333), (10_000, 1), (7, 15_001), (5, X2)])
def test_what_a_hold_covers_never_costs_more_than_the_hold(tokens, multiplier):
    amount = completion_cost(tokens, multiplier)
    assert completion_covered(amount, multiplier) >= tokens
    assert completion_cost(completion_covered(amount, multiplier), multiplier) <= amount


def _random_multipliers(rng: random.Random) -> Multipliers:
    def one(least: int) -> int:
        return rng.choice([least, UNIT, 2 * UNIT, rng.randint(least, 3 * UNIT), rng.randint(least, 1000 * UNIT)])

    return Multipliers(one(1), one(0), one(1))


def test_any_bill_within_an_admission_fits_its_hold():
    """Whatever the multipliers, the balance and the cache split the answer brings, a request that
    uses at most its prompt bound and its completion cap is billed no more than was held, and the
    hold never exceeds what was free."""
    rng = random.Random(12)
    for _ in range(20_000):
        multipliers = _random_multipliers(rng)
        bound = rng.choice([0, 1, rng.randint(1, 50), rng.randint(1, 200_000)])
        free = rng.choice([rng.randint(-10, 50), rng.randint(0, 10**6), rng.randint(0, 10**12)])
        wanted = rng.choice([1, rng.randint(1, 4096), rng.randint(1, 400_000)])
        held_prompt = prompt_cost(bound, multipliers)
        admission = admit(free, held_prompt, multipliers.completion, wanted)
        if admission is None:
            continue
        assert admission.amount <= free and admission.cap <= wanted
        prompt = rng.randint(0, bound)
        counts = TokenCounts(prompt, rng.randint(0, prompt), rng.choice([admission.cap, rng.randint(0, admission.cap)]))
        assert billed_tokens(counts, multipliers) <= admission.amount


@pytest.mark.parametrize(
    ("tokens", "per_dollar", "dollars"),
    [(2_000_000, 1_000_000, 2.0), (123, 1_000_000, 0.000123), (0, 1_000_000, 0.0), (500, 1000, 0.5)],
)
def test_legacy_dollars_show_a_fixed_number_of_tokens_per_dollar(tokens, per_dollar, dollars):
    assert legacy_dollars(tokens, per_dollar) == dollars
