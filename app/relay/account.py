"""Checking an upstream account: can we reach it with this key, which models, what balance.

DeepSeek serves `GET /models` (OpenAI format) and `GET /user/balance`
(`{"is_available": bool, "balance_infos": [{"currency", "total_balance", "granted_balance",
"topped_up_balance"}]}`, amounts as decimal strings). Other OpenAI-format upstreams usually have
no balance endpoint; that is reported as "no balance", not as a failure.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import urllib3

_MAX_BODY = 1024 * 1024


class AccountError(Exception):
    """The upstream could not be reached, refused the key, or answered nonsense."""


class Unreachable(AccountError):
    """No HTTP answer at all: no connection, a timeout, a broken reply. `cause` names the error
    without the URL, for places that show it beside the account's name."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"cannot reach {url}: {cause}")
        self.cause = cause


@dataclass(frozen=True, slots=True)
class AccountBalance:
    currency: str
    total: str  # decimal strings exactly as the upstream sent them; never floats
    granted: str
    topped_up: str


@dataclass(frozen=True, slots=True)
class AccountCheck:
    ok: bool
    latency_ms: int
    models: tuple[str, ...] = ()
    available: bool | None = None  # DeepSeek's is_available; None when there is no balance endpoint
    balances: tuple[AccountBalance, ...] = ()
    error: str = ""


def get_json(pool: urllib3.PoolManager, url: str, api_key: str, timeout: float) -> tuple[int, Any]:
    """(status, JSON body or None). Raises Unreachable, also for a body that stops coming."""
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    try:
        resp = pool.request(
            "GET",
            url,
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
            preload_content=False,
        )
        try:
            raw = resp.read(_MAX_BODY)
        finally:
            resp.release_conn()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Unreachable(url, type(exc).__name__) from None
    try:
        return resp.status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return resp.status, None


def _raise_for(status: int, url: str) -> None:
    if status in (401, 403):
        raise AccountError(f"the upstream refused the API key (HTTP {status})")
    if status >= 400:
        raise AccountError(f"{url} answered HTTP {status}")


def fetch_models(pool: urllib3.PoolManager, base_url: str, api_key: str, timeout: float = 8.0) -> tuple[str, ...]:
    url = base_url.rstrip("/") + "/models"
    status, payload = get_json(pool, url, api_key, timeout)
    _raise_for(status, url)
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise AccountError(f"{url} did not answer an OpenAI model list")
    return tuple(sorted(str(m.get("id")) for m in payload["data"] if isinstance(m, dict) and m.get("id")))


def balance_urls(base_url: str) -> list[str]:
    base = base_url.rstrip("/")
    urls = [base + "/user/balance"]
    if base.endswith("/v1"):  # DeepSeek's balance lives at the root, also when the chat base ends in /v1
        urls.append(base[: -len("/v1")] + "/user/balance")
    return urls


def _parse_balance(payload: Any) -> tuple[bool | None, tuple[AccountBalance, ...]]:
    if not isinstance(payload, dict) or not isinstance(payload.get("balance_infos"), list):
        raise AccountError("the balance answer has no balance_infos")
    balances = tuple(
        AccountBalance(
            currency=str(info.get("currency", "")),
            total=str(info.get("total_balance", "")),
            granted=str(info.get("granted_balance", "")),
            topped_up=str(info.get("topped_up_balance", "")),
        )
        for info in payload["balance_infos"]
        if isinstance(info, dict)
    )
    available = payload.get("is_available")
    return (bool(available) if available is not None else None), balances


def fetch_balance(
    pool: urllib3.PoolManager, base_url: str, api_key: str, timeout: float = 8.0
) -> tuple[bool | None, tuple[AccountBalance, ...]]:
    """(is_available, balances); (None, ()) when the upstream has no balance endpoint (404)."""
    for url in balance_urls(base_url):
        status, payload = get_json(pool, url, api_key, timeout)
        if status == 404:
            continue
        _raise_for(status, url)
        return _parse_balance(payload)
    return None, ()


def check_account(pool: urllib3.PoolManager, base_url: str, api_key: str, timeout: float = 8.0) -> AccountCheck:
    """Never raises: a failure is an AccountCheck with ok=False and a one-line reason."""
    started = time.monotonic()
    try:
        models = fetch_models(pool, base_url, api_key, timeout)
        available, balances = fetch_balance(pool, base_url, api_key, timeout)
    except AccountError as exc:
        return AccountCheck(ok=False, latency_ms=_since(started), error=str(exc))
    return AccountCheck(ok=True, latency_ms=_since(started), models=models, available=available, balances=balances)


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
