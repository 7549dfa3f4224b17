"""The one place that turns exceptions into OpenAI-shaped error responses.

Every error on /v1 is JSON `{"error": {"message", "type", "param", "code"}}`. The HTTP reason
phrase says the same in a few words, because SillyTavern shows only the reason phrase for
non-streaming errors.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, json, request
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from app.billing.errors import InvalidKey, QuotaExceeded, RateLimited
from app.relay.errors import UpstreamConnectError, UpstreamHTTPError, UpstreamTimeout
from app.site import site_url

log = logging.getLogger(__name__)

API_PREFIXES = ("/v1/", "/api/")
NO_V1_PATHS = (
    "/chat/completions",
    "/models",
    "/completions",
    "/embeddings",
    "/dashboard/billing/subscription",
    "/dashboard/billing/usage",
)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.reason = reason
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_response(self) -> Response:
        status = f"{self.status} {self.reason}" if self.reason else self.status
        response = Response(json.dumps(self.body()), status=status, mimetype="application/json")
        response.headers.update(self.headers)
        return response


_INVALID_KEY_MESSAGES = {
    "missing": "No API key provided. Put your key (it starts with sk-gateway-) in your client's API key field, "
    "or send it as 'Authorization: Bearer sk-gateway-...'.",
    "unknown": "Incorrect API key provided: {masked}. Check that you copied the whole key; "
    "you can look it up on the Check balance page.",
    "revoked": "This API key has been revoked. If you bought it, use the lost-key page to get a replacement.",
    "expired": "This API key expired on {detail}. Buy a new package or ask the administrator to extend it.",
}

_INVALID_KEY_REASONS = {
    "missing": "Missing API Key",
    "unknown": "Invalid API Key",
    "revoked": "API Key Revoked",
    "expired": "API Key Expired",
}


def invalid_key(exc: InvalidKey, masked: str = "") -> ApiError:
    message = _INVALID_KEY_MESSAGES[exc.reason].format(masked=masked or "***", detail=exc.detail)
    return ApiError(401, message, code="invalid_api_key", reason=_INVALID_KEY_REASONS[exc.reason])


def quota_exceeded(exc: QuotaExceeded) -> ApiError:
    buy = site_url() + "/topup"
    message = f"This key has used {exc.used:,} of its {exc.total:,} tokens; {exc.remaining:,} remain"
    if exc.held:
        running = "request" if exc.running == 1 else "requests"
        message += f", of which {exc.held:,} are held by {exc.running} {running} still running"
    message += (
        f". This request needs up to {exc.needed:,} (its prompt counted at one token per byte until the model "
        "has counted it, and one answer token)."
    )
    if exc.frees_up:
        message += " Try again when the running requests have finished, or top up at " + buy + "."
    else:
        message += f" Top up at {buy} to keep chatting, or send a shorter conversation."
    return ApiError(
        402,
        message,
        type_="insufficient_quota",
        code="insufficient_quota",
        reason="Tokens Held By Running Requests" if exc.frees_up else "Token Quota Used Up",
        # The SDKs retry a 402 only when told to: worth it only when running requests free tokens.
        headers={"x-should-retry": "true" if exc.frees_up else "false"},
    )


def rate_limited(exc: RateLimited) -> ApiError:
    if exc.kind == "concurrency":
        message = f"This key may run {exc.limit} requests at once; wait for one to finish and try again."
    else:
        message = (
            f"Rate limit reached: this key may send {exc.limit} requests per minute. Try again in {exc.retry_after} s."
        )
    return ApiError(
        429,
        message,
        type_="requests",
        code="rate_limit_exceeded",
        reason="Rate Limit Exceeded",
        headers={"Retry-After": str(exc.retry_after)},
    )


def upstream_error(exc: Exception) -> ApiError:
    return _pointing_to_status(_upstream_error(exc))


def _pointing_to_status(error: ApiError) -> ApiError:
    """The service's side failed: tell the buyer where to see whether it is them or everyone."""
    if error.type == "upstream_error" and error.status >= 500:
        error.message += f" Live status of every model: {site_url()}/status"
    return error


def _upstream_error(exc: Exception) -> ApiError:
    if isinstance(exc, UpstreamHTTPError):
        return _upstream_http(exc)
    if isinstance(exc, UpstreamTimeout):
        return ApiError(
            503,
            "The upstream model service did not answer in time. Please try again in a moment.",
            type_="upstream_error",
            code="upstream_unavailable",
            reason="Upstream Timed Out",
        )
    if isinstance(exc, UpstreamConnectError):
        return ApiError(
            502,
            "The upstream model service cannot be reached right now. Please try again in a moment.",
            type_="upstream_error",
            code="upstream_unavailable",
            reason="Upstream Unreachable",
        )
    raise exc


