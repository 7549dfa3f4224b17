"""Upstreams and model routes in the admin: secrets stay sealed, tests and balances, route edits."""

from __future__ import annotations

import re

from app import secretbox
from app.extensions import db
from app.models import AuditLog, ModelRoute, Upstream
from app.routing import catalog
from tests.admin.loopback import serve
from tests.conftest import UPSTREAM_SECRET, free_port

NEW_SECRET = "sk-brand-new-upstream-secret-9876"


def _models(client, key):
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    return sorted(m["id"] for m in response.json["data"])


def test_add_upstream_stores_the_key_encrypted_and_never_shows_it(app, admin, fake_server):
    response = admin.post(
        "/admin/upstreams/new",
        {"name": "backup", "base_url": fake_server.base_url + "/", "api_key": NEW_SECRET, "enabled": "y"},
    )
    assert response.status_code == 302
    upstream = db.session.execute(db.select(Upstream).filter_by(name="backup")).scalar_one()
    assert NEW_SECRET not in upstream.api_key_encrypted
    assert secretbox.decrypt(upstream.api_key_encrypted, app.config["SECRET_KEY"]) == NEW_SECRET
    assert upstream.key_hint == "9876" and upstream.base_url == fake_server.base_url
    for page in ("/admin/upstreams", f"/admin/upstreams/{upstream.id}/edit", "/admin/audit"):
        text = admin.get(page).text
        assert NEW_SECRET not in text and UPSTREAM_SECRET not in text, page
    assert "…9876" in admin.get("/admin/upstreams").text
    entry = db.session.execute(db.select(AuditLog).filter_by(action="upstream.create")).scalar_one()
    assert entry.details["key_changed"] is True and NEW_SECRET not in str(entry.details)


def test_editing_without_a_key_keeps_the_stored_key(app, admin):
    upstream = db.session.execute(db.select(Upstream).filter_by(name="deepseek")).scalar_one()
    sealed = upstream.api_key_encrypted
    response = admin.post(
        f"/admin/upstreams/{upstream.id}/edit", {"base_url": "https://api.example.com/v1", "api_key": ""}
    )
    assert response.status_code == 302
    db.session.expire_all()
    upstream = db.session.get(Upstream, upstream.id)
    assert upstream.api_key_encrypted == sealed and upstream.base_url == "https://api.example.com/v1"
    assert upstream.enabled is False  # the box was left unticked


def test_bad_upstream_input_saves_nothing(admin, fake_server):
    bad = admin.post("/admin/upstreams/new", {"name": "Bad Name!", "base_url": "ftp://x", "api_key": "k"})
    assert bad.status_code == 400
    assert "Lower-case letters, digits" in bad.text and "must start with http:// or https://" in bad.text
    duplicate = admin.post("/admin/upstreams/new", {"name": "deepseek", "base_url": fake_server.base_url})
    assert duplicate.status_code == 400 and "exists already" in duplicate.text
    assert db.session.execute(db.select(db.func.count(Upstream.id))).scalar_one() == 1


def test_connection_test_shows_the_deepseek_balance_on_the_pages(admin):
    response = admin.post("/admin/upstreams/1/test", follow_redirects=True)
    assert "deepseek answered in" in response.text and "with 2 models" in response.text
    assert "12.34 USD" in response.text
    assert "12.34 USD" in admin.get("/admin/").text  # the overview keeps the last result
    entry = db.session.execute(db.select(AuditLog).filter_by(action="upstream.test")).scalar_one()
    assert entry.details["ok"] is True


def test_connection_test_reports_a_refused_key_and_a_dead_host(admin):
    with serve({"/models": (401, {"error": {"message": "Authentication Fails"}})}) as base:
        admin.post("/admin/upstreams/1/edit", {"base_url": base, "enabled": "y"})
        refused = admin.post("/admin/upstreams/1/test", follow_redirects=True)
    assert "deepseek failed the test: the upstream refused the API key (HTTP 401)" in refused.text
    admin.post("/admin/upstreams/1/edit", {"base_url": f"http://127.0.0.1:{free_port()}", "enabled": "y"})
    dead = admin.post("/admin/upstreams/1/test", follow_redirects=True)
    assert "deepseek failed the test: cannot reach" in dead.text
    assert "check failed" in admin.get("/admin/").text


