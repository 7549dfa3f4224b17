"""Billed tokens and admission arithmetic: pure tables."""

from __future__ import annotations

import pytest

from app.billing.pricing import Admission, Multipliers, admit, billable_usage, billed_tokens, legacy_dollars

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("prompt", "completion", "multipliers", "billed"),
    [
        (0, 0, Multipliers(1, 1), 0),
        (10, 5, Multipliers(1, 1), 15),
        (10, 5, Multipliers(2, 2), 30),
        (10, 5, Multipliers(1, 4), 30),
        (1_000_000, 250_000, Multipliers(3, 1), 3_250_000),
        (7, 0, Multipliers(2, 9), 14),
    ],
)
def test_billed_tokens_are_usage_times_integer_multipliers(prompt, completion, multipliers, billed):
    assert billed_tokens(prompt, completion, multipliers) == billed


@pytest.mark.parametrize(
    ("reported", "estimate", "events", "billed_usage"),
    [
        ((12, 40), 30, 3, (12, 40)),  # the upstream's count wins, whatever we saw
        ((12, 0), 30, 0, (12, 0)),
        (None, 30, 0, (0, 0)),  # nothing reached the client (failed, hung up, cut before output): nothing
        (None, 30, 7, (30, 7)),  # hung up mid-stream: prompt estimate plus the tokens received
    ],
)
def test_billable_usage_prefers_the_upstream_count(reported, estimate, events, billed_usage):
    assert billable_usage(reported, estimate, events) == billed_usage


@pytest.mark.parametrize(
    ("free", "prompt_cost", "multiplier", "wanted", "expected"),
    [
        (1000, 10, 1, 100, Admission(cap=100, amount=110)),  # plenty: the client's max_tokens stands
        (1000, 10, 1, 5000, Admission(cap=990, amount=1000)),  # capped to what the balance pays for
        (1000, 10, 2, 5000, Admission(cap=495, amount=1000)),
        (1001, 10, 2, 5000, Admission(cap=495, amount=1000)),  # rounds down: the hold covers the cap
        (11, 10, 1, 5000, Admission(cap=1, amount=11)),  # room for one completion token
        (10, 10, 1, 5000, None),  # the prompt alone eats the balance
        (11, 10, 2, 5000, None),  # one token would cost 2
        (0, 3, 1, 10, None),
        (-50, 3, 1, 10, None),  # overspent by an estimate error
    ],
)
def test_admission_caps_completion_to_the_balance(free, prompt_cost, multiplier, wanted, expected):
    assert admit(free, prompt_cost, multiplier, wanted) == expected


@pytest.mark.parametrize(
    ("free", "prompt_cost", "multiplier", "wanted", "upfront", "expected"),
    [
        (100_000, 10, 1, 32_768, 2048, Admission(cap=32_768, amount=2058)),  # a stream: the cap, a step held
        (100_000, 10, 2, 32_768, 2048, Admission(cap=32_768, amount=4106)),
        (1000, 10, 1, 32_768, 2048, Admission(cap=990, amount=1000)),  # the step is more than the cap
        (1000, 10, 1, 20, 2048, Admission(cap=20, amount=30)),
    ],
)
def test_a_stream_holds_one_step_of_its_cap(free, prompt_cost, multiplier, wanted, upfront, expected):
    assert admit(free, prompt_cost, multiplier, wanted, upfront) == expected


@pytest.mark.parametrize(
    ("tokens", "per_dollar", "dollars"),
    [(2_000_000, 1_000_000, 2.0), (123, 1_000_000, 0.000123), (0, 1_000_000, 0.0), (500, 1000, 0.5)],
)
def test_legacy_dollars_show_a_fixed_number_of_tokens_per_dollar(tokens, per_dollar, dollars):
    assert legacy_dollars(tokens, per_dollar) == dollars
