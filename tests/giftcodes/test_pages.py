"""/redeem in English and Chinese: a key shown once, tokens on a pasted key, clear refusals."""

from __future__ import annotations

from datetime import timedelta

import flask_babel
import pytest

from app.extensions import db
from app.giftcodes import service, throttle
from app.models import ApiKey, utcnow
from app.models.gift_code import GiftCode
from tests.giftcodes.test_service import OPERATOR, counts, make_codes, make_plan
from tests.orders.racing import KEY
from tests.shop import csrf_token


def post(client, code: str, lang: str = "en", **fields):
    flask_babel.refresh()  # the test keeps one app context: forget the last request's language
    form = {"csrf_token": csrf_token(client, "/redeem"), "code": code, "kind": "new", **fields}
    return client.post(f"/redeem?lang={lang}", data=form)


def test_the_page_is_in_the_menu_and_in_both_languages(client):
    english = client.get("/redeem?lang=en")
    assert english.status_code == 200 and english.headers["Cache-Control"] == "no-store"
    assert 'href="/redeem"' in client.get("/").text and "Redeem code" in english.text
    assert 'name="key" type="password"' in english.text  # a pasted key is posted, never put in a URL
    flask_babel.refresh()
    chinese = client.get("/redeem?lang=zh").text
    assert "兑换礼品码" in chinese and "一个新密钥" in chinese and "充值到我已有的密钥" in chinese


def test_a_code_becomes_a_key_shown_once(client):
    (code,) = make_codes(make_plan())
    page = post(client, code.lower())
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    key = KEY.search(page.text).group(0)
    assert "Code redeemed. Here is your new key." in page.text and "3,000,000" in page.text
    assert "this page is the only copy" in page.text
    again = post(client, code)  # reload: the browser posts the form again
    assert again.status_code == 410 and key not in again.text
    assert "already been redeemed" in again.text


def test_chinese_page_for_a_new_key_and_for_a_top_up(client, make_key):
    first, second = make_codes(make_plan(), 2)
    new = post(client, first, "zh", email="friend@example.com")
    assert "兑换成功。这是你的新密钥。" in new.text and "f***@example.com" in new.text
    row, key = make_key(tokens=5)
    topped = post(client, second, "zh", kind="topup", key=key)
    assert topped.status_code == 200 and "兑换成功，tokens 已到账。" in topped.text
    assert "现在剩余 3,000,005 tokens。" in topped.text and key not in topped.text


def test_a_top_up_adds_the_tokens_to_the_pasted_key(client, make_key):
    row, key = make_key(tokens=1_000)
    (code,) = make_codes(make_plan())
    page = post(client, code, kind="topup", key=key, email="x@example.com")
    assert "3,000,000 tokens were added to key" in page.text and row.prefix in page.text
    assert "It has 3,001,000 tokens left." in page.text and key not in page.text
    db.session.expire_all()
    assert db.session.get(ApiKey, row.id).tokens_quota == 3_001_000


@pytest.mark.parametrize(
    ("setup", "status", "english", "chinese"),
    [
        ("wrong", 400, "That is not a valid gift code.", "这不是有效的礼品码。"),
        ("void", 410, "was cancelled by the seller", "已被卖家作废"),
        ("expired", 410, "expired on", "过期"),
    ],
)
def test_refused_codes_get_a_clear_message_in_both_languages_and_change_nothing(
    client, setup, status, english, chinese
):
    (code,) = make_codes(make_plan())
    if setup == "void":
        service.void(code, actor=OPERATOR)
    elif setup == "expired":
        db.session.execute(db.update(GiftCode).values(expires_at=utcnow() - timedelta(days=1)))
        db.session.commit()
    typed = "RG-0000-0000-0000-0000-0000" if setup == "wrong" else code
    for lang, message in (("en", english), ("zh", chinese)):
        page = post(client, typed, lang)
        assert page.status_code == status and message in page.text
        assert 'role="alert"' in page.text and 'value="' + typed + '"' in page.text  # the code stays to correct
    assert counts() == (0, 0, 0)
    if setup == "expired":
        assert (utcnow() - timedelta(days=1)).strftime("%Y-%m-%d") in page.text


def test_an_unknown_or_revoked_key_is_refused_without_echoing_it_and_keeps_the_code(client, make_key):
    (code,) = make_codes(make_plan())
    row, key = make_key()
    row.status = "revoked"
    db.session.commit()
    unknown = post(client, code, kind="topup", key="sk-gateway-" + "x" * 40)
    assert unknown.status_code == 400 and "We could not find that key." in unknown.text
    revoked = post(client, code, kind="topup", key=key)
    assert "has been revoked" in revoked.text and key not in revoked.text
    assert counts() == (1, 0, 0)


def test_guessing_is_throttled_with_retry_after_in_both_languages(client):
    (code,) = make_codes(make_plan())
    for n in range(throttle.LIMIT):
        assert post(client, f"RG-0000-0000-0000-0000-{n:04d}").status_code == 400
    page = post(client, code)
    assert page.status_code == 429 and 0 < int(page.headers["Retry-After"]) <= throttle.WINDOW_SECONDS
    assert "Too many tries from your address. Please wait 15 minutes" in page.text
    assert "尝试次数过多" in post(client, code, "zh").text
    assert counts() == (0, 0, 0)


def test_the_form_needs_its_csrf_token(client):
    (code,) = make_codes(make_plan())
    assert client.post("/redeem", data={"code": code, "kind": "new"}).status_code == 400
    assert counts() == (0, 0, 0)
