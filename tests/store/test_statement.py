"""The key's statement: its sums equal the ledger for a key used every way a key is used (streams,
non-streams, a client that hangs up, an upstream failure, a refund), on the page, in the CSV and in
GET /api/key/usage; and the arithmetic shown for each request is the one that charged it."""

from __future__ import annotations

import csv
import io
import math
import re
from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest

from app.billing import key_statement, pricing, reconcile
from app.billing.key_statement import Charge, DayTotal, Multipliers
from app.billing.pricing import TokenCounts
from app.extensions import db
from app.models import ModelRoute, UsageRecord
from app.models.multiplier import parse_multiplier
from app.routing import catalog
from app.store.statement import chart
from tests.api.helpers import chat_body, open_raw_stream
from tests.conftest import wait_until
from tests.shop import csrf_token, follow_paypal_return, reload, start_purchase


def _m(prompt: str, hit: str, completion: str) -> Multipliers:
    return Multipliers(parse_multiplier(prompt), parse_multiplier(hit, allow_zero=True), parse_multiplier(completion))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("prompt", "hit", "completion", "billed", "multipliers", "formula", "adds_up"),
    [
        (1200, 1000, 350, 1550, _m("1", "1", "1"), "200 × 1 + 1,000 × 1 + 350 × 1 = 1,550", True),
        (1200, 1000, 350, 920, _m("1", "0.02", "2"), "200 × 1 + 1,000 × 0.02 + 350 × 2 = 920", True),
        (1200, 0, 350, 3100, _m("2", "2", "2"), "1,200 × 2 + 0 × 2 + 350 × 2 = 3,100", True),
        (10, 0, 0, 10, _m("1", "1", "3"), "10 × 1 + 0 × 1 + 0 × 3 = 10", True),
        (1200, 0, 350, 900, _m("1", "1", "1"), "1,200 × 1 + 0 × 1 + 350 × 1 = 1,550", False),  # cut at its hold
        # the sum is exact, then rounded up once
        (134, 33, 10, 112, _m("1", "0.02", "1"), "101 × 1 + 33 × 0.02 + 10 × 1 = 111.66 → 112", True),
        (1, 1, 0, 1, _m("1", "0.0001", "1"), "0 × 1 + 1 × 0.0001 + 0 × 1 = 0.0001 → 1", True),
        (
            10_000,
            9_000,
            500,
            3_601,
            _m("2", "0.0667", "2"),
            "1,000 × 2 + 9,000 × 0.0667 + 500 × 2 = 3,600.3 → 3,601",
            True,
        ),
        (0, 0, 0, 0, _m("1", "0.02", "1"), "0 × 1 + 0 × 0.02 + 0 × 1 = 0", True),
    ],
)
def test_the_arithmetic_of_a_charge(prompt, hit, completion, billed, multipliers, formula, adds_up):
    charge = Charge(prompt, hit, completion, 0, billed, multipliers)
    assert charge.formula() == formula and charge.adds_up is adds_up
    assert charge.cache_miss == prompt - hit
    assert _formula_total(formula) == charge.expected


@pytest.mark.unit
@pytest.mark.parametrize(
    ("asked", "days"),
    [("7", 7), (None, 30), ("", 30), ("0", 1), ("-5", 1), ("1000", 90), ("7.5", 30), ("seven", 30), ([], 30)],
)
def test_the_days_asked_for(asked, days):
    assert key_statement.days_window(asked) == days


@pytest.mark.unit
def test_the_chart_has_every_day_and_scales_to_the_busiest():
    today = date(2026, 12, 1)
    totals = [
        DayTotal(date(2026, 11, 29), "deepseek-v4-flash", 3, 300),
        DayTotal(date(2026, 11, 29), "deepseek-v4-pro", 1, 100),
        DayTotal(date(2026, 12, 1), "deepseek-v4-flash", 1, 100),
        DayTotal(date(2026, 10, 1), "deepseek-v4-flash", 1, 999_999),  # outside the window: not drawn
    ]
    days = chart(totals[:3], 4, today)
    assert [d.day.day for d in days] == [28, 29, 30, 1]
    assert [d.total for d in days] == [0, 400, 0, 100]
    assert [(s.model, s.percent) for s in days[1].segments] == [("deepseek-v4-flash", 75.0), ("deepseek-v4-pro", 25.0)]
    assert days[3].segments[0].percent == 25.0 and days[0].segments == ()
    assert [d.total for d in chart([], 3, today)] == [0, 0, 0]


