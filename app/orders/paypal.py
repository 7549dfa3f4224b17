"""PayPal Orders v2 and webhook verification. The only module that imports paypalrestsdk.

`paypalrestsdk.Api` is used as the OAuth + HTTP transport only (its resource classes are the
deprecated Payments v1). This wrapper adds what the SDK lacks (protocols.md §3.6): a timeout on
every call, one token refresh on 401 instead of unbounded recursion, PayPal-Request-Id
idempotency keys, and one exception family for every failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import paypalrestsdk
import requests
from flask import Flask, current_app
from paypalrestsdk import exceptions as sdk_errors
from paypalrestsdk import util as sdk_util

log = logging.getLogger(__name__)

LIVE_BASE = "https://api-m.paypal.com"
SANDBOX_BASE = "https://api-m.sandbox.paypal.com"
# Where PayPal's payer-action link sends a buyer; a PAYPAL_API_BASE of one's own serves that page too.
APPROVAL_ORIGINS = ("https://www.paypal.com", "https://www.sandbox.paypal.com")


class PayPalError(Exception):
    """PayPal answered with an error. `name` is PayPal's error name, `issue` the first detail issue."""

    def __init__(self, status: int, name: str = "", issue: str = "", debug_id: str = "") -> None:
        super().__init__(f"PayPal HTTP {status} {name} {issue}".strip())
        self.status = status
        self.name = name
        self.issue = issue
        self.debug_id = debug_id


class PayPalUnavailable(PayPalError):
    """Timeout, connection failure or 5xx: worth retrying later."""


class PayPalNotConfigured(PayPalError):
    def __init__(self) -> None:
        super().__init__(0, "NOT_CONFIGURED")


@dataclass(frozen=True, slots=True)
class Capture:
    id: str
    status: str  # COMPLETED | PENDING | DECLINED | ...
    amount_cents: int
    currency: str
    reason: str = ""  # status_details.reason, e.g. PENDING_REVIEW


@dataclass(frozen=True, slots=True)
class PayPalOrder:
    id: str
    status: str  # CREATED | APPROVED | COMPLETED | VOIDED | PAYER_ACTION_REQUIRED
    approve_url: str | None
    capture: Capture | None


class _RawJSON(str):
    """A request body already serialised, sent byte for byte (the webhook event as received)."""


class _TimedApi(paypalrestsdk.Api):
    """The SDK's Api with a timeout on every HTTP call and a bounded 401 retry."""

    def __init__(self, timeout: float, **options: Any) -> None:
        super().__init__(**options)
        self.timeout = timeout

    def http_call(self, url: str, method: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)  # the SDK passes none: a stuck socket hangs forever
        return super().http_call(url, method, **kwargs)

    def request(self, url: str, method: str, body: Any = None, headers: Any = None, refresh_token: Any = None) -> Any:
        # Replaces the SDK's request(), which retries a 401 by recursing without limit and merges
        # our PayPal-Request-Id into the OAuth token request.
        data = body if isinstance(body, _RawJSON) else (None if method == "GET" else json.dumps(body or {}))
        for attempt in (1, 2):
            http_headers = sdk_util.merge_dict(self.headers(), headers or {})
            try:
                return self.http_call(url, method, data=data, headers=http_headers)
            except sdk_errors.UnauthorizedAccess:
                if attempt == 2:
                    raise
                self.token_hash = None  # expired or revoked token: fetch a new one, once
        return None  # unreachable


def approval_origins(config: Any) -> tuple[str, ...]:
    """The origins a checkout may redirect the buyer's browser to."""
    custom = config.get("PAYPAL_API_BASE")
    if not custom:
        return APPROVAL_ORIGINS
    parts = urlsplit(custom)
    return (*APPROVAL_ORIGINS, f"{parts.scheme}://{parts.netloc}")


def init_paypal(app: Flask) -> None:
    """Build the Api once per app; a missing client id leaves the storefront unable to sell, not broken."""
    client_id = app.config.get("PAYPAL_CLIENT_ID")
    secret = app.config.get("PAYPAL_CLIENT_SECRET")
    if not client_id or not secret:
        app.extensions["paypal"] = None
        return
    mode = "live" if app.config.get("PAYPAL_MODE") == "live" else "sandbox"
    base = (app.config.get("PAYPAL_API_BASE") or (LIVE_BASE if mode == "live" else SANDBOX_BASE)).rstrip("/")
    app.extensions["paypal"] = _TimedApi(
        timeout=app.config.get("PAYPAL_TIMEOUT", 20.0),
        mode=mode,
        client_id=client_id,
        client_secret=secret,
        endpoint=base,
    )
    # The SDK logs request and response bodies (tokens, payer details) at DEBUG in sandbox mode.
    logging.getLogger("paypalrestsdk").setLevel(logging.WARNING)


def get_api() -> _TimedApi:
    if "paypal" not in current_app.extensions:
        init_paypal(current_app)
    api = current_app.extensions["paypal"]
    if api is None:
        raise PayPalNotConfigured()
    return api


def _call(method: str, path: str, body: Any = None, request_id: str | None = None) -> dict[str, Any]:
    headers = {"PayPal-Request-Id": request_id} if request_id else {}
    api = get_api()
    try:
        result = api.get(path, headers=headers) if method == "GET" else api.post(path, body, headers=headers)
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise PayPalUnavailable(0, "UNREACHABLE", type(exc).__name__) from None
    except sdk_errors.ConnectionError as exc:
        raise _error_from(exc) from None
    if isinstance(result, dict) and "error" in result and len(result) == 1:  # the SDK's way to return a 400
        raise _error_from_body(400, result["error"])
    return result


