"""End to end in headless Chromium: log in, create a key, top it up, relay a request with it, and
find that request in the usage log. The ledger runs in-process (embedded mode), so no worker is needed."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright

from tests.admin.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.browser import launch


@pytest.fixture
def app_extra() -> dict[str, Any]:
    return {"CELERY": {"broker_url": "memory://", "task_always_eager": True, "task_ignore_result": True}}


@pytest.fixture
def page() -> Any:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()


def _log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/keys")  # not logged in: sent to the login form, then back here
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Keys")


def _create_key(page: Page) -> str:
    page.click("text=New key")
    page.fill("#tokens", "1000")
    page.fill("#name", "from the browser")
    page.click("button:has-text('Create key')")
    expect(page.locator("h1")).to_have_text("Key created")
    return page.input_value("#new-key")


def test_admin_creates_and_tops_up_a_key_then_sees_its_request_in_the_usage_log(page, live_server, admin_user, fake):
    base = live_server.url
    _log_in(page, base)
    key = _create_key(page)
    assert key.startswith("sk-")
    page.click("text=Open the key")
    page.fill("#tokens", "50000")
    page.click("button:has-text('Add tokens')")
    expect(page.locator(".flash-success")).to_contain_text("Added 50,000 tokens.")
    expect(page.locator(".tile").first).to_contain_text("51,000")

    reply = requests.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hello from the test"}]},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    request_id = reply.headers["x-request-id"]
    billed = reply.json()["usage"]["total_tokens"]

    page.click("text=Usage log")
    deadline = time.monotonic() + 10
    row = page.locator(f"tr[title='{request_id}']")
    while row.count() == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        page.reload()
    expect(row).to_contain_text("deepseek-v4-flash")
    expect(row).to_contain_text("done")
    expect(row).to_contain_text(f"{billed:,}")
    page.screenshot(path="/tmp/admin-e2e-usage.png", full_page=True)


def test_upstreams_page_shows_the_pool_and_an_account_taken_out(page, live_server, admin_user, redis):
    from app.extensions import db
    from app.models import Upstream
    from app.routing import catalog, health

    catalog.set_upstream("deepseek-b", base_url="https://api.deepseek.com", api_key="sk-b-secret-0001")
    catalog.set_upstream("deepseek", max_concurrency=8)
    catalog.set_target("deepseek-v4-flash", "deepseek-b", priority=10, weight=2)
    backup = db.session.execute(db.select(Upstream).filter_by(name="deepseek-b")).scalar_one()
    backup.balance_cents, backup.balance_currency, backup.low_balance_cents = 0, "USD", 500
    db.session.commit()
    health.disable(redis, "rg", backup.id, "Insufficient Balance")
    catalog.mark_disabled(backup.id, "Insufficient Balance")

    _log_in(page, live_server.url)
    expect(page.locator(".upstream-alert")).to_contain_text(
        "Upstream deepseek-b is out of service: Insufficient Balance."
    )
    page.click(".upstream-alert a")
    expect(page.locator("h1")).to_have_text("Upstreams & models")
    pool = page.locator(".pool").first
    expect(pool).to_contain_text("deepseek-b")
    expect(pool.locator("tr", has_text="deepseek-b")).to_contain_text("taken out")
    expect(pool.locator("tr", has_text="deepseek-v4-flash").last).to_contain_text("healthy")
    expect(page.locator("body")).not_to_contain_text("sk-b-secret-0001")
    page.screenshot(path="/tmp/admin-upstreams.png", full_page=True)
