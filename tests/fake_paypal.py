"""A fake PayPal REST API on loopback: OAuth, Orders v2, an approval page, webhook signing and
verification, refunds. Served by werkzeug's threaded server in a thread of the test process.

What it models, after protocols.md §3:
- client-credentials tokens (Basic auth checked); `expire_tokens()` makes every issued token answer 401
- PayPal-Request-Id: a repeated id returns the first answer; a second capture without it is a 422
- the approval page at /checkoutnow?token=ID (what a buyer's browser visits): "Pay" redirects to the
  order's return_url with ?token=ID&PayerID=..., "Cancel" to its cancel_url
- webhooks: `send_webhook(url, event)` posts with PAYPAL-TRANSMISSION-* headers; the verify endpoint
  says SUCCESS only for a transmission this fake sent, with the same event and webhook id
- scripted failures for the next capture: `fail_next_capture("INSTRUMENT_DECLINED" | "PENDING" | 500 ...)`
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"
WEBHOOK_ID = "WH-FAKE-0000000001"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pp_id(n: int = 17) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeState:
    lock: threading.RLock = field(default_factory=threading.RLock)
    tokens: set[str] = field(default_factory=set)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotent: dict[str, tuple[int, Any]] = field(default_factory=dict)
    transmissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    capture_failures: deque[Any] = field(default_factory=deque)
    requests: list[Seen] = field(default_factory=list)
    always_401: bool = False
    token_fetches: int = 0
    delay: float = 0.0


class FakePayPal:
    def __init__(self) -> None:
        self.state = FakeState()
        self.base_url = ""

    # -- test helpers --------------------------------------------------------------------------
    def reset(self) -> None:
        self.state = FakeState()

    def expire_tokens(self) -> None:
        with self.state.lock:
            self.state.tokens.clear()

    def reject_all_tokens(self, value: bool = True) -> None:
        self.state.always_401 = value

    def fail_next_capture(self, how: Any) -> None:
        self.state.capture_failures.append(how)

    def order(self, order_id: str) -> dict[str, Any]:
        return self.state.orders[order_id]

    def approve(self, order_id: str) -> str:
        """The buyer approves on PayPal; returns the URL PayPal sends the browser back to."""
        with self.state.lock:
            order = self.state.orders[order_id]
            order["status"] = "APPROVED"
            order["payer_id"] = order.get("payer_id") or _pp_id(13)
            return _with_query(order["return_url"], token=order_id, PayerID=order["payer_id"])

    def cancel_url(self, order_id: str) -> str:
        return _with_query(self.state.orders[order_id]["cancel_url"], token=order_id)

    def calls(self, path_part: str) -> list[Seen]:
        return [seen for seen in self.state.requests if path_part in seen.path]

    def capture_without_return(self, order_id: str, status: str = "COMPLETED") -> dict[str, Any]:
        """The buyer paid but never came back (closed the tab): PayPal has the capture, we do not."""
        self.approve(order_id)
        with self.state.lock:
            return self._capture(self.state.orders[order_id], status)

    def refund(self, capture_id: str, amount: str | None = None) -> dict[str, Any]:
        """A refund resource for the capture, as in PAYMENT.CAPTURE.REFUNDED."""
        order = next(o for o in self.state.orders.values() if o.get("capture", {}).get("id") == capture_id)
        value = amount or order["amount"]["value"]
        return {
            "id": _pp_id(),
            "status": "COMPLETED",
            "amount": {"currency_code": order["amount"]["currency_code"], "value": value},
            "custom_id": order["custom_id"],
            "create_time": _now(),
            "links": [
                {"rel": "self", "href": f"{self.base_url}/v2/payments/refunds/X", "method": "GET"},
                {"rel": "up", "href": f"{self.base_url}/v2/payments/captures/{capture_id}", "method": "GET"},
            ],
        }

    def event(self, event_type: str, resource: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        return {
            "id": event_id or f"WH-{_pp_id(8)}-{_pp_id(17)}",
            "event_version": "1.0",
            "create_time": _now(),
            "resource_type": "capture" if event_type.startswith("PAYMENT.CAPTURE") else "checkout-order",
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": event_type.lower().replace(".", " "),
            "resource": resource,
            "links": [],
        }

    def send_webhook(
        self, url: str, event: dict[str, Any], *, tamper: bool = False, webhook_id: str = WEBHOOK_ID
    ) -> requests.Response:
        """POST the event as PayPal would. `tamper` changes the body after signing (a forgery)."""
        raw = json.dumps(event, separators=(",", ":")).encode()
        headers = self.sign(raw, webhook_id)
        if tamper:
            forged = json.loads(raw)
            forged["resource"]["amount"] = {"currency_code": "USD", "value": "999.00"}
            raw = json.dumps(forged).encode()
        return requests.post(url, data=raw, headers={"Content-Type": "application/json", **headers}, timeout=30)

    def sign(self, raw: bytes, webhook_id: str = WEBHOOK_ID) -> dict[str, str]:
        transmission_id = str(uuid.uuid4())
        transmission_time = _now()
        signature = base64.b64encode(
            hashlib.sha256(f"{transmission_id}|{transmission_time}|{webhook_id}|{raw!r}".encode()).digest()
        ).decode()
        with self.state.lock:
            self.state.transmissions[transmission_id] = {
                "sig": signature,
                "event": json.loads(raw),
                "webhook_id": webhook_id,
            }
        return {
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": transmission_time,
            "PAYPAL-TRANSMISSION-SIG": signature,
            "PAYPAL-CERT-URL": "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594",
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        }

    # -- WSGI ------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        body = _json_body(request)
        with self.state.lock:
            self.state.requests.append(Seen(request.method, path, dict(request.headers), body))
        if self.state.delay:
            time.sleep(self.state.delay)  # a PayPal that hangs: our timeout must fire
        if path == "/v1/oauth2/token":
            return self._token(request)
        if path.startswith("/checkoutnow"):
            return self._approval_page(request)
        if not self._authorised(request):
            return _json({"error": "invalid_token", "error_description": "Token signature verification failed"}, 401)
        request_id = request.headers.get("PayPal-Request-Id")
        if request_id and request_id in self.state.idempotent:
            status, payload = self.state.idempotent[request_id]
            return _json(payload, status)
        status, payload = self._route(request, path, body)
        if request_id and status < 500:
            self.state.idempotent[request_id] = (status, payload)
        return _json(payload, status)

    def _route(self, request: Request, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        with self.state.lock:
            if path == "/v2/checkout/orders" and request.method == "POST":
                return self._create(body)
            if parts[:3] == ["v2", "checkout", "orders"] and len(parts) == 4 and request.method == "GET":
                order = self.state.orders.get(parts[3])
                return (200, self._view(order)) if order else _not_found()
            if parts[:3] == ["v2", "checkout", "orders"] and len(parts) == 5 and parts[4] == "capture":
                return self._capture_request(parts[3])
            if path == "/v1/notifications/verify-webhook-signature":
                return self._verify(body)
        return _not_found()

    def _token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return _json({"error": "invalid_client", "error_description": "Client Authentication failed"}, 401)
        token = f"A21AA{secrets.token_hex(16)}"
        with self.state.lock:
            self.state.tokens.add(token)
            self.state.token_fetches += 1
        return _json({"scope": "openid", "access_token": token, "token_type": "Bearer", "expires_in": 32400}, 200)

    def _authorised(self, request: Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return not self.state.always_401 and auth.startswith("Bearer ") and auth[7:] in self.state.tokens

    def _create(self, body: Any) -> tuple[int, Any]:
        unit = (body or {}).get("purchase_units", [{}])[0]
        context = body.get("payment_source", {}).get("paypal", {}).get("experience_context", {})
        amount = unit.get("amount") or {}
        if not amount.get("value") or not context.get("return_url"):
            return 400, {"name": "INVALID_REQUEST", "details": [{"issue": "MISSING_REQUIRED_PARAMETER"}]}
        order_id = _pp_id()
        self.state.orders[order_id] = {
            "id": order_id,
            "status": "PAYER_ACTION_REQUIRED",
            "amount": amount,
            "custom_id": unit.get("custom_id"),
            "description": unit.get("description"),
            "return_url": context["return_url"],
            "cancel_url": context["cancel_url"],
            "create_time": _now(),
        }
        return 200, self._view(self.state.orders[order_id])

    def _view(self, order: dict[str, Any]) -> dict[str, Any]:
        unit: dict[str, Any] = {"reference_id": order["custom_id"], "amount": order["amount"]}
        if order.get("capture"):
            unit["payments"] = {"captures": [order["capture"]]}
        return {
            "id": order["id"],
            "status": order["status"],
            "purchase_units": [unit],
            "links": [
                {"rel": "self", "href": f"{self.base_url}/v2/checkout/orders/{order['id']}", "method": "GET"},
                {"rel": "payer-action", "href": f"{self.base_url}/checkoutnow?token={order['id']}", "method": "GET"},
            ],
        }

    def _capture_request(self, order_id: str) -> tuple[int, Any]:
        order = self.state.orders.get(order_id)
        if order is None:
            return _not_found()
        if self.state.capture_failures:
            how = self.state.capture_failures.popleft()
            if isinstance(how, int):
                return how, {"name": "INTERNAL_SERVER_ERROR", "message": "An internal server error occurred."}
            if how == "INSTRUMENT_DECLINED":
                return 422, _unprocessable("INSTRUMENT_DECLINED")
            return 201, self._capture(order, how)
        if order.get("capture"):
            return 422, _unprocessable("ORDER_ALREADY_CAPTURED")
        if order["status"] != "APPROVED":
            return 422, _unprocessable("ORDER_NOT_APPROVED")
        return 201, self._capture(order, "COMPLETED")

    def _capture(self, order: dict[str, Any], status: str) -> dict[str, Any]:
        capture = {
            "id": _pp_id(),
            "status": status,
            "amount": order["amount"],
            "custom_id": order["custom_id"],
            "final_capture": True,
            "create_time": _now(),
            "supplementary_data": {"related_ids": {"order_id": order["id"]}},
        }
        if status == "PENDING":
            capture["status_details"] = {"reason": "PENDING_REVIEW"}
        order["capture"] = capture
        order["status"] = "COMPLETED" if status in ("COMPLETED", "PENDING") else order["status"]
        return self._view(order)

    def complete_pending(self, order_id: str) -> dict[str, Any]:
        """PayPal finishes reviewing a pending capture; returns the capture resource."""
        with self.state.lock:
            capture = self.state.orders[order_id]["capture"]
            capture["status"] = "COMPLETED"
            capture.pop("status_details", None)
            return dict(capture)

    def _verify(self, body: Any) -> tuple[int, Any]:
        sent = self.state.transmissions.get((body or {}).get("transmission_id", ""))
        ok = (
            sent is not None
            and body.get("transmission_sig") == sent["sig"]
            and body.get("webhook_id") == sent["webhook_id"]
            and body.get("webhook_event") == sent["event"]
        )
        return 200, {"verification_status": "SUCCESS" if ok else "FAILURE"}

    def _approval_page(self, request: Request) -> Response:
        order_id = request.values.get("token", "")
        order = self.state.orders.get(order_id)
        if order is None:
            return Response("unknown order", status=404)
        if request.method == "POST":
            if request.form.get("action") == "cancel":
                return _redirect(self.cancel_url(order_id))
            return _redirect(self.approve(order_id))
        html = f"""<!doctype html><html><head><title>PayPal (fake)</title></head><body>
