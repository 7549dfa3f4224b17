"""English and Chinese: every admin string has a Chinese translation, and the pages switch."""

from __future__ import annotations

from pathlib import Path

import flask_babel
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "app/admin/translations/zh/LC_MESSAGES/messages.po"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None}


def _extracted() -> set[str]:
    found: set[str] = set()
    for folder, method, pattern in (
        ("app/admin", "python", "**.py"),
        ("app/auth", "python", "**.py"),
        ("templates/admin", "jinja2", "**.html"),
        ("templates/auth", "jinja2", "**.html"),
    ):
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / folder, [(pattern, method)], keywords=KEYWORDS
        ):
            found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_admin_string_has_a_chinese_translation():
    with CATALOG.open("rb") as handle:
        catalog = read_po(handle)
    translated = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id and m.string and all(m.string)}
    missing = sorted(_extracted() - translated)
    assert not missing, f"add these to {CATALOG.relative_to(ROOT)}: {missing}"


def _get(admin, path, **kwargs):
    # The `app` fixture keeps one app context for the whole test, and Flask-Babel caches the
    # locale there; a real server has a fresh context per request. Forget it between requests.
    flask_babel.refresh()
    return admin.get(path, **kwargs)


def test_pages_follow_the_language_choice_and_remember_it(admin):
    zh = _get(admin, "/admin/", query_string={"lang": "zh"})
    assert "概览" in zh.text and '<html lang="zh-CN">' in zh.text
    assert "lang=zh" in zh.headers["Set-Cookie"]
    assert "概览" in _get(admin, "/admin/keys").text  # the cookie keeps it
    assert ">Keys<" in _get(admin, "/admin/keys", query_string={"lang": "en"}).text


def test_login_page_and_form_errors_in_chinese(client):
    client.set_cookie("lang", "zh")
    page = client.get("/admin/login").text
    assert "登录" in page
    from tests.admin.conftest import csrf_from

    wrong = client.post(
        "/admin/login", data={"email": "x@example.com", "password": "nope", "csrf_token": csrf_from(page)}
    )
    assert "邮箱或密码错误。" in wrong.text


def test_chinese_validation_messages_on_admin_forms(admin):
    flask_babel.refresh()
    response = admin.post("/admin/keys/new?lang=zh", {"tokens": "abc"})
    assert response.status_code == 400
    assert "不是有效的整数。" in response.text and "未保存任何内容" in response.text
