"""Balance look-ups with the key itself: GET /api/key, and the legacy billing endpoints that
one-api and new-api serve, so that clients which show a balance (ChatGPT-Next-Web and its kin) work.

None of them counts against the rate limit. The legacy endpoints speak dollars; RelayGate sells
tokens, so they show LEGACY_TOKENS_PER_USD tokens (default 1,000,000) as $1. As in new-api, the
hard limit is remaining + used, so the balance a client computes (hard_limit_usd - total_usage/100)
is exactly the tokens remaining; total_usage is the key's whole usage, whatever dates are asked.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from app.api import metering
from app.api.auth import current_key, presented_key
from app.api.errors import invalid_key
from app.billing import key_lookup, key_statement, pricing, quota, statements
from app.billing.errors import InvalidKey
from app.billing.key_format import hash_key, mask
from app.extensions import db, get_redis
from app.models import ApiKey
from app.models.multiplier import format_multiplier

bp = Blueprint("balance", __name__)


@bp.after_request
def _tag_response(response: Response) -> Response:
    response.headers.update(metering.rate_limit_headers())
    return response


@bp.get("/api/key")
def key_balance() -> Response:
    """The key's live balance and limits; also for a revoked or expired key, whose status says so."""
    row = _presented_row()
    report = statements.key_report(
        row, default_rpm=current_app.config["KEY_DEFAULT_RPM"], all_models=statements.enabled_models()
    )
    return _json(report)


@bp.get("/api/key/usage")
def key_usage() -> Response:
    """The key's statement as JSON: daily totals by model for `days` (1-90, default 30), its latest
    requests with the counts their charge came from, and what changed its quota."""
    row = _presented_row()
    days = key_statement.days_window(request.args.get("days"))
    lines, _ = key_statement.requests_page(row.id, 1)
    return _json(
        {
            "object": "key.usage",
            "days": days,
            "daily": [
                {"date": t.day.isoformat(), "model": t.model, "requests": t.requests, "billed_tokens": t.billed}
                for t in key_statement.daily_totals(row.id, days)
            ],
            "requests": [_request_json(line) for line in lines],
            "quota_changes": [
                {"time": key_statement.iso(c.at), "kind": c.kind, "tokens": c.tokens, "reference": c.reference}
                for c in key_statement.quota_changes(row.id)
            ],
        }
    )


def _request_json(line: key_statement.RequestLine) -> dict[str, Any]:
    c = line.charge
    return {
        "time": key_statement.iso(line.created_at),
        "model": line.model,
        "stream": line.stream,
        "outcome": line.outcome,
        "prompt_tokens": c.prompt,
        "prompt_cache_hit_tokens": c.cache_hit,
        "prompt_cache_miss_tokens": c.cache_miss,
        "completion_tokens": c.completion,
        "reasoning_tokens": c.reasoning,
        "billed_tokens": c.billed,
        # Exact decimals as strings ("0.02"): a JSON float could not carry them exactly.
        "prompt_multiplier": format_multiplier(c.multipliers.prompt),
        "cache_hit_multiplier": format_multiplier(c.multipliers.cache_hit),
        "completion_multiplier": format_multiplier(c.multipliers.completion),
        "billed_exact": c.exact.replace(",", ""),
        "formula": c.formula() if c.adds_up else None,
    }


@bp.get("/v1/dashboard/billing/subscription")
@bp.get("/dashboard/billing/subscription")
def billing_subscription() -> Response:
    key = current_key()
    metering.peek_rate_limit(key)
    balance = statements.live_balance(_row(key.id))
    limit = pricing.legacy_dollars(balance.remaining + balance.used, _tokens_per_dollar())
    return _json(
        {
            "object": "billing_subscription",
            "has_payment_method": True,
            "soft_limit_usd": limit,
            "hard_limit_usd": limit,
            "system_hard_limit_usd": limit,
            "access_until": int(key.expires_at or 0),
        }
    )


@bp.get("/v1/dashboard/billing/usage")
@bp.get("/dashboard/billing/usage")
def billing_usage() -> Response:
    key = current_key()
    metering.peek_rate_limit(key)
    balance = statements.live_balance(_row(key.id))
    # In cents, as OpenAI's old endpoint had it.
    return _json({"object": "list", "total_usage": pricing.legacy_dollars(balance.used * 100, _tokens_per_dollar())})


def _presented_row() -> ApiKey:
    presented = presented_key()
    if not presented:
        raise invalid_key(InvalidKey("missing"))
    config = current_app.config
    ttl = quota.key_cache_seconds(config)
    info, _ = key_lookup.lookup(get_redis(), config["BILLING_REDIS_PREFIX"], hash_key(presented), ttl)
    if info is None:
        raise invalid_key(InvalidKey("unknown"), mask(presented))
    return _row(info.id)


def _row(key_id: int) -> ApiKey:
    row = db.session.get(ApiKey, key_id)
    if row is None:
        raise invalid_key(InvalidKey("unknown"))
    return row


def _tokens_per_dollar() -> int:
    return current_app.config["LEGACY_TOKENS_PER_USD"]


def _json(payload: Any) -> Response:
    return Response(json.dumps(payload), mimetype="application/json")