def test_new_route_is_served_at_once_with_its_multipliers_and_extra_body(admin, client, api_key):
    response = admin.post(
        "/admin/routes/new",
        {
            "public_id": "roleplay",
            "upstream": "deepseek",
            "upstream_model": "deepseek-v4-flash",
            "prompt_multiplier": "1.25",
            "completion_multiplier": "3",
            "extra_body": '{"thinking": {"type": "disabled"}}',
            "description": "For long chats.",
            "enabled": "y",
        },
    )
    assert response.status_code == 302
    route = db.session.execute(db.select(ModelRoute).filter_by(public_id="roleplay")).scalar_one()
    assert (route.completion_multiplier_e4, route.extra_body, route.description) == (
        30_000,
        {"thinking": {"type": "disabled"}},
        "For long chats.",
    )
    # no cache-hit multiplier given: DeepSeek's hit/miss ratio for Flash (1/50) times the prompt's 1.25
    assert (route.prompt_multiplier_e4, route.cache_hit_multiplier_e4) == (12_500, 250)
    assert "roleplay" in _models(client, api_key)
    edit = admin.get(f"/admin/routes/{route.id}/edit").text
    assert "&#34;thinking&#34;" in edit or "&quot;thinking&quot;" in edit
    assert 'value="1.25"' in edit and 'value="0.025"' in edit and 'value="3"' in edit
    assert "×1.25 / ×0.025 / ×3" in admin.get("/admin/upstreams").text
    assert (
        admin.post(
            f"/admin/routes/{route.id}/edit",
            {
                "upstream": "deepseek",
                "upstream_model": "deepseek-v4-flash",
                "prompt_multiplier": "1",
                "cache_hit_multiplier": "0",
                "completion_multiplier": "0.5",
            },
        ).status_code
        == 302
    )
    assert "roleplay" not in _models(client, api_key)  # saved unticked: disabled
    db.session.refresh(route)
    assert (route.prompt_multiplier_e4, route.cache_hit_multiplier_e4, route.completion_multiplier_e4) == (
        10_000,
        0,
        5_000,
    )


def test_bad_route_input_saves_nothing(admin):
    form = {
        "public_id": "two words",
        "upstream": "nowhere",
        "upstream_model": "",
        "prompt_multiplier": "0",
        "cache_hit_multiplier": "-0.02",
        "completion_multiplier": "x",
        "extra_body": "[1, 2]",
    }
    response = admin.post("/admin/routes/new", form)
    assert response.status_code == 400
    for message in (
        "One word",
        "Not a valid choice.",
        "Enter the upstream",
        "Enter a number from 0.0001 to 1,000 with at most 4 decimals",
        "Enter a number from 0 to 1,000 with at most 4 decimals",
        "Must be a JSON object",
    ):
        assert message in response.text, message
    assert response.text.count("Enter a number from 0.0001 to 1,000") == 2  # prompt 0 and completion "x"
    for wrong in ("0.00001", "NaN", "1e9", "-1", "1,5"):
        refused = admin.post(
            "/admin/routes/new",
            {
                **form,
                "public_id": "ok-id",
                "upstream": "deepseek",
                "upstream_model": "m",
                "extra_body": "",
                "prompt_multiplier": wrong,
                "cache_hit_multiplier": "0.02",
                "completion_multiplier": "1",
            },
        )
        assert refused.status_code == 400 and "at most 4 decimals" in refused.text, wrong
    broken = admin.post(
        "/admin/routes/new",
        {
            **form,
            "public_id": "ok-id",
            "upstream": "deepseek",
            "upstream_model": "m",
            "prompt_multiplier": "1",
            "cache_hit_multiplier": "",
            "completion_multiplier": "1",
            "extra_body": "{oops",
        },
    )
    assert broken.status_code == 400 and "Not valid JSON." in broken.text
    duplicate = admin.post(
        "/admin/routes/new",
        {
            **form,
            "public_id": "deepseek-v4-pro",
            "upstream": "deepseek",
            "upstream_model": "m",
            "prompt_multiplier": "1",
            "cache_hit_multiplier": "",
            "completion_multiplier": "1",
            "extra_body": "",
        },
    )
    assert duplicate.status_code == 400 and "routed already" in duplicate.text
    assert db.session.execute(db.select(db.func.count(ModelRoute.id))).scalar_one() == 2


