"""Login, logout, throttling, CSRF and the rule that nothing under /admin works without a login."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from app.extensions import db
from app.models import AdminUser, ApiKey, AuditLog, Plan
from tests.admin.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, AdminClient, csrf_from, make_admin


@pytest.fixture
def app_extra() -> dict[str, Any]:
    return {"ADMIN_LOGIN_ATTEMPTS_PER_15_MIN": 3}


def _admin_rules(app: Any, method: str) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("admin.") and method in rule.methods:
            urls.append(rule.rule.replace("<int:key_id>", "1").replace("<int:plan_id>", "1").replace("<int:", "<"))
    return [u.replace("<order_id>", "1").replace("<upstream_id>", "1").replace("<route_id>", "1") for u in urls]


def _login_form(client: Any, email: str, password: str, **kwargs: Any) -> Any:
    token = csrf_from(client.get("/admin/login").text)
    return client.post("/admin/login", data={"email": email, "password": password, "csrf_token": token}, **kwargs)


def test_every_admin_page_sends_an_anonymous_visitor_to_the_login(app, client, make_key):
    make_key()
    pages = _admin_rules(app, "GET")
    assert len(pages) >= 15
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/admin/login"), url


def test_no_admin_action_works_without_login_even_with_a_valid_csrf_token(app, client, make_key):
    row, _key = make_key(tokens=100)
    db.session.add(Plan(name="p", tokens=1, price_cents=100))
    db.session.commit()
    token = csrf_from(client.get("/admin/login").text)
    actions = _admin_rules(app, "POST")
    assert "/admin/keys/1/revoke" in actions and "/admin/keys/1/topup" in actions
    for url in actions:
        response = client.post(url, data={"csrf_token": token, "tokens": "999"})
        assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login"), url
    db.session.expire_all()
    assert db.session.get(ApiKey, row.id).status == "active"
    assert db.session.get(ApiKey, row.id).tokens_quota == 100
    assert db.session.get(Plan, 1).active is True


def test_login_then_pages_open_and_the_password_is_stored_hashed(client, admin_user):
    response = _login_form(client, ADMIN_EMAIL.upper(), ADMIN_PASSWORD)
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    stored = db.session.get(AdminUser, admin_user.id).password_hash
    assert ADMIN_PASSWORD not in stored and stored.startswith(("scrypt:", "pbkdf2:"))
    entry = db.session.execute(db.select(AuditLog).filter_by(action="auth.login")).scalar_one()
    assert entry.actor == ADMIN_EMAIL and entry.admin_id == admin_user.id and entry.ip == "127.0.0.1"


def test_wrong_password_is_refused_with_a_message_and_audited(client, admin_user):
    response = _login_form(client, ADMIN_EMAIL, "wrong password!")
    assert response.status_code == 401
    assert "Wrong email or password." in response.text
    assert client.get("/admin/").status_code == 302
    failed = db.session.execute(db.select(AuditLog).filter_by(action="auth.login_failed")).scalar_one()
    assert failed.actor == ADMIN_EMAIL and "wrong password" not in str(failed.details)


def test_login_is_throttled_per_address_and_per_account(app, client, admin_user, redis):
    for _ in range(3):
        assert _login_form(client, ADMIN_EMAIL, "guess").status_code == 401
    blocked = _login_form(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert blocked.status_code == 429
    assert "Too many failed attempts" in blocked.text
    assert client.get("/admin/").status_code == 302
    # Another address is still refused for this account, and this address for another account.
    other_ip = {"REMOTE_ADDR": "10.9.8.7"}
    assert _login_form(client, ADMIN_EMAIL, ADMIN_PASSWORD, environ_base=other_ip).status_code == 429
    make_admin("second@example.com")
    assert _login_form(client, "second@example.com", ADMIN_PASSWORD).status_code == 429
    ttls = [redis.ttl(k) for k in redis.keys("*adminlogin*")]
    assert ttls and all(0 < ttl <= 900 for ttl in ttls)


def test_sixty_concurrent_guesses_get_at_most_the_limits_worth_of_password_checks(app, admin_user, gunicorn_factory):
    server = gunicorn_factory(workers=2, ADMIN_LOGIN_ATTEMPTS_PER_15_MIN="10")
    sessions = [requests.Session() for _ in range(60)]
    tokens = [csrf_from(s.get(f"{server.url}/admin/login", timeout=10).text) for s in sessions]

    def guess(i: int) -> int:
        data = {"email": ADMIN_EMAIL, "password": f"guess-{i}", "csrf_token": tokens[i]}
        return sessions[i].post(f"{server.url}/admin/login", data=data, timeout=30, allow_redirects=False).status_code

    with ThreadPoolExecutor(max_workers=60) as pool:
        statuses = list(pool.map(guess, range(60)))
    db.session.expire_all()
    checked = db.session.execute(db.select(AuditLog).filter_by(action="auth.login_failed")).scalars().all()
    assert len(checked) == statuses.count(401) <= 10, statuses
    assert statuses.count(429) >= 50
    assert not re.search(r"5\d\d", " ".join(map(str, statuses)))


def test_a_successful_login_clears_the_failure_count(client, admin_user):
    for _ in range(2):
        _login_form(client, ADMIN_EMAIL, "guess")
    assert _login_form(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 302
    client.post("/admin/logout", data={"csrf_token": csrf_from(client.get("/admin/").text)})
    for _ in range(2):
        assert _login_form(client, ADMIN_EMAIL, "guess").status_code == 401


def test_login_without_csrf_token_is_rejected(client, admin_user):
    response = client.post("/admin/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status_code == 400
    assert "The form expired. Please log in again." in response.text
    assert client.get("/admin/").status_code == 302


def test_admin_action_without_csrf_token_is_rejected_and_changes_nothing(admin, make_key):
    row, _key = make_key()
    response = admin.client.post(f"/admin/keys/{row.id}/revoke")
    assert response.status_code == 400
    assert "This form has expired" in response.text
    forged = admin.client.post(f"/admin/keys/{row.id}/revoke", data={"csrf_token": "forged"})
    assert forged.status_code == 400
    db.session.expire_all()
    assert db.session.get(ApiKey, row.id).status == "active"


def test_login_never_redirects_outside_the_admin(client, admin_user):
    token = csrf_from(client.get("/admin/login").text)
    for target in ("https://evil.example/", "//evil.example/admin", "/admin\\@evil.example", "/admin\n//evil.example"):
        response = client.post(
            "/admin/login",
            query_string={"next": target},
            data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token},
        )
        assert response.headers["Location"] == "/admin/", target
        client.post("/admin/logout", data={"csrf_token": csrf_from(client.get("/admin/").text)})
        token = csrf_from(client.get("/admin/login").text)
    kept = _login_form(client, ADMIN_EMAIL, ADMIN_PASSWORD, query_string={"next": "/admin/keys?q=x"})
    assert kept.headers["Location"] == "/admin/keys?q=x"


def test_logout_ends_the_session_and_is_audited(admin):
    assert admin.post("/admin/logout").status_code == 302
    assert admin.get("/admin/").status_code == 302
    assert db.session.execute(db.select(AuditLog).filter_by(action="auth.logout")).scalar_one()


def test_a_disabled_admin_is_locked_out_of_an_open_session(admin, admin_user, runner):
    result = runner.invoke(args=["admin", "disable", "--email", ADMIN_EMAIL])
    assert result.exit_code == 0, result.output
    assert admin.get("/admin/").status_code == 302
    again = AdminClient(admin.client).login()
    assert again.status_code == 401


def test_session_cookie_is_httponly_and_samesite_and_pages_are_not_cached(client, admin_user):
    response = _login_form(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/admin/")
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


def test_cli_creates_an_admin_and_resets_a_password(app, runner):
    result = runner.invoke(args=["admin", "create", "--email", "Boss@Example.com", "--password", "a long password"])
    assert result.exit_code == 0, result.output
    user = db.session.execute(db.select(AdminUser).filter_by(email="boss@example.com")).scalar_one()
    assert user.check_password("a long password")
    reset = runner.invoke(args=["admin", "create", "--email", "boss@example.com", "--password", "another password"])
    assert reset.exit_code == 0 and "Updated" in reset.output
    db.session.expire_all()
    assert db.session.execute(db.select(db.func.count(AdminUser.id))).scalar_one() == 1
    assert user.check_password("another password") and not user.check_password("a long password")
    short = runner.invoke(args=["admin", "create", "--email", "x@example.com", "--password", "short"])
    assert short.exit_code != 0 and "at least" in short.output
    actions = set(db.session.execute(db.select(AuditLog.action)).scalars())
    assert {"admin.create", "admin.password_reset"} <= actions
    assert "password" not in str(db.session.execute(db.select(AuditLog.details)).scalars().all())
