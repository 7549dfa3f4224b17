"""The OpenAI-compatible endpoints under /v1."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from app.api import metering
from app.api.auth import current_key
from app.api.chat_request import ChatRequest, parse_chat_request
from app.api.errors import ApiError, upstream_error
from app.billing.key_lookup import KeyInfo
from app.billing.metering import Meter
from app.extensions import get_redis
from app.relay.completion import JsonRelay
from app.relay.demo import DemoResponse, is_demo
from app.relay.errors import ClientGone, UpstreamError
from app.relay.stream import CLIENT_CLOSED, DONE, RelayOptions, StreamRelay
from app.relay.upstream import UpstreamTarget, build_body, open_upstream
from app.relay.watchdog import get_watchdog
from app.relay.watched_open import open_watching_client
from app.routing.routes import RouteInfo

bp = Blueprint("api", __name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@bp.before_request
def _assign_request_id() -> None:
    g.request_id = uuid.uuid4().hex


@bp.after_request
def _tag_response(response: Response) -> Response:
    response.headers["x-request-id"] = g.get("request_id", "")
    response.headers.update(metering.rate_limit_headers())
    return response


@bp.get("/v1/models")
def list_models() -> Response:
    key = current_key()
    metering.peek_rate_limit(key)  # SillyTavern lists models on every connect: reported, never counted
    data = [_model_object(route) for route in _routes().values() if key.allows(route.public_id)]
    return _json({"object": "list", "data": sorted(data, key=lambda m: m["id"])})


@bp.get("/v1/models/<path:model_id>")
def retrieve_model(model_id: str) -> Response:
    key = current_key()
    metering.peek_rate_limit(key)
    return _json(_model_object(_resolve_route(key, model_id)))


@bp.post("/v1/chat/completions")
def chat_completions() -> Response:
    key = current_key()
    with metering.rate_limit_first(key, g.request_id):  # a bad request over the limit still gets its 429
        chat = parse_chat_request(request.get_data(cache=False))
        route = _resolve_route(key, chat.model)
    meter = metering.reserve(key, route, chat, g.request_id)  # rate limit + quota: one Redis trip
    try:
        return _relay(key, route, chat, meter)
    except BaseException:
        meter.release(500)  # whatever failed, no hold outlives the request (a no-op once settled)
        raise


def _relay(key: KeyInfo, route: RouteInfo, chat: ChatRequest, meter: Meter) -> Response:
    upstream_body = build_body(chat.body, _target(route), stream=chat.stream)
    upstream_body["max_tokens"] = meter.max_tokens  # whatever the client asked, never more than the balance pays
    if "max_completion_tokens" in upstream_body:
        upstream_body["max_completion_tokens"] = meter.max_tokens
    client_fd = _client_fd()
    try:
        upstream = open_watching_client(_opener(route, upstream_body), client_fd, get_watchdog())
    except ClientGone:
        meter.settle(usage=None, outcome=CLIENT_CLOSED, delivered=0, status_code=499)
        return Response(status=499)
    except UpstreamError as exc:
        error = upstream_error(exc)
        meter.release(error.status)  # nothing produced: nothing billed
        raise error from None
    options = _relay_options(key, route, chat.body)
    if chat.stream:
        relay = StreamRelay(upstream, options, get_watchdog(), client_fd, budget=meter, on_end=meter.settle_stream)
        return Response(relay, mimetype="text/event-stream", headers=SSE_HEADERS)
    return _complete(JsonRelay(upstream, options, get_watchdog(), client_fd), meter)


@bp.route("/v1/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown_v1(rest: str) -> Response:
    if rest == "chat/completions":
        raise ApiError(
            405,
            f"{request.method} is not allowed here: send a POST to /v1/chat/completions.",
            reason="Method Not Allowed",
        )
    raise ApiError(
        404,
        f"Unknown endpoint /v1/{rest}. RelayGate serves /v1/chat/completions and /v1/models.",
        code="unknown_url",
        reason="Unknown Endpoint",
    )


@bp.route("/chat/completions", methods=["GET", "POST"])
@bp.route("/models", methods=["GET", "POST"])
@bp.route("/completions", methods=["GET", "POST"])
@bp.route("/embeddings", methods=["GET", "POST"])
def missing_v1() -> Response:
    base = request.host_url.rstrip("/")
    raise ApiError(
        404,
        f"Wrong base URL: {request.path} is not an API endpoint. Set your client's base URL to {base}/v1 "
        f"(it must end with /v1), so that requests go to {base}/v1{request.path}.",
        code="base_url_missing_v1",
        reason="Base URL Must End With /v1",
    )


# -- steps ----------------------------------------------------------------------------------------


def _routes() -> dict[str, RouteInfo]:
    config = current_app.config
    return current_app.extensions["routes"].get(
        get_redis(),
        config["BILLING_REDIS_PREFIX"],
        config["SECRET_KEY"],
        config["UPSTREAM_API_KEY"],
        g.get("routes_generation"),
    )


def _resolve_route(key: KeyInfo, model: str) -> RouteInfo:
    routes = _routes()
    route = routes.get(model)
    if route is None or not key.allows(model):
        allowed = sorted(m for m in routes if key.allows(m))
        raise ApiError(
            404,
            f"The model '{_clip(model)}' does not exist or this key may not use it. "
            f"Use one of: {', '.join(allowed) or 'none'} (the bare id, without a provider prefix).",
            code="model_not_found",
            param="model",
            reason="Model Not Found",
        )
    return route


def _clip(value: str, limit: int = 100) -> str:
    """A client's value as echoed in an error: never more than a line of it."""
    return value if len(value) <= limit else value[:limit] + "…"