def _open_statement(client, key):
    response = client.post("/balance/statement", data={"csrf_token": csrf_token(client, "/balance"), "key": key})
    assert response.status_code == 303
    return client.get(response.headers["Location"])


def test_the_statement_adds_up_to_the_ledger_for_every_way_a_key_is_used(
    app, client, live_server, paypal, plan, fake, redis
):
    order = start_purchase(client, plan, email="statement@example.com")
    page = follow_paypal_return(client, paypal, order).get_data(as_text=True)
    key = re.search(r"sk-gateway-\w+", page).group(0)
    key_id = reload(order).api_key_id
    # Fractional multipliers: the pro route's seeded 2 / 0.0667 (cache hits), and 2.5 for completion.
    pro_route = db.update(ModelRoute).filter_by(public_id="deepseek-v4-pro")
    db.session.execute(pro_route.values(completion_multiplier_e4=25_000))
    db.session.commit()
    auth = {"Authorization": f"Bearer {key}"}

    assert client.post("/v1/chat/completions", json=chat_body(content="one"), headers=auth).status_code == 200
    pro = chat_body(content="two " * 400, model="deepseek-v4-pro", fake={"reasoning": 4, "cache_hit_tokens": 300})
    assert client.post("/v1/chat/completions", json=pro, headers=auth).status_code == 200
    assert b"[DONE]" in client.post("/v1/chat/completions", json=chat_body(stream=True), headers=auth).get_data()
    fake.script(status=500)
    assert client.post("/v1/chat/completions", json=chat_body(), headers=auth).status_code == 502
    sock, _ = open_raw_stream(  # a client that hangs up mid-answer
        live_server.port, key, chat_body(stream=True, fake={"tokens": 400, "delay": 0.02}), until=b"content"
    )
    sock.close()
    prefix = app.config["BILLING_REDIS_PREFIX"]

    def drained() -> int:
        reconcile.drain(redis, prefix, batch_size=100)
        db.session.expire_all()
        return db.session.execute(db.select(UsageRecord).filter_by(api_key_id=key_id)).scalars().all()

    wait_until(lambda: len(drained()) == 5, timeout=20)
    refund = paypal.refund(reload(order).paypal_capture_id, amount="0.50")
    assert paypal.send_webhook(f"{live_server.url}/paypal/webhook", paypal.event("PAYMENT.CAPTURE.REFUNDED", refund)).ok
    from app.models import WebhookEvent
    from app.orders import webhooks

    for event in db.session.execute(db.select(WebhookEvent)).scalars().all():
        webhooks.process_event(event.id)
    records = drained()
    ledger_billed = sum(r.billed_tokens for r in records)
    outcomes = sorted(r.outcome for r in records)
    assert outcomes == ["client_closed", "done", "done", "done", "upstream_error"]

    # the page: every request, its arithmetic, and the quota changes
    html = _open_statement(client, key).get_data(as_text=True)
    assert key not in html  # the key itself is never shown back
    assert html.count("<tr>") - 2 == 5 + 2  # header rows aside: five requests, a purchase and a refund
    assert "Stopped by the client" in html and "Upstream error" in html and "Completed" in html
    pro_record = next(r for r in records if r.model == "deepseek-v4-pro")
    assert pro_record.reasoning_tokens == 4
    assert pro_record.cached_tokens == 300
    miss, completion = pro_record.prompt_tokens - 300, pro_record.completion_tokens
    exact = miss * 2 + 300 * Fraction("0.0667") + completion * Fraction("2.5")
    assert pro_record.billed_tokens == math.ceil(exact) and exact != math.ceil(exact)
    expected = (
        f"{miss:,} × 2 + 300 × 0.0667 + {completion:,} × 2.5 = {Decimal(exact.numerator) / exact.denominator:,} "
        f"→ {pro_record.billed_tokens:,}"
    )
    assert html.count(expected) == 1
    assert "+2,000,000" in html and "Refund" in html

    # the CSV: the same requests and changes; its charges add up to the ledger
    rows = list(csv.DictReader(io.StringIO(client.get("/balance/statement.csv").get_data(as_text=True))))
    requests_ = [r for r in rows if r["kind"] == "request"]
    assert len(requests_) == 5 and sum(int(r["billed_tokens"]) for r in requests_) == ledger_billed
    (pro_csv,) = [r for r in requests_ if r["model"] == "deepseek-v4-pro"]
    assert (pro_csv["cache_hit_tokens"], pro_csv["cache_miss_tokens"], pro_csv["formula"]) == (
        "300",
        str(miss),
        expected,
    )
    changes = {r["kind"]: int(r["quota_change"]) for r in rows if r["kind"] != "request"}
    assert changes["purchase"] == 2_000_000 and changes["refund"] < 0
    assert reload(order).tokens_revoked == -changes["refund"]

    # the JSON: daily totals equal the ledger too
    usage = client.get("/api/key/usage?days=7", headers=auth).get_json()
    assert usage["days"] == 7 and len(usage["requests"]) == 5
    assert sum(d["billed_tokens"] for d in usage["daily"]) == ledger_billed
    assert sum(d["requests"] for d in usage["daily"]) == 5
    done = [r for r in usage["requests"] if r["outcome"] == "done"]
    assert all(r["formula"] and r["billed_tokens"] == _formula_total(r["formula"]) for r in done)
    (pro_json,) = [r for r in done if r["model"] == "deepseek-v4-pro"]
    assert (pro_json["prompt_cache_hit_tokens"], pro_json["prompt_cache_miss_tokens"]) == (300, miss)
    assert (pro_json["prompt_multiplier"], pro_json["cache_hit_multiplier"], pro_json["completion_multiplier"]) == (
        "2",
        "0.0667",
        "2.5",
    )
    assert Decimal(pro_json["billed_exact"]) == Decimal(exact.numerator) / exact.denominator
    assert [c["kind"] for c in usage["quota_changes"]] == ["purchase", "refund"]

    # forgetting the key ends the page's access to it
    client.post("/balance/forget", data={"csrf_token": csrf_token(client, "/balance")})
    assert client.get("/balance/statement").status_code == 302
    assert client.get("/balance/statement.csv").status_code == 302