def _error_from(exc: sdk_errors.ConnectionError) -> PayPalError:
    status = getattr(exc.response, "status_code", 0) or 0
    try:
        body = json.loads(exc.content or "{}")
    except ValueError:
        body = {}
    return _error_from_body(status, body if isinstance(body, dict) else {})


def _error_from_body(status: int, body: Any) -> PayPalError:
    body = body if isinstance(body, dict) else {}
    details = body.get("details") or [{}]
    issue = details[0].get("issue", "") if isinstance(details[0], dict) else ""
    name = str(body.get("name") or body.get("error") or "")
    cls = PayPalUnavailable if status >= 500 or status == 429 else PayPalError
    return cls(status, name, issue, str(body.get("debug_id") or ""))


def format_amount(cents: int) -> str:
    """Integer cents to PayPal's decimal string (USD-style currencies with two decimals)."""
    return str((Decimal(cents) / 100).quantize(Decimal("0.01")))


def parse_amount(value: str) -> int:
    return int((Decimal(value) * 100).to_integral_value())


def create_order(
    *,
    reference: str,
    amount_cents: int,
    currency: str,
    description: str,
    return_url: str,
    cancel_url: str,
    locale: str = "en-US",
    brand: str = "RelayGate",
) -> PayPalOrder:
    """Idempotent by `reference` (our order's public id): a repeat returns the same PayPal order."""
    body = {
        "intent": "CAPTURE",
        "purchase_units": [
            {
                "reference_id": reference,
                "custom_id": reference,
                "description": description[:127],
                "amount": {"currency_code": currency, "value": format_amount(amount_cents)},
            }
        ],
        "payment_source": {
            "paypal": {
                "experience_context": {
                    "brand_name": brand[:127],
                    "locale": locale,
                    "shipping_preference": "NO_SHIPPING",
                    "user_action": "PAY_NOW",
                    "return_url": return_url,
                    "cancel_url": cancel_url,
                }
            }
        },
    }
    return parse_order(_call("POST", "v2/checkout/orders", body, request_id=f"create-{reference}"))


def get_order(paypal_order_id: str) -> PayPalOrder:
    return parse_order(_call("GET", f"v2/checkout/orders/{_safe_id(paypal_order_id)}"))


def capture_order(paypal_order_id: str, attempt: int = 0) -> PayPalOrder:
    """Idempotent per attempt: the return page, the APPROVED webhook and the reconciler may all
    call it. `attempt` counts earlier declines; after one, the buyer picks another funding source
    and the capture must be a new request rather than a replay of the declined one."""
    order_id = _safe_id(paypal_order_id)
    request_id = f"capture-{order_id}" + (f"-{attempt}" if attempt else "")
    return parse_order(_call("POST", f"v2/checkout/orders/{order_id}/capture", {}, request_id=request_id))


def verify_webhook(headers: Mapping[str, str], raw_body: bytes, webhook_id: str) -> bool:
    """PayPal's postback check. The event is embedded byte for byte, because the signature covers
    the raw body and a re-serialised copy may differ. Raises PayPalUnavailable when PayPal cannot
    answer; returns False for a signature PayPal rejects or headers that are missing."""
    lower = {name.lower(): value for name, value in headers.items()}
    fields = {
        "auth_algo": lower.get("paypal-auth-algo"),
        "cert_url": lower.get("paypal-cert-url"),
        "transmission_id": lower.get("paypal-transmission-id"),
        "transmission_sig": lower.get("paypal-transmission-sig"),
        "transmission_time": lower.get("paypal-transmission-time"),
        "webhook_id": webhook_id,
    }
    if not all(fields.values()):
        return False
    body = _RawJSON(json.dumps(fields)[:-1] + ', "webhook_event": ' + raw_body.decode("utf-8") + "}")
    try:
        result = _call("POST", "v1/notifications/verify-webhook-signature", body)
    except PayPalUnavailable:
        raise
    except PayPalError as exc:
        log.warning("PayPal refused to verify a webhook: HTTP %s %s", exc.status, exc.name)
        return False
    return result.get("verification_status") == "SUCCESS"


def _safe_id(value: str) -> str:
    # Ids go into URL paths; PayPal ids are uppercase letters and digits.
    if not value or not value.replace("-", "").isalnum() or len(value) > 64:
        raise PayPalError(400, "INVALID_RESOURCE_ID")
    return value


def parse_order(data: dict[str, Any]) -> PayPalOrder:
    links = {link.get("rel"): link.get("href") for link in data.get("links") or () if isinstance(link, dict)}
    return PayPalOrder(
        id=str(data.get("id") or ""),
        status=str(data.get("status") or ""),
        approve_url=links.get("payer-action") or links.get("approve"),
        capture=_first_capture(data),
    )


def _first_capture(data: dict[str, Any]) -> Capture | None:
    for unit in data.get("purchase_units") or ():
        for capture in ((unit or {}).get("payments") or {}).get("captures") or ():
            return parse_capture(capture)
    return None


def parse_capture(capture: dict[str, Any]) -> Capture:
    amount = capture.get("amount") or {}
    return Capture(
        id=str(capture.get("id") or ""),
        status=str(capture.get("status") or ""),
        amount_cents=parse_amount(amount.get("value") or "0"),
        currency=str(amount.get("currency_code") or ""),
        reason=str((capture.get("status_details") or {}).get("reason") or ""),
    )
