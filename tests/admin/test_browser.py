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