def _formula_total(formula: str) -> int:
    """The whole tokens a formula ends with: `... = 920` or `... = 110.66 → 111`."""
    return int(re.split("[=→]", formula)[-1].replace(",", ""))


def test_a_wrong_key_gets_a_readable_error_and_the_api_a_json_401(client):
    response = client.post(
        "/balance/statement", data={"csrf_token": csrf_token(client, "/balance"), "key": "sk-gateway-nope"}
    )
    assert response.status_code == 404 and "We could not find that key" in response.get_data(as_text=True)
    assert client.get("/balance/statement").status_code == 302  # nothing remembered
    api = client.get("/api/key/usage", headers={"Authorization": "Bearer sk-gateway-nope"})
    assert api.status_code == 401 and api.get_json()["error"]["code"] == "invalid_api_key"


def test_statement_in_chinese(client, make_key):
    _, key = make_key(1_000)
    _open_statement(client, key)
    html = client.get("/balance/statement?lang=zh").get_data(as_text=True)
    assert "账单" in html and "每天消耗的 tokens" in html and "下载 CSV" in html


def test_a_redeemed_gift_code_is_in_the_statement(client, make_key):
    from app.giftcodes import service
    from app.models import Plan

    plan = Plan(name="Gift 3M", tokens=3_000_000, price_cents=150, active=True)
    db.session.add(plan)
    db.session.commit()
    (code,) = service.generate(plan.id, 1, actor=service.Actor("cli")).codes
    row, key = make_key(500)
    service.redeem(code, client_ip="192.0.2.10", key_text=key)

    (change,) = key_statement.quota_changes(row.id)
    assert (change.kind, change.tokens, change.reference) == ("gift_code", 3_000_000, code[:7])
    html = _open_statement(client, key).get_data(as_text=True)
    assert "Gift code" in html and "+3,000,000" in html and code not in html


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_worked_example_is_charged_as_a_request_is(client, make_key, lang):
    """The explanation's example, for every model and in both languages, shows the bill that
    pricing.billed_tokens gives for its counts and the formula the statement shows for a request."""
    catalog.set_route("deepseek-v4-flash", completion_multiplier=parse_multiplier("1.5"))
    _, key = make_key(1_000)
    _open_statement(client, key)
    html = client.get(f"/balance/statement?lang={lang}").get_data(as_text=True)
    shown = dict(re.findall(r'<p class="example" data-model="([^"]+)">(.*?)</p>', html, re.S))
    multipliers = key_statement.current_multipliers()
    assert set(shown) == set(multipliers) == {"deepseek-v4-flash", "deepseek-v4-pro"}
    counts = TokenCounts(prompt=10_000, cache_hit=9_000, completion=500)
    for model, m in multipliers.items():
        billed = pricing.billed_tokens(counts, m)
        text = shown[model].replace("&amp;", "&")
        assert f"{billed:,}" in text
        assert Charge(10_000, 9_000, 500, 0, billed, m).formula() in text
    # flash: 1,000 misses x 1 + 9,000 hits x 0.02 + 500 x 1.5 = 1,930; pro: 2,000 + 600.3 + 1,000 -> 3,601
    assert "1,000 × 1 + 9,000 × 0.02 + 500 × 1.5 = 1,930" in shown["deepseek-v4-flash"]
    assert "1,000 × 2 + 9,000 × 0.0667 + 500 × 2 = 3,600.3 → 3,601" in shown["deepseek-v4-pro"]
    if lang == "zh":
        assert "缓存命中" in shown["deepseek-v4-pro"]


