"""The OpenAI-compatible endpoints under /v1."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from app.api import metering
from app.api.auth import current_key
from app.api.chat_request import ChatRequest, parse_chat_request
from app.api.errors import ApiError, pool_unavailable, upstream_error
from app.billing.errors import Stale
from app.billing.key_lookup import KeyInfo
from app.billing.metering import Meter
from app.extensions import get_redis
from app.relay import failover, jsonbytes
from app.relay.completion import JsonRelay
from app.relay.demo import DemoResponse, is_demo
from app.relay.errors import ClientGone, UpstreamError
from app.relay.first_event import check_first_event
from app.relay.stream import CLIENT_CLOSED, DONE, TIMEOUT, UPSTREAM_ERROR, RelayOptions, StreamRelay
from app.relay.upstream import UpstreamTarget, backstop_timeout, build_body, open_upstream
from app.relay.watchdog import get_watchdog
from app.relay.watched_open import open_watching_client
from app.routing.catalog import mark_disabled
from app.routing.dispatch import PoolRequest, PoolSettings
from app.routing.pool import BreakerPolicy
from app.routing.routes import RouteInfo, TargetInfo

bp = Blueprint("api", __name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DECIDE_ATTEMPTS = 3  # a request decided on values that moved before its admission is decided again


@bp.after_request
def _tag_response(response: Response) -> Response:
    response.headers.update(metering.rate_limit_headers())  # x-request-id: app.logs, on every response
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
    key, route, chat, meter = _admit()
    try:
        return _relay(key, route, chat, meter)
    except BaseException:
        meter.release(500)  # whatever failed, no hold outlives the request (a no-op once settled)
        raise


def _admit() -> tuple[KeyInfo, RouteInfo, ChatRequest, Meter]:
    """The key, the parsed request, its route and its admission (rate limit + quota: one Redis trip).

    The first decision trusts this process's snapshot of the key; the admission script refuses it
    (Stale) when the key or the routes moved meanwhile, and the request is decided again on fresh
    reads."""
    body: bytes | None = None
    remembered = True
    for _ in range(DECIDE_ATTEMPTS):
        key = current_key(remembered=remembered)
        try:
            with metering.rate_limit_first(key, g.request_id):  # a bad request over the limit gets its 429
                if body is None:
                    body = request.get_data(cache=False)
                chat = parse_chat_request(body)
                route = _resolve_route(key, chat.model)
            return key, route, chat, metering.reserve(key, route, chat, g.request_id)
        except Stale:
            remembered = False
    raise ApiError(
        503,
        "This key's settings or the gateway's routes kept changing while the request was admitted. "
        "Nothing was charged; please try again.",
        type_="server_error",
        code="service_unavailable",
        reason="Gateway Busy",
        headers={"Retry-After": "1"},
    )


def _relay(key: KeyInfo, route: RouteInfo, chat: ChatRequest, meter: Meter) -> Response:
    pool, client_fd = _pool_request(route), _client_fd()
    try:
        target, answer = failover.first_answer(
            pool.targets(),
            lambda target, left: _attempt(key, chat, meter, client_fd, target, left),
            lambda target, exc: pool.failed(
                target, refused=failover.is_account_refused(exc), counts=failover.is_retryable(exc), reason=str(exc)
            ),
            _failover_policy(),
        )
    except BaseException as exc:
        pool.abandon()
        return _no_answer(exc, meter, pool.busy)
    pool.opened(target)
    meter.served_by(target.upstream_name, target.upstream_model)
    if chat.stream:
        relay = StreamRelay(
            answer,
            _relay_options(key, target, chat),
            get_watchdog(),
            client_fd,
            budget=meter,
            on_end=lambda relay: _stream_ended(meter, pool, target, relay),
        )
        return Response(relay, mimetype="text/event-stream", headers=SSE_HEADERS)
    relay, payload = answer
    pool.finished(target, failed=False)
    meter.settle(usage=relay.usage, outcome=DONE, delivered=relay.output_estimate, status_code=200)
    return Response(payload, mimetype="application/json")


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


def _pool_request(route: RouteInfo) -> PoolRequest:
    config = current_app.config
    settings = PoolSettings(
        breaker=BreakerPolicy(
            failures=config["POOL_BREAKER_FAILURES"],
            backoff=config["POOL_BREAKER_SECONDS"],
            max_backoff=max(600.0, config["POOL_BREAKER_SECONDS"]),
        ),
        lease_seconds=config["POOL_LEASE_SECONDS"],
        queue_seconds=config["POOL_QUEUE_SECONDS"],
        trial_seconds=config["RELAY_CONNECT_TIMEOUT"] + config["RELAY_HEADER_TIMEOUT"],
    )
    return PoolRequest(
        get_redis(),
        config["BILLING_REDIS_PREFIX"],
        route,
        g.request_id,
        settings,
        mark_disabled,
        epoch=g.get("pool_epoch"),
        states=current_app.extensions["pool_states"],
    )


def _failover_policy() -> failover.FailoverPolicy:
    config = current_app.config
    return failover.FailoverPolicy(
        max_attempts=max(1, config["POOL_MAX_ATTEMPTS"]),
        deadline=time.monotonic() + config["POOL_FAILOVER_SECONDS"],
    )


def _attempt(
    key: KeyInfo, chat: ChatRequest, meter: Meter, client_fd: int | None, target: TargetInfo, left: float
) -> Any:
    """One target: the open upstream stream (its first event checked), or, not streaming, the
    JsonRelay and the client's body. Raises UpstreamError, or ClientGone."""
    upstream_target = _upstream_target(target, left)
    body = build_body(chat.body, upstream_target, stream=chat.stream)
    body["max_tokens"] = meter.max_tokens  # whatever the client asked, never more than the balance pays
    if "max_completion_tokens" in body:
        body["max_completion_tokens"] = meter.max_tokens
    upstream = open_watching_client(_opener(target, upstream_target, body, chat.stream), client_fd, get_watchdog())
    if chat.stream:
        return upstream
    relay = JsonRelay(upstream, _relay_options(key, target, chat), get_watchdog(), client_fd)
    return relay, relay.run()


