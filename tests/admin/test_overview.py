"""The overview numbers (app/admin/queries.py) and the page that shows them."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import flask_babel
import pytest

from app.admin import formatting, queries
from app.extensions import db
from app.models import Order, Plan, utcnow
from tests.admin.conftest import add_usage


def _seed(make_key):
    now = utcnow()
    active, _ = make_key(name="active")
    revoked, _ = make_key(name="revoked")
    revoked.status = "revoked"
    make_key(tokens=0, name="exhausted")
    make_key(name="expired", expires_at=now - timedelta(hours=1))
    db.session.commit()
    add_usage(active.id, billed_tokens=100, created_at=now - timedelta(minutes=1))
    add_usage(active.id, billed_tokens=200, outcome="client_closed", created_at=now - timedelta(minutes=2))
    add_usage(active.id, billed_tokens=0, outcome="timeout", status_code=200, created_at=now - timedelta(minutes=30))
    month = queries.start_of_month(now)
    add_usage(revoked.id, billed_tokens=1000, created_at=month)
    add_usage(revoked.id, billed_tokens=5000, created_at=month - timedelta(minutes=1))
    plan = Plan(name="p", tokens=10, price_cents=500)
    db.session.add(plan)
    db.session.flush()
    for cents, refunded in ((500, False), (100, True)):
        db.session.add(
            Order(
                public_id=uuid.uuid4().hex,
                plan_id=plan.id,
                email="b@example.com",
                tokens=10,
                amount_cents=cents,
                status="refunded" if refunded else "fulfilled",
                paid_at=now,
                fulfilled_at=now,
                refunded_at=now if refunded else None,
            )
        )
    db.session.add(
        Order(
            public_id=uuid.uuid4().hex,
            plan_id=plan.id,
            email="c@example.com",
            tokens=10,
            amount_cents=999,
            status="created",
        )
    )
    db.session.commit()
    return now


def test_overview_numbers(app, make_key):
    now = _seed(make_key)
    stats = queries.overview(now)
    month_start_is_today = queries.start_of_month(now) >= queries.start_of_day(now)
    assert stats.tokens_today == 300 + (1000 if month_start_is_today else 0)
    assert stats.tokens_month == 1300
    assert stats.requests_per_minute == 2 / 5
    assert stats.active_keys == 1
    assert stats.revenue_month == {"USD": 600} and stats.revenue_today == {"USD": 600}
    assert stats.refunds_month == {"USD": 100}
    day = stats.last_day
    month = queries.start_of_month(now)
    in_last_day = sum(1 for t in (month, month - timedelta(minutes=1)) if t >= now - timedelta(hours=24))
    assert (day.requests, day.errors, day.disconnects) == (3 + in_last_day, 1, 1)


def test_series_fill_empty_buckets_and_count_outcomes(app, make_key):
    now = _seed(make_key)
    hours = queries.requests_series(now, "hour", 24)
    assert len(hours) == 24 and hours[-1][0] == queries.truncate(now, "hour")
    recent = [row for row in hours if row[0] >= queries.truncate(now - timedelta(minutes=30), "hour")]
    assert sum(r[1] for r in recent) == 3
    assert sum(r[3] for r in recent) == 1 and sum(r[4] for r in recent) == 1  # client closed, errors
    days = queries.revenue_series(now, 30, "USD")
    assert len(days) == 30 and days[-1][1] == 600 and sum(d[1] for d in days) == 600


def test_upstream_health_attributes_traffic_through_routes(app, make_key):
    row, _ = make_key()
    now = utcnow()
    for outcome in ("done", "done", "upstream_error", "timeout"):
        add_usage(row.id, outcome=outcome, ttft_ms=400)
    (health,) = queries.upstream_health(now)
    assert health.upstream.name == "deepseek" and health.routes == 2
    assert (health.rates.requests, health.rates.errors) == (4, 2)
    assert health.state == "failing" and health.avg_ttft_ms == 400


def test_overview_page_shows_the_numbers_and_local_charts_only(admin, make_key):
    now = _seed(make_key)
    page = admin.get("/admin/").text
    assert "$6.00" in page and "refunded $1.00" in page
    error_rate = queries.overview(now).last_day.error_rate
    assert error_rate > 0 and f"{error_rate * 100:.1f}%" in page
    assert page.count('<svg class="chart-svg') == 3 and "<script>" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from elsewhere


def test_cache_hit_share_of_prompt_tokens_overall_and_per_model(admin, make_key):
    now = utcnow()
    row, _ = make_key()
    for model, prompt, hits, age in (
        ("deepseek-v4-flash", 10_000, 9_000, timedelta(hours=1)),
        ("deepseek-v4-flash", 2_000, 0, timedelta(days=3)),  # no count from the upstream: all misses
        ("deepseek-v4-pro", 3_000, 1_000, timedelta(days=2)),
        ("deepseek-v4-pro", 5_000, 5_000, timedelta(days=31)),  # outside both windows
    ):
        add_usage(row.id, model=model, prompt_tokens=prompt, cached_tokens=hits, created_at=now - age)
    day = {c.model: (c.prompt, c.cache_hit) for c in queries.cache_hits(now - timedelta(hours=24))}
    month = {c.model: (c.prompt, c.cache_hit) for c in queries.cache_hits(now - timedelta(days=30))}
    assert day == {None: (10_000, 9_000), "deepseek-v4-flash": (10_000, 9_000)}
    assert month == {None: (15_000, 10_000), "deepseek-v4-flash": (12_000, 9_000), "deepseek-v4-pro": (3_000, 1_000)}

    page = admin.get("/admin/").text
    rows = dict(re.findall(r'<tr data-model="([^"]*)">(.*?)</tr>', page, re.S))
    assert "90.0%" in rows[""] and "66.7%" in rows[""] and "10,000 / 15,000" in rows[""]
    assert "90.0%" in rows["deepseek-v4-flash"] and "75.0%" in rows["deepseek-v4-flash"]
    assert "33.3%" in rows["deepseek-v4-pro"] and "–" in rows["deepseek-v4-pro"]  # idle for the last day
    flask_babel.refresh()  # the test's app context caches the locale (see test_i18n)
    assert "缓存命中" in admin.get("/admin/?lang=zh").text


@pytest.mark.parametrize(
    ("part", "whole", "text"),
    [
        (9, 10, "90.0%"),
        (1, 3, "33.3%"),
        (2, 3, "66.7%"),
        (1, 2000, "0.1%"),
        (1, 2001, "0.0%"),
        (0, 0, "–"),
        (5, 5, "100.0%"),
    ],
)
def test_a_share_is_shown_to_a_tenth_of_a_percent(part, whole, text):
    assert formatting.share(part, whole) == text