def test_a_request_keeps_the_arithmetic_it_was_billed_by_after_the_prices_change(app, client, make_key, fake, redis):
    """The record keeps its multipliers: a statement read after the operator changed the model's
    prices still shows how the old request's charge came about, and the new one's."""
    row, key = make_key(1_000_000)
    auth = {"Authorization": f"Bearer {key}"}
    body = chat_body(content="long chat " * 200, fake={"cache_hit_tokens": 200})
    assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
    catalog.set_route("deepseek-v4-flash", prompt_multiplier=parse_multiplier("3"), cache_hit_multiplier=5_000)
    assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
    reconcile.drain(redis, app.config["BILLING_REDIS_PREFIX"], batch_size=100)
    db.session.expire_all()
    old, new = db.session.execute(db.select(UsageRecord).order_by(UsageRecord.created_at)).scalars().all()
    assert (old.prompt_multiplier_e4, old.cache_hit_multiplier_e4, old.completion_multiplier_e4) == (
        10_000,
        200,
        10_000,
    )
    assert (new.prompt_multiplier_e4, new.cache_hit_multiplier_e4) == (30_000, 5_000)
    assert new.billed_tokens > old.billed_tokens

    usage = client.get("/api/key/usage?days=1", headers=auth).get_json()
    by_charge = {r["billed_tokens"]: r for r in usage["requests"]}
    assert by_charge[old.billed_tokens]["formula"] and by_charge[new.billed_tokens]["formula"]
    assert by_charge[old.billed_tokens]["cache_hit_multiplier"] == "0.02"
    assert by_charge[new.billed_tokens]["cache_hit_multiplier"] == "0.5"
    for record in (old, new):
        assert _formula_total(by_charge[record.billed_tokens]["formula"]) == record.billed_tokens
    html = _open_statement(client, key).get_data(as_text=True)
    assert "charged at the prices of the time" not in html


def test_a_record_from_before_multipliers_were_kept_is_worked_with_todays(app, client, make_key):
    row, key = make_key(1_000_000)
    db.session.add(
        UsageRecord(
            request_id="before-0010",
            api_key_id=row.id,
            model="deepseek-v4-flash",
            prompt_tokens=1_000,
            cached_tokens=900,
            completion_tokens=10,
            billed_tokens=100 + 18 + 10,  # 100 misses x 1 + 900 hits x 0.02 + 10 x 1
            outcome="done",
        )
    )
    db.session.commit()
    usage = client.get("/api/key/usage?days=1", headers={"Authorization": f"Bearer {key}"}).get_json()
    (line,) = usage["requests"]
    assert line["formula"] == "100 × 1 + 900 × 0.02 + 10 × 1 = 128"
