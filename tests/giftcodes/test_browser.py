"""/redeem in headless Chromium on a phone, English and Chinese: a key, then a top-up onto it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page

from app.giftcodes import service
from tests.giftcodes.test_service import OPERATOR, make_plan

SHOTS = Path(os.environ.get("SCREENSHOT_DIR", tempfile.gettempdir()))
PHONE = {"width": 390, "height": 844}


def _fits_the_phone(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_buyer_redeems_a_code_for_a_key_then_tops_it_up_on_a_phone(app: Any, live_server: Any, browser: Browser):
    first, second = service.generate(make_plan().id, 2, actor=OPERATOR).codes
    page = browser.new_page(viewport=PHONE)
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)

    page.goto(f"{live_server.url}/?lang=en")
    page.get_by_role("link", name="Redeem code").click()
    assert page.get_by_role("heading", name="Redeem a gift code").is_visible()
    assert page.get_by_label("Your email (optional)").is_visible() and not page.locator("#key").is_visible()
    _fits_the_phone(page)
    page.screenshot(path=str(SHOTS / "redeem-en.png"), full_page=True)
    page.get_by_label("Gift code").fill(first.lower().replace("-", " "))  # as a buyer might type it
    page.get_by_role("button", name="Redeem").click()

    assert page.get_by_role("heading", name="Code redeemed. Here is your new key.").is_visible()
    key = page.locator("#api-key").inner_text().strip()
    assert key.startswith("sk-gateway-") and "3,000,000" in page.content()
    _fits_the_phone(page)
    page.screenshot(path=str(SHOTS / "redeem-key-en.png"), full_page=True)

    page.goto(f"{live_server.url}/redeem")
    page.get_by_label("Gift code").fill(first)
    page.get_by_role("button", name="Redeem").click()
    assert page.get_by_role("alert").inner_text().startswith("That gift code has already been redeemed.")
    assert key not in page.content()
    page.screenshot(path=str(SHOTS / "redeem-used-en.png"), full_page=True)

    page.get_by_label("Gift code").fill(second)
    page.get_by_text("Tokens on a key I have").click()
    assert page.locator("#key").is_visible() and not page.locator("#email").is_visible()
    page.get_by_label("Your API key").fill(key)
    page.get_by_role("button", name="Redeem").click()
    assert page.get_by_role("heading", name="Code redeemed. Tokens added.").is_visible()
    assert "It has 6,000,000 tokens left." in page.content() and key not in page.content()
    assert page.url.removeprefix(live_server.url).split("?")[0] == "/redeem"  # the key went in a POST body only
    page.screenshot(path=str(SHOTS / "redeem-topup-en.png"), full_page=True)
    assert blocked == []
    page.close()


def test_the_chinese_page_on_a_phone(app: Any, live_server: Any, browser: Browser):
    (code,) = service.generate(make_plan().id, 1, actor=OPERATOR).codes
    page = browser.new_page(viewport=PHONE)
    page.goto(f"{live_server.url}/redeem?lang=zh")
    assert page.get_by_role("heading", name="兑换礼品码").is_visible()
    assert "兑换码" in page.locator("nav").inner_text()
    _fits_the_phone(page)
    page.screenshot(path=str(SHOTS / "redeem-zh.png"), full_page=True)
    page.get_by_label("礼品码").fill(code)
    page.get_by_role("button", name="兑换", exact=True).click()
    assert page.get_by_role("heading", name="兑换成功。这是你的新密钥。").is_visible()
    assert "请立即复制：本页面只显示一次。" in page.content()
    _fits_the_phone(page)
    page.screenshot(path=str(SHOTS / "redeem-key-zh.png"), full_page=True)
    page.close()
