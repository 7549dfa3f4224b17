"""Balance look-ups with the key: GET /api/key, one-api's legacy billing endpoints, `keys show --json`."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from app.billing import key_lifecycle
from tests.api.helpers import chat_body
from tests.fake_deepseek import prompt_tokens_of

FIELDS = {"name", "status", "tokens_quota", "tokens_used", "tokens_remaining", "rpm", "expires_at", "models"}


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def spend(client, key, tokens=5):
    body = chat_body(fake={"tokens": tokens})
    assert client.post("/v1/chat/completions", json=body, headers=auth(key)).status_code == 200
    return prompt_tokens_of(body) + tokens


def test_api_key_reports_the_live_balance(client, make_key, fake):
    row, key = make_key(2_000_000, name="alice", expires_at=datetime(2031, 5, 4, 3, 2, 1))
    spent = spend(client, key) + spend(client, key, tokens=11)  # settled, not yet written to SQL
    report = client.get("/api/key", headers=auth(key)).get_json()
    assert set(report) >= FIELDS
    assert report == {
        "name": "alice",
        "status": "active",
        "tokens_quota": 2_000_000,
        "tokens_used": spent,
        "tokens_remaining": 2_000_000 - spent,
        "tokens_reserved": 0,
        "rpm": 30,
        "expires_at": "2031-05-04T03:02:01Z",
        "models": ["deepseek-v4-flash", "deepseek-v4-pro"],
    }


def test_api_key_shows_a_revoked_key_as_revoked(client, make_key):
    row, key = make_key(1000, rpm=7, models=["deepseek-v4-pro"])
    key_lifecycle.revoke_key(row)
    report = client.get("/api/key", headers=auth(key)).get_json()
    assert (report["status"], report["rpm"], report["models"]) == ("revoked", 7, ["deepseek-v4-pro"])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-gateway-nope"}])
def test_api_key_without_a_valid_key_is_401_json(client, headers):
    response = client.get("/api/key", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("base", ["/v1", ""])
def test_legacy_billing_endpoints_show_the_balance_like_one_api(client, make_key, fake, base):
    _, key = make_key(2_000_000, expires_at=datetime(2031, 1, 1))
    spent = spend(client, key)
    subscription = client.get(f"{base}/dashboard/billing/subscription", headers=auth(key)).get_json()
    assert subscription == {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": 2.0,
        "hard_limit_usd": 2.0,
        "system_hard_limit_usd": 2.0,
        "access_until": 1924992000,  # 2031-01-01T00:00:00Z
    }
    usage = client.get(f"{base}/dashboard/billing/usage?start_date=2026-01-01&end_date=2026-02-01", headers=auth(key))
    assert usage.get_json() == {"object": "list", "total_usage": spent / 10_000}
    # What ChatGPT-Next-Web and its kin show as the balance: exactly the tokens left, in $1 = 1M tokens.
    left = subscription["hard_limit_usd"] - usage.get_json()["total_usage"] / 100
    assert round(left * 1_000_000) == 2_000_000 - spent


def test_balance_look_ups_do_not_count_against_the_rate_limit(client, make_key):
    _, key = make_key(1000, rpm=2)
    for _ in range(4):
        response = client.get("/v1/dashboard/billing/subscription", headers=auth(key))
        assert response.headers["x-ratelimit-remaining-requests"] == "2"
        assert client.get("/api/key", headers=auth(key)).status_code == 200
        assert client.get("/v1/dashboard/billing/usage", headers=auth(key)).status_code == 200


def test_legacy_endpoints_refuse_a_revoked_key(client, make_key):
    row, key = make_key(1000)
    key_lifecycle.revoke_key(row)
    response = client.get("/v1/dashboard/billing/subscription", headers=auth(key))
    assert response.status_code == 401


def test_keys_show_json_prints_the_same_fields_as_api_key(client, runner, make_key, fake):
    _, key = make_key(50_000, name="bob")
    spend(client, key)
    result = runner.invoke(args=["keys", "show", key, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    report = client.get("/api/key", headers=auth(key)).get_json()
    assert {field: shown[field] for field in report} == report
