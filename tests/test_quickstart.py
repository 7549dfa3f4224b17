"""The newcomer path: `flask quickstart` prints a working key, and with no upstream key the
built-in demo upstream answers through the whole gateway."""

from __future__ import annotations

import re

import pytest

from app.extensions import db
from app.models import AdminUser, Upstream
from tests.api.helpers import chat_body, content_of, json_events, post_stream, read_sse


@pytest.fixture
def demo_mode(app):
    app.config["UPSTREAM_API_KEY"] = None
    upstream = db.session.execute(db.select(Upstream)).scalar_one()
    upstream.api_key_encrypted = None
    db.session.commit()
    app.extensions["routes"].clear()
    return app


def banner_key(output: str) -> str:
    return re.search(r"(sk-gateway-\w+)", output).group(1)


def test_quickstart_prints_login_key_and_examples(runner, demo_mode):
    result = runner.invoke(args=["quickstart", "--port", "8000"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "http://127.0.0.1:8000/v1" in out and "deepseek-v4-flash" in out and "curl" in out
    assert "DEMO" in out
    assert "admin@localhost /" in out  # the first run creates an admin and shows its password once
    assert db.session.execute(db.select(AdminUser)).scalar_one().email == "admin@localhost"
    again = runner.invoke(args=["quickstart"]).output
    assert banner_key(again) == banner_key(out)  # the same key across restarts
    assert "admin@localhost /" not in again


def test_demo_upstream_answers_through_the_gateway(runner, demo_mode, live_server):
    key = banner_key(runner.invoke(args=["quickstart"]).output)
    response = post_stream(live_server.url, key, chat_body(stream=True, content="ping"))
    events, _, _ = read_sse(response)
    text = content_of(json_events(events))
    assert text.startswith("[demo]") and "ping" in text
    assert events[-1] == b"[DONE]"
    response = post_stream(live_server.url, key, chat_body(content="ping"))
    message = response.json()["choices"][0]["message"]
    assert message["content"].startswith("[demo]") and "reasoning_content" not in message


def test_the_printed_admin_login_works(runner, demo_mode, client):
    from tests.admin.conftest import csrf_from

    out = runner.invoke(args=["quickstart"]).output
    password = re.search(r"admin@localhost / (\S+)", out).group(1)
    page = client.get("/admin/login")
    response = client.post(
        "/admin/login", data={"email": "admin@localhost", "password": password, "csrf_token": csrf_from(page.text)}
    )
    assert response.status_code == 302 and "/admin" in response.headers["Location"]
    assert client.get("/admin/").status_code == 200
