"""The OpenAI-compatible endpoints under /v1."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

from app.api import metering
from app.api.auth import current_key
from app.api.errors import ApiError, upstream_error
from app.billing.keys import KeyInfo
from app.billing.routes import RouteInfo
from app.extensions import get_redis
from app.relay.completion import ClientGone, JsonRelay
from app.relay.demo import DemoResponse, is_demo
from app.relay.errors import UpstreamError
from app.relay.stream import CLIENT_CLOSED, RelayOptions, StreamRelay
from app.relay.upstream import UpstreamTarget, build_body, open_upstream
from app.relay.usage import Usage
from app.relay.watchdog import get_watchdog

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
        body = _parse_chat_body()
        route = _resolve_route(key, body["model"])
    reservation = metering.reserve(key, route, body, g.request_id)  # rate limit + quota: one Redis trip
    stream = body.get("stream") is True
    upstream_body = build_body(body, _target(route), stream=stream)
    if reservation.max_tokens is not None:
        upstream_body["max_tokens"] = reservation.max_tokens
    settlement = metering.Settlement(
        g.request_id,
        key.id,
        route.public_id,
        route.upstream_model,
        stream,
        metering.multipliers_of(route),
        time.monotonic(),
    )
    try:
        upstream = _open(route, upstream_body)
    except UpstreamError as exc:
        error = upstream_error(exc)
        metering.release(reservation, settlement, error.status)  # nothing produced: nothing billed
        raise error from None
    options = _relay_options(key, route, body)
    if stream:
        relay = StreamRelay(upstream, options, get_watchdog(), _client_fd())
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        return Response(_stream(app, relay, reservation, settlement), mimetype="text/event-stream", headers=SSE_HEADERS)
    return _complete(JsonRelay(upstream, options, get_watchdog(), _client_fd()), reservation, settlement)


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


def _parse_chat_body() -> dict[str, Any]:
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.", reason="Invalid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", reason="Invalid Request")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(
            400,
            "Missing 'model': set it to a model id such as deepseek-v4-flash.",
            param="model",
            reason="Missing Model",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400,
            "Missing 'messages': send a non-empty list of chat messages.",
            param="messages",
            reason="Missing Messages",
        )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ApiError(400, "'stream' must be true or false.", param="stream", reason="Invalid Stream Flag")
    return body


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
            f"The model '{model}' does not exist or this key may not use it. "
            f"Use one of: {', '.join(allowed) or 'none'} (the bare id, without a provider prefix).",
            code="model_not_found",
            param="model",
            reason="Model Not Found",
        )
    return route


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


def _open(route: RouteInfo, upstream_body: dict[str, Any]) -> Any:
    if is_demo(route.base_url, route.api_key):
        return DemoResponse(upstream_body)
    payload = json.dumps(upstream_body, ensure_ascii=False, separators=(",", ":")).encode()
    return open_upstream(current_app.extensions["relay_pool"], _target(route), payload)


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


def _stream(
    app: Flask, relay: StreamRelay, reservation: metering.Reservation, settlement: metering.Settlement
) -> Iterator[bytes]:
    """Runs after the view returned: it gets plain values only, and settles however the stream ends."""
    try:
        yield from relay
    finally:
        with app.app_context():
            metering.settle(
                reservation,
                settlement,
                usage=relay.usage,
                outcome=relay.outcome,
                output_events=relay.output_events,
                status_code=200,
                first_output_at=relay.first_output_at,
            )


def _complete(relay: JsonRelay, reservation: metering.Reservation, settlement: metering.Settlement) -> Response:
    try:
        payload = relay.run()
    except ClientGone:
        _settle_json(relay, reservation, settlement, 499)
        return Response(status=499)
    except UpstreamError as exc:
        error = upstream_error(exc)
        _settle_json(relay, reservation, settlement, error.status)
        raise error from None
    _settle_json(relay, reservation, settlement, 200)
    return Response(payload, mimetype="application/json")


def _settle_json(
    relay: JsonRelay, reservation: metering.Reservation, settlement: metering.Settlement, status: int
) -> None:
    usage = relay.usage
    if usage is None and relay.outcome == CLIENT_CLOSED:
        usage = Usage(prompt_tokens=reservation.prompt_estimate)  # the upstream read the prompt before we hung up
    metering.settle(
        reservation,
        settlement,
        usage=usage,
        outcome=relay.outcome,
        output_events=0,
        status_code=status,
        first_output_at=None,
    )


def _model_object(route: RouteInfo) -> dict[str, Any]:
    return {"id": route.public_id, "object": "model", "created": 1745000000, "owned_by": route.owned_by}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")
