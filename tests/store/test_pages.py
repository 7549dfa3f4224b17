"""The storefront pages: pricing from the plans table, the guide, balance, languages."""

from __future__ import annotations

from app.extensions import db
from app.models import Plan, UsageRecord
from tests.shop import csrf_token


def test_pricing_lists_active_plans_from_the_database(client, plan):
    db.session.add(Plan(name="Hidden", tokens=1, price_cents=1, active=False))
    db.session.add(Plan(name="10M tokens", tokens=10_000_000, price_cents=450, sort_order=20))
    db.session.commit()
    page = client.get("/").get_data(as_text=True)
    assert "2M tokens" in page and "$1" in page and f'href="/buy/{plan.id}"' in page
    assert "10M tokens" in page and "$4.50" in page
    assert "Hidden" not in page
    assert "deepseek-v4-flash" in page and "deepseek-v4-pro" in page and "Each token counts 2×" in page


def test_language_switch_sets_a_cookie_and_translates(client, plan):
    english = client.get("/").get_data(as_text=True)
    assert 'lang="en"' in english and "?lang=zh" in english
    chinese = client.get("/?lang=zh")
    assert "lang=zh" in chinese.headers["Set-Cookie"]
    assert "套餐" in chinese.get_data(as_text=True) and "200 万 tokens" in chinese.get_data(as_text=True)
    assert "设置指南" in client.get("/guide").get_data(as_text=True)  # the cookie keeps it
    assert "Setup guide" in client.get("/guide?lang=en").get_data(as_text=True)


def test_accept_language_picks_chinese_for_a_first_visit(client, plan):
    page = client.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).get_data(as_text=True)
    assert 'lang="zh-CN"' in page


def test_guide_has_the_settings_and_one_entry_per_error(client):
    page = client.get("/guide").get_data(as_text=True)
    assert "<code>http://testserver/v1</code>" in page
    for anchor in ("error-401", "error-404", "error-402", "error-429", "error-5xx"):
        assert f'id="{anchor}"' in page
    assert "curl http://testserver/v1/chat/completions" in page
    assert 'OpenAI(base_url="http://testserver/v1"' in page
    assert "deepseek-v4-flash" in page and "Streaming" in page


def test_balance_shows_what_is_left_and_recent_usage_without_echoing_the_key(client, make_key):
    row, key = make_key(tokens=2_000_000, rpm=20)
    row.tokens_used = 1_234
    db.session.add(
        UsageRecord(
            request_id="r1",
            api_key_id=row.id,
            model="deepseek-v4-pro",
            prompt_tokens=400,
            completion_tokens=217,
            billed_tokens=1_234,
            outcome="done",
        )
    )
    db.session.commit()
    response = client.post("/balance", data={"csrf_token": csrf_token(client, "/balance"), "key": f" {key} "})
    page = response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    assert key not in page and row.prefix in page
    assert "1,998,766" in page and "deepseek-v4-pro" in page and ">20<" in page


def test_balance_for_an_unknown_key_says_so(client):
    token = csrf_token(client, "/balance")
    response = client.post("/balance", data={"csrf_token": token, "key": "sk-gateway-" + "x" * 40})
    assert response.status_code == 404 and "could not find that key" in response.get_data(as_text=True)


def test_topup_form_refuses_an_unknown_or_revoked_key_without_echoing_it(client, plan, make_key, paypal):
    row, key = make_key(tokens=10)
    row.status = "revoked"
    db.session.commit()
    token = csrf_token(client, "/topup")
    form = {"csrf_token": token, "kind": "topup", "plan_id": plan.id, "email": "a@example.com"}
    revoked = client.post("/checkout", data={**form, "key": key}).get_data(as_text=True)
    assert "has been revoked" in revoked and key not in revoked
    unknown = client.post("/checkout", data={**form, "key": "sk-gateway-nope"}).get_data(as_text=True)
    assert "could not find that key" in unknown
    assert paypal.calls("/v2/checkout/orders") == []


def test_forms_need_the_csrf_token(client, plan):
    assert client.post("/checkout", data={"plan_id": plan.id, "email": "a@example.com"}).status_code == 400


def test_plans_seed_command_is_idempotent(app, runner):
    assert "Added 1 plan(s)." in runner.invoke(args=["plans", "seed"]).output
    assert "already present" in runner.invoke(args=["plans", "seed"]).output
    assert "2M tokens" in runner.invoke(args=["plans", "list"]).output
    assert db.session.execute(db.select(db.func.count(Plan.id))).scalar_one() == 1


def test_store_task_names_are_registered_with_the_worker(app):
    import workers.tasks  # noqa: F401
    from app import jobs

    registered = set(app.extensions["celery"].tasks)
    assert {jobs.PAYPAL_WEBHOOK, jobs.PAYPAL_RECONCILE, jobs.EMAIL_ORDER} <= registered
    assert {jobs.EMAIL_LOST_KEY_LINK, jobs.EMAIL_REPLACEMENT_KEY} <= registered


def test_store_pages_send_the_same_protective_headers_as_the_admin(app, client, plan):
    app.config["PAYPAL_API_BASE"] = "http://127.0.0.1:9999"
    for path in ("/", "/guide", f"/buy/{plan.id}", "/lost-key", "/balance"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, path
        # checkout answers a form post with a redirect to PayPal; everything else posts here
        assert "form-action 'self' https://www.paypal.com https://www.sandbox.paypal.com http://127.0.0.1:9999" in csp
        assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in headers  # not in development: it would stick to http://127.0.0.1