def _target(route: RouteInfo) -> UpstreamTarget:
    config = current_app.config
    return UpstreamTarget(
        base_url=route.base_url,
        api_key=route.api_key or "",
        model=route.upstream_model,
        extra_body=route.extra_body,
        connect_timeout=config["RELAY_CONNECT_TIMEOUT"],
        first_event_timeout=config["RELAY_FIRST_EVENT_TIMEOUT"],
        idle_timeout=config["RELAY_IDLE_TIMEOUT"],
        total_timeout=config["RELAY_NONSTREAM_TIMEOUT"],
    )


def _opener(route: RouteInfo, upstream_body: dict[str, Any]) -> Callable[[], Any]:
    """The upstream call as a closure over plain values: it runs outside the request's context."""
    if is_demo(route.base_url, route.api_key):
        return lambda: DemoResponse(upstream_body)
    payload = json.dumps(upstream_body, ensure_ascii=False, separators=(",", ":")).encode()
    pool, target = current_app.extensions["relay_pool"], _target(route)
    return lambda: open_upstream(pool, target, payload)


def _relay_options(key: KeyInfo, route: RouteInfo, body: dict[str, Any]) -> RelayOptions:
    config = current_app.config
    stream_options = body.get("stream_options")
    return RelayOptions(
        public_model=route.public_id,
        upstream_model=route.upstream_model,
        strip_reasoning=not key.reasoning_passthrough,
        include_usage=isinstance(stream_options, dict) and stream_options.get("include_usage") is True,
        keepalive_interval=config["RELAY_KEEPALIVE_INTERVAL"],
        first_event_timeout=config["RELAY_FIRST_EVENT_TIMEOUT"],
        idle_timeout=config["RELAY_IDLE_TIMEOUT"],
        total_timeout=config["RELAY_NONSTREAM_TIMEOUT"],
    )


def _client_fd() -> int | None:
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    try:
        return sock.fileno() if sock is not None else None
    except OSError:
        return None


def _complete(relay: JsonRelay, meter: Meter) -> Response:
    try:
        payload = relay.run()
    except ClientGone:
        meter.settle(usage=None, outcome=CLIENT_CLOSED, delivered=0, status_code=499)
        return Response(status=499)
    except UpstreamError as exc:
        error = upstream_error(exc)
        meter.settle(usage=None, outcome=relay.outcome, delivered=0, status_code=error.status)
        raise error from None
    meter.settle(usage=relay.usage, outcome=DONE, delivered=relay.output_estimate, status_code=200)
    return Response(payload, mimetype="application/json")


def _model_object(route: RouteInfo) -> dict[str, Any]:
    return {"id": route.public_id, "object": "model", "created": 1745000000, "owned_by": route.owned_by}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")
