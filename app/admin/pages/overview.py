"""The overview: the business at a glance."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import render_template
from flask_babel import gettext as _
from markupsafe import Markup

from app.admin import charts, queries, services
from app.admin.blueprint import bp
from app.admin.formatting import money
from app.models import utcnow


def _traffic_charts(now: datetime) -> dict[str, Markup]:
    minutes = queries.requests_series(now, "minute", 60)
    hours = queries.requests_series(now, "hour", 24)
    days = queries.requests_series(now, "day", 30)
    hour_labels = [start.strftime("%H:00") for start, *_rest in hours]
    day_labels = [start.strftime("%m-%d") for start, *_rest in days]
    return {
        "rpm_spark": charts.sparkline([row[1] for row in minutes], title=_("Requests per minute, last hour")),
        "hourly": charts.bar_chart(
            hour_labels,
            [
                charts.Series(_("Completed"), [row[2] for row in hours], "indigo"),
                charts.Series(_("Client closed"), [row[3] for row in hours], "amber"),
                charts.Series(_("Errors"), [row[4] for row in hours], "red"),
            ],
            title=_("Requests per hour (UTC), last 24 hours"),
            empty_text=_("No requests yet"),
        ),
        "tokens": charts.bar_chart(
            day_labels,
            [charts.Series(_("Billed tokens"), [row[5] for row in days], "sky")],
            title=_("Billed tokens per day (UTC), last 30 days"),
            empty_text=_("No requests yet"),
        ),
    }


def _revenue_chart(now: datetime, currency: str) -> Markup:
    days = queries.revenue_series(now, 30, currency)
    return charts.bar_chart(
        [start.strftime("%m-%d") for start, _cents in days],
        [charts.Series(_("Revenue"), [cents for _start, cents in days], "emerald")],
        title=_("Revenue per day (%(currency)s), last 30 days", currency=currency),
        fmt=lambda cents: money(int(cents), currency),
        empty_text=_("No sales yet"),
    )


def _cache_hits(now: datetime) -> list[tuple[str | None, queries.CacheHits | None, queries.CacheHits]]:
    """(model, last 24 hours, last 30 days): all models first; a model idle for a day has no 24-hour row."""
    day = {c.model: c for c in queries.cache_hits(now - timedelta(hours=24))}
    return [(c.model, day.get(c.model), c) for c in queries.cache_hits(now - timedelta(days=30))]


@bp.get("/")
def overview() -> str:
    now = utcnow()
    stats = queries.overview(now)
    currency = max(stats.revenue_month, key=stats.revenue_month.get, default="USD")
    health = queries.upstream_health(now)
    return render_template(
        "admin/overview.html",
        now=now,
        stats=stats,
        currency=currency,
        health=health,
        checks={h.upstream.id: services.last_check(h.upstream.id) for h in health},
        models=queries.model_breakdown(now - timedelta(hours=24)),
        cache_hits=_cache_hits(now),
        revenue_chart=_revenue_chart(now, currency),
        **_traffic_charts(now),
    )