def pool_unavailable(busy: bool, retry_after: int) -> ApiError:
    """No target of the model could be tried: all busy with other requests, or all out of service."""
    if busy:
        message = "Every upstream account for this model is busy with other requests. Please try again in a moment."
        reason = "Upstream Capacity Full"
    else:
        message = "The upstream model service is unavailable right now. Please try again in a moment."
        reason = "Upstream Unavailable"
    error = ApiError(
        503,
        message,
        type_="upstream_error",
        code="upstream_unavailable",
        reason=reason,
        headers={"Retry-After": str(retry_after)},
    )
    return _pointing_to_status(error)


def _upstream_http(exc: UpstreamHTTPError) -> ApiError:
    status = exc.status
    if status in (400, 422):
        return ApiError(
            status,
            f"The model service rejected the request: {exc.message}",
            code="invalid_request_error",
            reason="Rejected By Upstream",
        )
    if status in (401, 402, 403):
        # Our own account's problem: the client's key is fine and they cannot fix it.
        log.error("upstream refused the gateway's account: HTTP %s: %s", status, exc.message)
        return ApiError(
            503,
            "The service is temporarily unavailable because of a problem with the gateway's upstream account. "
            "Please contact the administrator.",
            type_="upstream_error",
            code="upstream_unavailable",
            reason="Service Unavailable Contact Admin",
        )
    if status == 429:
        retry = exc.retry_after if exc.retry_after and exc.retry_after.isdigit() else "5"
        return ApiError(
            429,
            "The upstream model service is busy right now. Please try again in a few seconds.",
            type_="upstream_error",
            code="upstream_rate_limited",
            reason="Upstream Busy",
            headers={"Retry-After": retry},
        )
    if status == 503:
        return ApiError(
            503,
            "The upstream model service is overloaded. Please try again in a moment.",
            type_="upstream_error",
            code="upstream_unavailable",
            reason="Upstream Overloaded",
        )
    return ApiError(
        502,
        f"The upstream model service failed (HTTP {status}). Please try again in a moment.",
        type_="upstream_error",
        code="upstream_unavailable",
        reason="Upstream Error",
    )


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path in ("/v1", "/api") or path in NO_V1_PATHS


def _http_exception(exc: HTTPException) -> Response | HTTPException:
    if not is_api_path(request.path):
        return exc
    if exc.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
        return ApiError(
            413, f"The request body is larger than the {limit} MB limit.", reason="Request Too Large"
        ).to_response()
    if exc.code == 404:
        return ApiError(
            404,
            f"Unknown endpoint {request.path}. RelayGate serves /v1/chat/completions and /v1/models.",
            code="unknown_url",
            reason="Not Found",
        ).to_response()
    if exc.code == 405:
        return ApiError(
            405, f"{request.method} is not allowed on {request.path}.", reason="Method Not Allowed"
        ).to_response()
    return ApiError(exc.code or 500, exc.description or "Request failed.", reason=exc.name).to_response()


def _dependency_down(exc: Exception) -> Response | HTTPException:
    """Redis or the database cannot be reached: the gateway's side, and temporary."""
    log.warning("%s on %s: %s", type(exc).__name__, request.path, str(exc)[:200])
    if not is_api_path(request.path):
        return ServiceUnavailable("The service is briefly unavailable. Please try again in a minute.")
    return ApiError(
        503,
        "The gateway cannot reach its own database or cache right now. This is on our side and "
        "temporary; nothing was charged. Please try again in a moment.",
        type_="server_error",
        code="service_unavailable",
        reason="Gateway Temporarily Unavailable",
        headers={"Retry-After": "5"},
    ).to_response()


def _unexpected(exc: Exception) -> Response | HTTPException:
    if isinstance(exc, HTTPException):
        return _http_exception(exc)
    if isinstance(exc, RedisError | OperationalError):
        return _dependency_down(exc)
    log.exception("unhandled error on %s", request.path)
    if not is_api_path(request.path):
        return InternalServerError()
    return ApiError(
        500,
        "The gateway hit an internal error. Please try again; if it keeps happening, tell the administrator.",
        type_="server_error",
        code="internal_error",
        reason="Internal Error",
    ).to_response()


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, lambda exc: exc.to_response())
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(Exception, _unexpected)