def _no_answer(exc: BaseException, meter: Meter, busy: bool) -> Response:
    """No target gave an answer: the hung-up client's 499, or the error for the last failure."""
    if isinstance(exc, ClientGone):
        meter.settle(usage=None, outcome=CLIENT_CLOSED, delivered=0, status_code=499)
        return Response(status=499)
    if isinstance(exc, failover.NoTargetTried):
        error = pool_unavailable(busy, max(1, math.ceil(current_app.config["POOL_QUEUE_SECONDS"])) if busy else 5)
    elif isinstance(exc, UpstreamError):
        error = upstream_error(exc)
    else:
        raise exc
    meter.release(error.status)  # nothing produced: nothing billed
    raise error from None


def _stream_ended(meter: Meter, pool: PoolRequest, target: TargetInfo, relay: StreamRelay) -> None:
    meter.settle_stream(relay)
    pool.finished(target, failed=relay.outcome in (UPSTREAM_ERROR, TIMEOUT))


def _upstream_target(target: TargetInfo, left: float) -> UpstreamTarget:
    config = current_app.config
    return UpstreamTarget(
        base_url=target.base_url,
        api_key=target.api_key or "",
        model=target.upstream_model,
        extra_body=target.extra_body,
        connect_timeout=min(config["RELAY_CONNECT_TIMEOUT"], left),
        header_timeout=min(config["RELAY_HEADER_TIMEOUT"], left),
        first_event_timeout=config["RELAY_FIRST_EVENT_TIMEOUT"],
        idle_timeout=config["RELAY_IDLE_TIMEOUT"],
        total_timeout=config["RELAY_NONSTREAM_TIMEOUT"],
    )


def _opener(target: TargetInfo, upstream: UpstreamTarget, body: dict[str, Any], stream: bool) -> Callable[[], Any]:
    """The upstream call as a closure over plain values: it runs outside the request's context."""
    if is_demo(target.base_url, target.api_key):
        return lambda: DemoResponse(body)
    payload = jsonbytes.dumps(body)
    pool = current_app.extensions["relay_pool"]
    if not stream:
        return lambda: open_upstream(pool, upstream, payload)
    backstop = backstop_timeout(upstream)
    return lambda: check_first_event(open_upstream(pool, upstream, payload), upstream.header_timeout, backstop)


def _relay_options(key: KeyInfo, target: TargetInfo, chat: ChatRequest) -> RelayOptions:
    config = current_app.config
    stream_options = chat.body.get("stream_options")
    return RelayOptions(
        public_model=chat.model,
        upstream_model=target.upstream_model,
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


def _model_object(route: RouteInfo) -> dict[str, Any]:
    return {"id": route.public_id, "object": "model", "created": 1745000000, "owned_by": route.owned_by}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")
