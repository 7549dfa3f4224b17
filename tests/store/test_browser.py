"""End to end in headless Chromium: pricing -> PayPal -> key -> a chat answer through the relay."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from playwright.sync_api import Browser, sync_playwright

from app.billing import reconcile
from app.store import status
from tests.browser import launch
from tests.smtp_sink import text_of

SHOTS = Path(os.environ.get("SCREENSHOT_DIR", tempfile.gettempdir()))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


def test_buyer_goes_from_pricing_to_a_working_key(
    app: Any, live_server: Any, browser: Browser, paypal: Any, plan: Any, fake: Any, store_worker: Any, mail: Any
) -> None:
    app.config["PUBLIC_BASE_URL"] = None  # PayPal must send the buyer back to the address they used
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    blocked: list[str] = []
    page.on(
        "console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text else None
    )
    page.goto(f"{live_server.url}/")
    page.get_by_role("link", name="Buy", exact=True).click()
    page.get_by_label("Your email").fill("browser@example.com")
    page.get_by_role("button", name="Pay $1 with PayPal").click()

    assert page.url.startswith(f"{paypal.base_url}/checkoutnow")  # the CSP's form-action lets checkout leave
    page.get_by_role("button", name="Pay now").click()

    page.wait_for_url(f"{live_server.url}/order/*")
    assert page.get_by_role("heading", name="Payment received. Here is your key.").is_visible()
    key = page.locator("#api-key").inner_text().strip()
    assert key.startswith("sk-gateway-")
    assert f"{live_server.url}/v1" in page.content()

    client = OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model="deepseek-v4-flash", messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.startswith("Hello there")

    page.reload()
    assert key not in page.content()  # shown once
    assert key in text_of(mail.wait_for(1)[0])
    assert blocked == []  # nothing on the way was refused by the pages' own CSP
    page.close()


def test_status_page_reads_on_a_phone_in_both_languages(
    app: Any, live_server: Any, browser: Browser, make_key: Any, fake: Any
) -> None:
    _, key = make_key(1_000_000)
    client = OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0)
    for _ in range(5):
        client.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "Hi"}])
    with app.app_context():
        reconcile.drain_outbox()
    status.forget()
    page = browser.new_page(viewport={"width": 390, "height": 844})
    for lang, heading in (("en", "Service status"), ("zh", "服务状态")):
        page.goto(f"{live_server.url}/status?lang={lang}")
        assert page.get_by_role("heading", name=heading).is_visible()
        assert page.locator(".state.up").count() == 1  # five answers: deepseek-v4-flash is up
        # the table scrolls inside its box; the page itself never scrolls sideways on a phone
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(SHOTS / f"status-{lang}.png"), full_page=True)
    page.close()


def test_the_statement_reads_on_a_phone(app: Any, live_server: Any, browser: Browser, make_key: Any, fake: Any) -> None:
    _, key = make_key(1_000_000)
    client = OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0)
    for model in ("deepseek-v4-flash", "deepseek-v4-pro", "deepseek-v4-flash"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    with app.app_context():
        reconcile.drain_outbox()
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{live_server.url}/balance")
    page.get_by_label("Your API key").fill(key)
    page.get_by_role("button", name="Check").click()
    page.wait_for_url(f"{live_server.url}/balance/statement")
    assert page.get_by_role("heading", name="How a request is charged").is_visible()
    assert page.locator("table.statement tbody tr").count() == 3
    assert page.locator(".bar .seg").count() >= 1  # today's bar, in two colours
    assert key not in page.content()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # the table scrolls in its box
    page.screenshot(path=str(SHOTS / "statement-en.png"), full_page=True)
    page.close()


def test_the_low_balance_email_is_turned_on_from_a_phone_in_chinese(
    app: Any, live_server: Any, browser: Browser, make_key: Any
) -> None:
    _, key = make_key(1_000_000, email="buyer@example.com")
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{live_server.url}/balance?lang=zh")
    page.get_by_label("你的 API 密钥").fill(key)
    page.get_by_role("button", name="查询").click()
    page.wait_for_url(f"{live_server.url}/balance/statement")
    page.get_by_label("这个密钥剩余 tokens 不足 10% 时给我发邮件，附上充值链接").check()
    page.get_by_role("button", name="保存").click()
    page.wait_for_url(f"{live_server.url}/balance/statement?saved=1#low-balance")
    assert page.get_by_text("已保存。").is_visible()
    assert page.get_by_text(
        "已开启：这个密钥剩余 tokens 不足 10% 时，我们会给 b***@example.com 发一封邮件"
    ).is_visible()
    assert key not in page.content() and key not in page.url
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SHOTS / "low-balance-zh.png"), full_page=True)
    page.close()
