"""The operator's notice on the public status page (app/admin/pages/notice.py): set in the admin,
kept in SQL, shown on /status in the visitor's language, and nothing private beside it."""

from __future__ import annotations

import flask_babel

from app.extensions import db
from app.models import Setting


def _status(visitor, lang: str) -> str:
    page = visitor.get(f"/status?lang={lang}").text
    flask_babel.refresh()  # the test's one app context keeps the last locale; a server has one per request
    return page


def test_the_notice_shows_on_the_status_page_in_the_visitors_language(app, admin):
    visitor = app.test_client()  # its language cookie is not the admin's
    assert "Notice from the operator" not in _status(visitor, "en")
    saved = admin.post(
        "/admin/status-notice",
        {"notice_en": "  Maintenance Sunday 02:00 UTC.  ", "notice_zh": "周日 02:00 (UTC) 维护。"},
        follow_redirects=True,
    )
    assert "The status page notice is saved." in saved.text
    assert db.session.get(Setting, "status_notice_en").value == "Maintenance Sunday 02:00 UTC."

    english = _status(visitor, "en")
    assert "Maintenance Sunday 02:00 UTC." in english and "周日" not in english
    chinese = _status(visitor, "zh")
    assert "周日 02:00 (UTC) 维护。" in chinese and "Maintenance Sunday" not in chinese
    assert "周日 02:00 (UTC) 维护。</textarea>" in admin.get("/admin/status-notice").text  # the form shows it back

    admin.post("/admin/status-notice", {"notice_en": "Only in English.", "notice_zh": ""})
    assert "Only in English." in _status(visitor, "zh")  # better than nothing

    cleared = admin.post("/admin/status-notice", {"notice_en": "", "notice_zh": ""}, follow_redirects=True)
    assert "The status page shows no notice now." in cleared.text
    assert "Notice from the operator" not in _status(visitor, "en")


def test_a_notice_is_plain_text_and_bounded(app, admin):
    visitor = app.test_client()
    too_long = admin.post("/admin/status-notice", {"notice_en": "x" * 501, "notice_zh": "<b>粗体</b>"})
    assert too_long.status_code == 400
    assert "Field cannot be longer than 500 characters." in too_long.text
    assert "x" * 501 in too_long.text and "&lt;b&gt;粗体&lt;/b&gt;" in too_long.text  # what was typed is kept
    assert db.session.get(Setting, "status_notice_en") is None

    admin.post("/admin/status-notice", {"notice_en": "<script>alert(1)</script>", "notice_zh": ""})
    page = _status(visitor, "en")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_only_an_admin_sets_the_notice(client):
    response = client.post("/admin/status-notice", data={"notice_en": "defaced"})
    assert response.status_code in (302, 400)
    assert db.session.get(Setting, "status_notice_en") is None
