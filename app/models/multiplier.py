"""Route multipliers as exact fixed-point integers: UNIT is 1×, so 200 is 0.02×.

Multipliers are stored, compared and multiplied as these integers; Decimal is used only to read an
operator's text and to show a value back, so no float ever touches a bill. Four decimals express
DeepSeek's cache-hit/cache-miss price ratios (1/50 and 1/30 of a miss, see README) to better than
one part in a thousand.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

UNIT = 10_000
PLACES = 4
MAXIMUM = 1000 * UNIT  # the admin form's old ceiling for whole multipliers, kept


class MultiplierError(ValueError):
    """An operator typed a multiplier that cannot be stored exactly; the message says why."""


def parse_multiplier(text: object, name: str = "multiplier", *, allow_zero: bool = False) -> int:
    """`text` ("1", "0.02", "2.5") as a count of 1/UNIT; raises MultiplierError for anything else.

    Zero is refused unless `allow_zero` (a cache hit may be free; a completion may not, since the
    completion cap divides by it)."""
    if isinstance(text, bool) or not isinstance(text, str | int | Decimal):
        raise MultiplierError(f"{name} must be a number like 1, 0.5 or 0.02")
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise MultiplierError(f"{name} must be a number like 1, 0.5 or 0.02, not {str(text)[:20]!r}") from None
    if not value.is_finite():
        raise MultiplierError(f"{name} must be a finite number")
    if value < 0:
        raise MultiplierError(f"{name} cannot be negative")
    if value > MAXIMUM // UNIT:
        raise MultiplierError(f"{name} can be at most {MAXIMUM // UNIT}")
    scaled = value * UNIT
    if scaled != scaled.to_integral_value():
        raise MultiplierError(f"{name} has more than {PLACES} decimals; the finest step is 0.0001")
    if scaled == 0 and not allow_zero:
        raise MultiplierError(f"{name} must be more than 0 (at least 0.0001)")
    return int(scaled)


def format_multiplier(scaled: int, thousands: bool = False) -> str:
    """A count of 1/UNIT as the shortest exact decimal: 10000 -> "1", 200 -> "0.02", 6670 -> "0.667"."""
    whole, fraction = divmod(scaled, UNIT)
    text = f"{whole:,}" if thousands else str(whole)
    if fraction:
        text += "." + f"{fraction:0{PLACES}d}".rstrip("0")
    return text
