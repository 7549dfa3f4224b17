"""Admin test helpers: an admin account and a logged-in client that sends CSRF tokens like a browser."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.extensions import db
from app.models import AdminUser

ADMIN_EMAIL = "ops@example.com"
ADMIN_PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1) or match.group(2)


def make_admin(email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD, active: bool = True) -> AdminUser:
    user = AdminUser(email=email, active=active)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


class AdminClient:
    """A test client that logs in through the form and adds the session's CSRF token to every POST."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.token = ""

    def login(self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> Any:
        page = self.client.get("/admin/login")
        response = self.client.post(
            "/admin/login", data={"email": email, "password": password, "csrf_token": csrf_from(page.text)}
        )
        if response.status_code == 302:
            self.token = csrf_from(self.client.get("/admin/keys/new").text)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.client.post(path, data={"csrf_token": self.token, **(data or {})}, **kwargs)


@pytest.fixture
def admin_user(app: Any) -> AdminUser:
    return make_admin()


@pytest.fixture
def admin(client: Any, admin_user: AdminUser) -> AdminClient:
    helper = AdminClient(client)
    assert helper.login().status_code == 302
    return helper


def add_usage(key_id: int, **fields: Any) -> Any:
    """A usage record as the ledger writes it (test data; created_at may be set freely)."""
    import uuid

    from app.models import UsageRecord

    values = {
        "request_id": uuid.uuid4().hex,
        "api_key_id": key_id,
        "model": "deepseek-v4-flash",
        "upstream_model": "deepseek-v4-flash",
        "stream": True,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "billed_tokens": 120,
        "outcome": "done",
        "status_code": 200,
        "latency_ms": 900,
        "ttft_ms": 300,
        **fields,
    }
    row = UsageRecord(**values)
    db.session.add(row)
    db.session.commit()
    return row