<h1>PayPal</h1><p>Pay {order["amount"]["value"]} {order["amount"]["currency_code"]}</p>
<form method="post" action="/checkoutnow?token={order_id}">
<button name="action" value="pay" id="pay">Pay now</button>
<button name="action" value="cancel" id="cancel">Cancel and return</button></form></body></html>"""
        return Response(html, mimetype="text/html")


def _with_query(url: str, **params: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def _json_body(request: Request) -> Any:
    raw = request.get_data(cache=True)
    if not raw or request.mimetype != "application/json":
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _json(payload: Any, status: int) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def _redirect(url: str) -> Response:
    return Response("", status=302, headers={"Location": url})


def _not_found() -> tuple[int, Any]:
    return 404, {"name": "RESOURCE_NOT_FOUND", "details": [{"issue": "INVALID_RESOURCE_ID"}]}


def _unprocessable(issue: str) -> dict[str, Any]:
    return {
        "name": "UNPROCESSABLE_ENTITY",
        "message": "The requested action could not be performed, semantically incorrect, or failed business validation",
        "debug_id": secrets.token_hex(6),
        "details": [{"issue": issue}],
    }


class FakePayPalServer:
    def __init__(self, fake: FakePayPal | None = None) -> None:
        self.fake = fake or FakePayPal()
        self._server = make_server("127.0.0.1", 0, self.fake, threaded=True)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self.fake.base_url = self.base_url
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakePayPalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