def test_every_admin_page_shows_a_banner_while_an_upstream_is_out_or_low(admin, redis):
    assert "upstream-alert" not in admin.get("/admin/keys").text
    upstream = db.session.execute(db.select(Upstream).filter_by(name="deepseek")).scalar_one()
    catalog.mark_disabled(upstream.id, "Insufficient Balance")
    for page in ("/admin/", "/admin/keys", "/admin/orders", "/admin/usage"):
        (banner,) = re.findall(r'class="flash flash-error upstream-alert".*?\n    </div>', admin.get(page).text, re.S)
        assert "Upstream deepseek is out of service: Insufficient Balance." in banner, page
        assert '<a href="/admin/upstreams">' in banner, page

    catalog.set_upstream("deepseek", enabled=True)  # put back by hand
    db.session.expire_all()
    upstream = db.session.get(Upstream, upstream.id)
    upstream.balance_cents, upstream.balance_currency, upstream.low_balance_cents = 499, "USD", 500
    db.session.commit()
    assert "Upstream deepseek is low on balance: 4.99 USD left, threshold 5.00 USD." in admin.get("/admin/keys").text
    upstream.balance_cents = 500
    db.session.commit()
    assert "upstream-alert" not in admin.get("/admin/keys").text
    catalog.mark_disabled(upstream.id, "Authentication Fails")
    catalog.set_upstream("deepseek", enabled=False)  # switched off on purpose: nothing to warn about
    assert "upstream-alert" not in admin.get("/admin/keys").text


def test_upstream_form_sets_the_pool_limits_and_the_low_balance_threshold(admin):
    upstream = db.session.execute(db.select(Upstream).filter_by(name="deepseek")).scalar_one()
    form = {"base_url": upstream.base_url, "enabled": "y", "max_concurrency": "7", "low_balance": "5.50"}
    assert admin.post(f"/admin/upstreams/{upstream.id}/edit", form).status_code == 302
    db.session.expire_all()
    upstream = db.session.get(Upstream, upstream.id)
    assert (upstream.max_concurrency, upstream.low_balance_cents) == (7, 550)
    edit = admin.get(f"/admin/upstreams/{upstream.id}/edit").text
    assert 'value="7"' in edit and 'value="5.50"' in edit

    upstream.balance_cents, upstream.balance_currency, upstream.balance_checked_at = 1234, "USD", upstream.created_at
    db.session.commit()
    card = admin.get("/admin/upstreams").text
    assert "12.34 USD" in card and "warns below 5.50 USD" in card and "0 of at most 7" in card

    cleared = {"base_url": upstream.base_url, "enabled": "y", "max_concurrency": "", "low_balance": ""}
    assert admin.post(f"/admin/upstreams/{upstream.id}/edit", cleared).status_code == 302
    db.session.expire_all()
    upstream = db.session.get(Upstream, upstream.id)
    assert (upstream.max_concurrency, upstream.low_balance_cents) == (None, None)  # no limit, no warning
    assert "no limit (not counted)" in admin.get("/admin/upstreams").text


def test_bad_pool_limits_are_refused_readably_and_keep_what_was_typed(admin):
    upstream = db.session.execute(db.select(Upstream).filter_by(name="deepseek")).scalar_one()
    base_url = upstream.base_url
    for concurrency, balance, messages in (
        ("-1", "-5", ["Enter a whole number from 0 to 100,000.", "Enter an amount like 5 or 12.50"]),
        ("many", "1.234", ["Not a valid integer value.", "at most two decimals"]),
        ("3", "five", ["Enter an amount like 5 or 12.50"]),
    ):
        form = {"base_url": "https://kept.example", "enabled": "y", "max_concurrency": concurrency}
        form["low_balance"] = balance
        response = admin.post(f"/admin/upstreams/{upstream.id}/edit", form)
        assert response.status_code == 400
        for message in messages:
            assert message in response.text, message
        for typed in ("https://kept.example", concurrency, balance):
            assert f'value="{typed}"' in response.text, typed
    db.session.expire_all()
    upstream = db.session.get(Upstream, upstream.id)
    assert (upstream.max_concurrency, upstream.low_balance_cents, upstream.base_url) == (None, None, base_url)
