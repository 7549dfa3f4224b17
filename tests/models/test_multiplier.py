"""Route multipliers typed by an operator, stored as exact 1/10,000 and shown back."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.models.multiplier import MultiplierError, format_multiplier, parse_multiplier

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "scaled"),
    [
        ("1", 10_000),
        ("0.02", 200),
        ("0.0001", 1),
        (" 2.5 ", 25_000),
        ("1000", 10_000_000),
        ("0.10", 1_000),
        ("1e-2", 100),
        (3, 30_000),
        (Decimal("0.0667"), 667),
    ],
)
def test_a_multiplier_is_read_exactly(text, scaled):
    assert parse_multiplier(text) == scaled


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0.00001", "more than 4 decimals"),
        ("0.33333", "more than 4 decimals"),
        ("-1", "negative"),
        ("-0.0001", "negative"),
        ("NaN", "finite"),
        ("sNaN", "finite"),
        ("Infinity", "finite"),
        ("abc", "must be a number"),
        ("", "must be a number"),
        ("1,5", "must be a number"),
        ("0x10", "must be a number"),
        ("1000.0001", "at most 1000"),
        ("1e9", "at most 1000"),
        ("0", "more than 0"),
        (0.5, "must be a number"),  # a float never gets in, even a representable one
        (True, "must be a number"),
        (None, "must be a number"),
    ],
)
def test_a_multiplier_that_cannot_be_stored_exactly_is_refused_with_the_reason(text, reason):
    with pytest.raises(MultiplierError, match=reason):
        parse_multiplier(text, "--prompt-multiplier")


def test_zero_is_allowed_where_it_may_be():
    assert parse_multiplier("0", allow_zero=True) == 0
    assert parse_multiplier("0.000", allow_zero=True) == 0


@pytest.mark.parametrize(
    ("scaled", "text"),
    [(10_000, "1"), (200, "0.02"), (1, "0.0001"), (667, "0.0667"), (25_000, "2.5"), (0, "0"), (10_000_000, "1000")],
)
def test_a_multiplier_is_shown_as_the_shortest_exact_decimal(scaled, text):
    assert format_multiplier(scaled) == text
    assert parse_multiplier(text, allow_zero=True) == scaled


def test_a_sum_is_shown_with_thousands():
    assert format_multiplier(18_805_000, thousands=True) == "1,880.5"
