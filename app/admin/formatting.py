"""Number, money and time formatting for the admin pages, and reading an amount typed in (pure)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace

from app.models.multiplier import format_multiplier

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CNY": "¥", "JPY": "¥"}


def compact(value: int | float | None) -> str:
    """1234 -> 1.2k, 2_000_000 -> 2M; integers below 1000 unchanged."""
    if value is None:
        return "–"
    number = float(value)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            text = f"{number / limit:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{int(number)}" if number == int(number) else f"{number:.1f}"


def money(cents: int | None, currency: str = "USD") -> str:
    """Integer cents to a price string, without floats: 1999 -> $19.99."""
    cents = int(cents or 0)
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    amount = f"{whole:,}.{part:02d}"
    symbol = _SYMBOLS.get(currency)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"


def cents_to_decimal(cents: int) -> str:
    whole, part = divmod(int(cents), 100)
    return f"{whole}.{part:02d}"


# An amount as an operator types it: whole units and at most two decimals ("5", "12.50").
AMOUNT_PATTERN = r"\d{1,9}(\.\d{1,2})?"


def amount_cents(text: str) -> int:
    """A typed amount (AMOUNT_PATTERN, or a price) in cents, exactly: Decimal, never float (0.29 * 100 != 29)."""
    return int(Decimal(text.strip()) * 100)


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def share(part: int, whole: int) -> str:
    """`part` of `whole` as a percentage to one decimal, rounded half up in integers ("87.5%")."""
    if whole <= 0:
        return "–"
    tenths = (part * 1000 * 2 + whole) // (whole * 2)
    return f"{tenths // 10}.{tenths % 10}%"


def when(value: datetime | None, with_seconds: bool = False) -> str:
    if value is None:
        return "–"
    return value.strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")


def seconds(milliseconds: int | None) -> str:
    """Durations for tables: 850 ms -> 0.85 s, 12 345 ms -> 12.3 s."""
    if milliseconds is None:
        return "–"
    value = milliseconds / 1000
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def thousands(value: int | None) -> str:
    return "–" if value is None else f"{int(value):,}"


def namespace() -> SimpleNamespace:
    """What admin templates see as `fmt` (a namespace, so nothing clashes with other blueprints' filters)."""
    return SimpleNamespace(
        compact=compact,
        money=money,
        percent=percent,
        when=when,
        thousands=thousands,
        seconds=seconds,
        cents_decimal=cents_to_decimal,
        multiplier=format_multiplier,
        share=share,
    )
