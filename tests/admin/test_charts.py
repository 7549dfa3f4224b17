"""Pure units: SVG charts and number formatting."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from app.admin import charts
from app.admin.formatting import compact, money, percent

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        (0, (1, 1)),
        (3, (3, 3)),
        (23, (30, 3)),
        (25, (30, 3)),
        (2_000_000, (2_000_000, 4)),
        (1200, (1500, 3)),
        (0.4, (1, 1)),
    ],
)
def test_axis_has_round_whole_ticks(top, expected):
    assert charts.axis(top) == expected


def test_bar_chart_is_valid_svg_with_escaped_labels_and_tooltips():
    svg = charts.bar_chart(
        ["<b>&", "b"],
        [charts.Series("ok", [3, 0], "indigo"), charts.Series("bad", [1, 2], "red")],
        title='Requests "today"',
    )
    root = ET.fromstring(str(svg))
    assert root.tag.endswith("svg") and root.get("aria-label") == 'Requests "today"'
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert "<b>& — ok: 3 · bad: 1" in titles
    fills = [r.get("fill") for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    assert fills.count(charts.PALETTE["indigo"]) == 1 and fills.count(charts.PALETTE["red"]) == 2


def test_empty_chart_says_so():
    svg = str(charts.bar_chart(["a", "b"], [charts.Series("x", [0, 0])], title="t", empty_text="Nothing yet"))
    assert "Nothing yet" in svg


def test_sparkline_needs_two_points():
    assert str(charts.sparkline([5], title="t")) == ""
    assert "<polyline" in str(charts.sparkline([0, 3, 1], title="t"))


@pytest.mark.parametrize(
    ("value", "text"), [(999, "999"), (1234, "1.2k"), (2_000_000, "2M"), (1_050_000, "1.1M"), (None, "–")]
)
def test_compact(value, text):
    assert compact(value) == text


@pytest.mark.parametrize(
    ("cents", "currency", "text"),
    [
        (1999, "USD", "$19.99"),
        (5, "USD", "$0.05"),
        (-250, "EUR", "-€2.50"),
        (123456, "CHF", "1,234.56 CHF"),
        (0, "USD", "$0.00"),
    ],
)
def test_money_uses_integer_cents(cents, currency, text):
    assert money(cents, currency) == text


def test_percent():
    assert percent(1 / 3) == "33.3%"
