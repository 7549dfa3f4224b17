"""Every failure on /v1 is OpenAI-shaped JSON with a reason phrase that says the same."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import openai
import pytest

from app.billing import key_lifecycle
from app.routing import catalog
from tests.api.helpers import chat_body
from tests.conftest import UPSTREAM_SECRET, free_port


def post(client, key, body=None, path="/v1/chat/completions", **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post(path, json=body if body is not None else chat_body(), headers=headers, **kwargs)


def assert_error(response, status, code=None, type_=None, reason=None):
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if type_ is not None:
        assert error["type"] == type_
    if reason is not None:
        assert response.status == f"{status} {reason}"
    return error


def test_missing_key(client):
    error = assert_error(post(client, None), 401, "invalid_api_key", reason="Missing API Key")
    assert "No API key" in error["message"]


def test_unknown_key_is_masked(client):
    error = assert_error(post(client, "sk-gateway-" + "x" * 40), 401, "invalid_api_key", reason="Invalid API Key")
    assert "x" * 10 not in error["message"]


def test_revoked_key(client, make_key):
    row, key = make_key()
    key_lifecycle.revoke_key(row)
    error = assert_error(post(client, key), 401, "invalid_api_key", reason="API Key Revoked")
    assert "revoked" in error["message"]


def test_expired_key(client, make_key):
    _, key = make_key(expires_at=datetime.utcnow() - timedelta(days=1))
    error = assert_error(post(client, key), 401, "invalid_api_key", reason="API Key Expired")
    assert "expired" in error["message"]


def test_revoke_takes_effect_on_next_request(client, make_key, fake):
    row, key = make_key()
    assert post(client, key).status_code == 200
    key_lifecycle.revoke_key(row)
    assert post(client, key).status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/chat/completions"), ("get", "/models"), ("post", "/completions"), ("get", "/models/")],
)
def test_base_url_without_v1_gets_a_hint(client, api_key, method, path):
    response = getattr(client, method)(path, headers={"Authorization": f"Bearer {api_key}"})
    error = assert_error(response, 404, "base_url_missing_v1", reason="Base URL Must End With /v1")
    assert "/v1" in error["message"]


def test_unknown_model_lists_allowed_ids(client, api_key):
    error = assert_error(
        post(client, api_key, chat_body(model="openai/deepseek-v4-flash")),
        404,
        "model_not_found",
        reason="Model Not Found",
    )
    assert "deepseek-v4-flash" in error["message"] and "deepseek-v4-pro" in error["message"]
    assert error["param"] == "model"


def test_model_not_allowed_for_key(client, make_key):
    _, key = make_key(models=["deepseek-v4-flash"])
    error = assert_error(post(client, key, chat_body(model="deepseek-v4-pro")), 404, "model_not_found")
    assert "deepseek-v4-pro" not in error["message"].split("Use one of:")[1]


@pytest.mark.parametrize(
    ("data", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "deepseek-v4-flash"}', "messages"),
        (b'{"model": "deepseek-v4-flash", "messages": []}', "messages"),
        (b'{"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "deepseek-v4-flash", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    ],
)
def test_bad_bodies_are_400(client, api_key, data, param):
    response = client.post(
        "/v1/chat/completions",
        data=data,
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    error = assert_error(response, 400, type_="invalid_request_error")
    assert error["param"] == param


def test_a_huge_model_name_is_not_echoed_whole(client, api_key):
    response = post(client, api_key, chat_body(model="m" * 1_000_000))
    error = assert_error(response, 404, type_="invalid_request_error")
    assert len(response.get_data()) < 2000
    assert "m" * 100 + "…" in error["message"]


def test_body_over_limit_is_413(app, client, api_key):
    app.config["MAX_CONTENT_LENGTH"] = 1024
    response = post(client, api_key, chat_body(content="x" * 5000))
    assert_error(response, 413, reason="Request Too Large")


def test_unknown_v1_endpoint_and_method_are_json(client, api_key):
    assert_error(client.get("/v1/engines", headers={"Authorization": f"Bearer {api_key}"}), 404, "unknown_url")
    assert_error(client.get("/v1/chat/completions", headers={"Authorization": f"Bearer {api_key}"}), 405)


def test_double_slash_and_trailing_slash_paths_work(client, api_key, fake):
    assert post(client, api_key, path="/v1//chat/completions").status_code == 200
    assert post(client, api_key, path="/v1/chat/completions/").status_code == 200
    assert client.get("/v1/models/", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200


@pytest.mark.parametrize(
    ("upstream_status", "status", "code", "needle"),
    [
        (400, 400, "invalid_request_error", "bad thing"),
        (422, 422, "invalid_request_error", "bad thing"),
        (401, 503, "upstream_unavailable", "contact the administrator"),
        (402, 503, "upstream_unavailable", "contact the administrator"),
        (429, 429, "upstream_rate_limited", "busy"),
        (500, 502, "upstream_unavailable", "HTTP 500"),
        (503, 503, "upstream_unavailable", "overloaded"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_are_mapped(client, api_key, fake, upstream_status, status, code, needle, stream, caplog):
    caplog.set_level(logging.INFO)
    body = chat_body(stream=stream, fake={"status": upstream_status, "error": "bad thing", "retry_after": 7})
    error = assert_error(post(client, api_key, body), status, code)
    assert needle in error["message"]
    assert UPSTREAM_SECRET not in caplog.text
    assert api_key not in caplog.text


def test_upstream_429_carries_retry_after(client, api_key, fake):
    response = post(client, api_key, chat_body(fake={"status": 429, "retry_after": 7}))
    assert response.headers["Retry-After"] == "7"


def test_upstream_unreachable_is_502(app, client, api_key):
    catalog.set_upstream("deepseek", base_url=f"http://127.0.0.1:{free_port()}")
    for stream in (False, True):
        assert_error(
            post(client, api_key, chat_body(stream=stream)), 502, "upstream_unavailable", reason="Upstream Unreachable"
        )


def test_upstream_key_never_in_responses(client, api_key, fake):
    for body in (chat_body(), chat_body(stream=True), chat_body(fake={"status": 401})):
        assert UPSTREAM_SECRET.encode() not in post(client, api_key, body).data


def test_sdk_raises_the_right_exceptions(live_server, api_key, fake):
    sdk = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="sk-gateway-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
    sdk = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(
            model="deepseek-v4-flash", messages=[{"role": "user", "content": "x"}], extra_body={"fake": {"status": 500}}
        )
    no_v1 = openai.OpenAI(base_url=live_server.url, api_key=api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="must end with /v1"):
        no_v1.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "x"}])


def test_upstream_connect_timeout_is_502_within_the_limit(app, client, api_key):
    # A listener whose accept queue is full drops new SYNs: the connect hangs until our timeout.
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    app.config["RELAY_CONNECT_TIMEOUT"] = 0.5
    catalog.set_upstream("deepseek", base_url=f"http://127.0.0.1:{port}")
    try:
        started = time.monotonic()
        assert_error(post(client, api_key), 502, "upstream_unavailable", reason="Upstream Unreachable")
        assert 0.4 < time.monotonic() - started < 3  # it waited for the connect timeout, no longer
    finally:
        for sock in (*fillers, listener):
            sock.close()


def test_errors_on_the_services_side_point_to_the_status_page(client, api_key, fake):
    auth = {"Authorization": f"Bearer {api_key}"}
    for status in (500, 503):
        fake.script(status=status)
        error = client.post("/v1/chat/completions", json=chat_body(), headers=auth).get_json()["error"]
        assert error["type"] == "upstream_error"
        assert error["message"].endswith("Live status of every model: http://testserver/status")
    fake.script(status=400, error="Invalid max_tokens")  # the request's own fault: no status link
    error = client.post("/v1/chat/completions", json=chat_body(), headers=auth).get_json()["error"]
    assert "/status" not in error["message"]
