"""Server-rendered SVG charts (pure): no script, nothing fetched from anywhere.

Every value is escaped; bars carry a <title> so a hover (or a long press on a phone) shows the
exact numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from app.admin.formatting import compact

PALETTE = {
    "indigo": "#4f46e5",
    "amber": "#f59e0b",
    "red": "#ef4444",
    "sky": "#0ea5e9",
    "emerald": "#10b981",
    "slate": "#94a3b8",
}
_GRID = "#e2e8f0"
_TEXT = "#64748b"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[int | float]
    color: str = "indigo"


def nice_step(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value`."""
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 5):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def axis(top: float, lines: int = 4) -> tuple[float, int]:
    """(ceiling, intervals) for a y axis from 0: round tick values, whole numbers, at most `lines` intervals."""
    if top <= 0:
        return 1, 1
    step = max(nice_step(top / lines), 1)
    intervals = max(1, math.ceil(top / step))
    return step * intervals, intervals


def _label_step(count: int, max_labels: int) -> int:
    return max(1, -(-count // max_labels))


def _fmt_number(value: float) -> str:
    return f"{value:g}" if value < 1000 else compact(value)


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    width: int = 640,
    height: int = 200,
    max_labels: int = 8,
    fmt: Callable[[float], str] = _fmt_number,
    empty_text: str = "No data yet",
) -> Markup:
    """Stacked bars, one per label; each series stacks on the previous one."""
    left, right, top, bottom = 56, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    ceiling, intervals = axis(max(totals, default=0))
    parts = [_open(width, height, title)]
    parts += _grid(left, top, plot_w, plot_h, ceiling, intervals, fmt)
    if not any(totals):
        parts.append(_text(left + plot_w / 2, top + plot_h / 2, empty_text, anchor="middle"))
    slot = plot_w / max(len(labels), 1)
    bar_w = max(slot * 0.72, 1.0)
    step = _label_step(len(labels), max_labels)
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar_w) / 2
        parts.append(_bar_group(x, bar_w, top, plot_h, ceiling, label, [(s, s.values[i]) for s in series], fmt))
        if i % step == 0:
            parts.append(_text(x + bar_w / 2, height - 6, label, anchor="middle"))
    parts.append("</svg>")
    return Markup("".join(parts))


def _open(width: int, height: int, title: str) -> str:
    css = "chart-svg wide" if width > 800 else "chart-svg"  # wide charts get bigger text on phones
    return (
        f'<svg class="{css}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="12" overflow="visible">'
        f"<title>{escape(title)}</title>"
    )


def _grid(
    left: float, top: float, plot_w: float, plot_h: float, ceiling: float, intervals: int, fmt: Callable[[float], str]
) -> list[str]:
    parts = []
    for i in range(intervals + 1):
        value = ceiling * i / intervals
        y = top + plot_h - plot_h * i / intervals
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>')
        parts.append(_text(left - 6, y + 4, fmt(value), anchor="end"))
    return parts


def _bar_group(
    x: float,
    bar_w: float,
    top: float,
    plot_h: float,
    ceiling: float,
    label: str,
    values: list[tuple[Series, float]],
    fmt: Callable[[float], str],
) -> str:
    tip = " · ".join(f"{s.name}: {fmt(v)}" for s, v in values) if len(values) > 1 else fmt(values[0][1])
    parts = [f"<g><title>{escape(label)} — {escape(tip)}</title>"]
    parts.append(f'<rect x="{x:.1f}" y="{top}" width="{bar_w:.1f}" height="{plot_h}" fill="transparent"/>')
    base = top + plot_h
    for series, value in values:
        if value <= 0:
            continue
        h = plot_h * value / ceiling
        base -= h
        color = PALETTE.get(series.color, series.color)
        parts.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{h:.1f}" rx="1.5" fill="{color}"/>')
    parts.append("</g>")
    return "".join(parts)


def _text(x: float, y: float, text: str, anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" fill="{_TEXT}" text-anchor="{anchor}">{escape(text)}</text>'


def sparkline(
    values: Sequence[int | float], *, title: str, width: int = 160, height: int = 36, color: str = "indigo"
) -> Markup:
    """A filled line for a small trend inside a stat tile."""
    if len(values) < 2:
        return Markup("")
    ceiling = max(max(values), 1)
    step = width / (len(values) - 1)
    points = [(i * step, height - 2 - (height - 4) * v / ceiling) for i, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    stroke = PALETTE.get(color, color)
    area = f"0,{height} {line} {width},{height}"
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        f'<polygon points="{area}" fill="{stroke}" fill-opacity="0.12"/>'
        f'<polyline points="{line}" fill="none" stroke="{stroke}" stroke-width="1.5" '
        f'vector-effect="non-scaling-stroke"/></svg>'
    )
