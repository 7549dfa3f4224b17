"""The key's statement in the storefront: /balance/statement, its pages and its CSV.

The key is pasted into a form once (never put in a URL); the browser's signed session then remembers
which key's statement it may read until the tab session ends or the buyer clicks "Forget this key".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from flask import Response, redirect, render_template, request, session, url_for
from flask_babel import lazy_gettext as _l

from app.billing import key_lifecycle, key_statement
from app.extensions import db
from app.models import ApiKey
from app.models.base import utcnow
from app.store import balance
from app.store.views import _no_store, bp

_SESSION_KEY = "statement_key"
CHART_DAYS = 30


@dataclass(frozen=True, slots=True)
class Segment:
    model: str
    billed: int
    percent: float  # of the tallest day's total


@dataclass(frozen=True, slots=True)
class ChartDay:
    day: date
    total: int
    segments: tuple[Segment, ...]


def chart(totals: list[key_statement.DayTotal], days: int, today: date) -> list[ChartDay]:
    """One bar a day, oldest first, days without requests included; bars scaled to the tallest."""
    by_day: dict[date, dict[str, int]] = {}
    for total in totals:
        by_day.setdefault(total.day, {})[total.model] = by_day.get(total.day, {}).get(total.model, 0) + total.billed
    tallest = max((sum(models.values()) for models in by_day.values()), default=0)
    result = []
    for offset in range(days - 1, -1, -1):
        day = today - timedelta(days=offset)
        models = by_day.get(day, {})
        segments = tuple(
            Segment(model, billed, round(100 * billed / tallest, 2) if tallest else 0.0)
            for model, billed in sorted(models.items())
        )
        result.append(ChartDay(day, sum(models.values()), segments))
    return result


# The worked example under "How a request is charged": a long chat resent with one more message.
EXAMPLE_PROMPT, EXAMPLE_CACHE_HIT, EXAMPLE_COMPLETION = 10_000, 9_000, 500


def examples(multipliers: dict[str, key_statement.Multipliers]) -> list[tuple[str, key_statement.Charge]]:
    """Per model, the example request charged as the statement charges a real one (Charge.formula)."""
    result = []
    for model, m in sorted(multipliers.items()):
        charge = key_statement.Charge(EXAMPLE_PROMPT, EXAMPLE_CACHE_HIT, EXAMPLE_COMPLETION, 0, 0, m)
        result.append((model, dataclasses.replace(charge, billed=charge.expected)))
    return result


@bp.post("/balance/statement")
def open_statement() -> Any:
    row = key_lifecycle.find_pasted_key(request.form.get("key"))
    if row is None:
        error = _l("We could not find that key. Paste the whole key; it starts with sk-gateway-.")
        return _no_store(render_template("store/balance.html", error=error), 404)
    session[_SESSION_KEY] = row.id
    return redirect(url_for("store.statement"), code=303)


@bp.get("/balance/statement")
def statement() -> Any:
    row = remembered_key()
    if row is None:
        return redirect(url_for("store.check_balance"))
    return statement_page(row, _page_number(request.args.get("page")), alert_saved=request.args.get("saved"))


def statement_page(row: ApiKey, page: int = 1, status: int = 200, **extra: Any) -> Response:
    """The statement of `row`; `extra` goes to the template (the low-balance form's state, alerts.py)."""
    lines, older = key_statement.requests_page(row.id, page)
    today = utcnow().date()
    html = render_template(
        "store/statement.html",
        summary=balance.summarise(row),
        chart=chart(key_statement.daily_totals(row.id, CHART_DAYS), CHART_DAYS, today),
        lines=lines,
        page=page,
        older=older,
        changes=key_statement.quota_changes(row.id),
        examples=examples(key_statement.current_multipliers()),
        key=row,
        **extra,
    )
    return _no_store(html, status)


@bp.get("/balance/statement.csv")
def statement_csv() -> Any:
    row = remembered_key()
    if row is None:
        return redirect(url_for("store.check_balance"))
    response = Response(key_statement.csv_text(row.id), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="relaygate-{row.prefix[:16]}-statement.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/balance/forget")
def forget_statement() -> Any:
    session.pop(_SESSION_KEY, None)
    return redirect(url_for("store.check_balance"), code=303)


def remembered_key() -> ApiKey | None:
    key_id = session.get(_SESSION_KEY)
    return db.session.get(ApiKey, key_id) if isinstance(key_id, int) else None


def _page_number(raw: str | None) -> int:
    try:
        return min(max(int(raw or 1), 1), 10_000)
    except ValueError:
        return 1
