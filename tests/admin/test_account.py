"""app/relay/account.py: checking an upstream account (models and DeepSeek balance)."""

from __future__ import annotations

import urllib3

from app.relay.account import AccountBalance, check_account
from tests.admin.loopback import serve
from tests.conftest import UPSTREAM_SECRET, free_port

MODELS = (200, {"object": "list", "data": [{"id": "m-b"}, {"id": "m-a"}]})
BALANCE = (
    200,
    {
        "is_available": False,
        "balance_infos": [
            {"currency": "CNY", "total_balance": "0.07", "granted_balance": "0.00", "topped_up_balance": "0.07"}
        ],
    },
)


def _pool() -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=False)


def test_check_reads_models_and_the_deepseek_balance(fake_server):
    result = check_account(_pool(), fake_server.base_url, UPSTREAM_SECRET)  # the fake refuses other keys
    assert result.ok and not result.error
    assert {"deepseek-v4-flash", "deepseek-v4-pro"} <= set(result.models)
    assert result.available is True
    assert result.balances == (AccountBalance(currency="USD", total="12.34", granted="0.00", topped_up="12.34"),)


def test_balance_is_found_at_the_root_when_the_base_url_ends_in_v1():
    with serve({"/v1/models": MODELS, "/user/balance": BALANCE}) as base:
        result = check_account(_pool(), base + "/v1", "sk-x")
    assert result.ok and result.models == ("m-a", "m-b")
    assert result.available is False and result.balances[0].total == "0.07"


def test_an_upstream_without_a_balance_endpoint_is_still_ok():
    with serve({"/models": MODELS}) as base:
        result = check_account(_pool(), base, "sk-x")
    assert result.ok and result.available is None and result.balances == ()


def test_a_refused_key_and_an_unreachable_host_are_failures_with_a_reason():
    with serve({"/models": (401, {"error": {"message": "Authentication Fails"}})}) as base:
        refused = check_account(_pool(), base, "sk-wrong")
    assert not refused.ok and "refused the API key (HTTP 401)" in refused.error
    gone = check_account(_pool(), f"http://127.0.0.1:{free_port()}", "sk-x", timeout=2)
    assert not gone.ok and gone.error.startswith("cannot reach")
    with serve({"/models": (200, {"nonsense": True})}) as base:
        odd = check_account(_pool(), base, "sk-x")
    assert not odd.ok and "did not answer an OpenAI model list" in odd.error
