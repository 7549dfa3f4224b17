"""Keys in the admin: create (shown once), search, edit, top up, revoke, usage history."""

from __future__ import annotations

import re
from datetime import timedelta

from app.billing.key_format import hash_key
from app.extensions import db
from app.models import ApiKey, AuditLog, utcnow
from tests.admin.conftest import add_usage

_NEW_KEY = re.compile(r'id="new-key"[^>]*value="(sk-[^"]+)"')


def _models(client, key):
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    return response.status_code, sorted(m["id"] for m in (response.json or {}).get("data", []))


def test_create_key_shows_it_once_and_keeps_only_its_hash(admin, client):
    tomorrow = (utcnow() + timedelta(days=30)).date().isoformat()
    response = admin.post(
        "/admin/keys/new",
        {
            "tokens": "5000",
            "name": "tavern",
            "email": "Buyer@Example.com",
            "rpm": "12",
            "expires": tomorrow,
            "models": ["deepseek-v4-flash"],
            "reasoning_passthrough": "y",
            "note": "bought by chat",
        },
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    plaintext = _NEW_KEY.search(response.text).group(1)
    row = db.session.execute(db.select(ApiKey)).scalar_one()
    assert row.key_hash == hash_key(plaintext) and plaintext not in (row.prefix, row.name, row.note)
    assert (row.tokens_quota, row.rpm, row.allowed_models, row.email) == (
        5000,
        12,
        ["deepseek-v4-flash"],
        "buyer@example.com",
    )
    assert row.reasoning_passthrough and row.note == "bought by chat" and row.expires_at.date().isoformat() == tomorrow
    assert _models(client, plaintext) == (200, ["deepseek-v4-flash"])
    assert plaintext not in admin.get(f"/admin/keys/{row.id}").text
    entry = db.session.execute(db.select(AuditLog).filter_by(action="key.create")).scalar_one()
    assert entry.target == f"key:{row.id}" and entry.details["tokens"] == 5000
    assert plaintext not in str(entry.details) and plaintext[-12:] not in str(entry.details)


def test_create_key_with_bad_input_shows_the_form_again_and_saves_nothing(admin):
    response = admin.post(
        "/admin/keys/new",
        {"tokens": "lots", "rpm": "0", "expires": "2001-01-01", "email": "not-an-email", "models": ["gpt-9"]},
    )
    assert response.status_code == 400
    text = response.text
    assert "Nothing was saved" in text
    assert "Not a valid integer value." in text
    assert "Enter a whole number from 1 to 100,000." in text
    assert "The expiry date must be in the future." in text
    assert "Enter a valid email address." in text
    assert 'value="not-an-email"' in text  # what was typed stays in the form
    assert db.session.execute(db.select(db.func.count(ApiKey.id))).scalar_one() == 0
    assert db.session.execute(db.select(AuditLog).filter_by(action="key.create")).first() is None


def test_edit_takes_effect_on_the_next_api_request(admin, client, make_key):
    row, key = make_key()
    assert _models(client, key) == (200, ["deepseek-v4-flash", "deepseek-v4-pro"])  # now cached in Redis
    expires = (utcnow() + timedelta(days=9)).date()
    response = admin.post(
        f"/admin/keys/{row.id}/edit",
        {
            "name": "renamed",
            "rpm": "7",
            "max_concurrent": "2",
            "expires": expires.isoformat(),
            "models": ["deepseek-v4-pro"],
        },
    )
    assert response.status_code == 302
    assert _models(client, key) == (200, ["deepseek-v4-pro"])
    db.session.expire_all()
    row = db.session.get(ApiKey, row.id)
    assert (row.name, row.rpm, row.max_concurrent, row.expires_at.date()) == ("renamed", 7, 2, expires)
    assert not row.reasoning_passthrough
    entry = db.session.execute(db.select(AuditLog).filter_by(action="key.edit")).scalar_one()
    assert entry.details["rpm"] == 7 and entry.details["allowed_models"] == ["deepseek-v4-pro"]
    # Clearing the fields goes back to the defaults: every model, the global rpm, no expiry.
    admin.post(f"/admin/keys/{row.id}/edit", {"name": "renamed"})
    db.session.expire_all()
    row = db.session.get(ApiKey, row.id)
    assert (row.rpm, row.allowed_models, row.expires_at) == (None, None, None)
    assert _models(client, key)[1] == ["deepseek-v4-flash", "deepseek-v4-pro"]


def test_edit_with_bad_input_changes_nothing(admin, make_key):
    row, _key = make_key(rpm=30, name="keep")
    response = admin.post(f"/admin/keys/{row.id}/edit", {"name": "changed", "rpm": "-3", "expires": "31/12/2030"})
    assert response.status_code == 400
    assert "Enter a whole number from 1 to 100,000." in response.text
    assert "Not a valid date value." in response.text
    db.session.expire_all()
    assert (db.session.get(ApiKey, row.id).name, db.session.get(ApiKey, row.id).rpm) == ("keep", 30)


def test_top_up_adds_tokens_and_refuses_nonsense(admin, make_key):
    row, _key = make_key(tokens=1000)
    assert admin.post(f"/admin/keys/{row.id}/topup", {"tokens": "2500"}).status_code == 302
    assert "Added 2,500 tokens." in admin.get(f"/admin/keys/{row.id}").text
    for bad in ("0", "-5", "abc", ""):
        response = admin.post(f"/admin/keys/{row.id}/topup", {"tokens": bad})
        assert response.status_code == 400, bad
    db.session.expire_all()
    assert db.session.get(ApiKey, row.id).tokens_quota == 3500
    topups = db.session.execute(db.select(AuditLog).filter_by(action="key.topup")).scalars().all()
    assert [(t.details["tokens"], t.details["quota"]) for t in topups] == [(2500, 3500)]


def test_revoke_stops_the_key_at_once(admin, client, make_key):
    row, key = make_key()
    assert _models(client, key)[0] == 200
    assert admin.post(f"/admin/keys/{row.id}/revoke").status_code == 302
    assert _models(client, key)[0] == 401
    page = admin.get(f"/admin/keys/{row.id}").text
    assert "revoked" in page and "Revoke key" not in page
    assert db.session.execute(db.select(AuditLog).filter_by(action="key.revoke", target=f"key:{row.id}")).scalar_one()


def test_search_and_state_filters(admin, make_key):
    alice, alice_key = make_key(name="alice", email="alice@example.com")
    bob, _ = make_key(name="bob")
    carol, _ = make_key(tokens=0, name="carol")
    dave, _ = make_key(name="dave", expires_at=utcnow() - timedelta(days=1))
    admin.post(f"/admin/keys/{bob.id}/revoke")

    def listed(**args):
        text = admin.get("/admin/keys", query_string=args).text
        return {name for name in ("alice", "bob", "carol", "dave") if f">{name}<" in text}

    assert listed() == {"alice", "bob", "carol", "dave"}
    assert listed(q="ALICE@example") == {"alice"}
    assert listed(q=alice_key) == {"alice"}
    assert listed(q=str(carol.id)) == {"carol"}
    assert listed(q=alice.prefix[-4:]) >= {"alice"}
    assert listed(state="active") == {"alice"}
    assert listed(state="revoked") == {"bob"}
    assert listed(state="exhausted") == {"carol"}
    assert listed(state="expired") == {"dave"}
    assert "No keys match." in admin.get("/admin/keys", query_string={"q": "nobody-here"}).text


def test_key_page_shows_its_own_usage_history(admin, make_key):
    row, _ = make_key()
    other, _ = make_key()
    add_usage(row.id, billed_tokens=4321, request_id="req-mine", outcome="client_closed")
    add_usage(row.id, billed_tokens=1000, created_at=utcnow() - timedelta(days=3))
    add_usage(other.id, billed_tokens=777, request_id="req-other")
    page = admin.get(f"/admin/keys/{row.id}").text
    assert "req-mine" in page and "req-other" not in page
    assert "4,321" in page and "client closed" in page
    assert "5.3k" in page  # billed over the last 30 days
    assert page.count("<svg") >= 1 and "Billed tokens per day" in page
