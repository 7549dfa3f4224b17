"""Quota, rate limit and settlement through the real stack: client -> /v1 -> fake DeepSeek -> Redis -> SQLite."""

from __future__ import annotations

import itertools
import math
import threading
import time
from fractions import Fraction

import pytest
import requests

from app.billing import key_lifecycle, key_statement, quota, reconcile, tokenizer
from app.extensions import db, get_redis
from app.models import ApiKey, ModelRoute, UsageRecord
from app.models.multiplier import UNIT, parse_multiplier
from app.relay.bounds import prompt_token_bound
from app.relay.usage import estimate_prompt_tokens
from app.routing import catalog
from tests.api.helpers import chat_body, open_raw_stream, post_stream, read_sse
from tests.conftest import wait_until
from tests.fake_deepseek import prompt_tokens_of

P = "rg"


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def post(client, key, body):
    response = client.post("/v1/chat/completions", json=body, headers=auth(key))
    response.get_data()  # a stream settles when it has been read to the end
    return response


def live(redis, key_id):
    return {k.decode(): int(v) for k, v in redis.hgetall(quota.acct_key(P, key_id)).items()}


def live_used(redis, key_id):
    state = live(redis, key_id)
    return state.get("synced", 0) + state.get("pending", 0)


def rows():
    db.session.expire_all()
    return {r.request_id: r for r in db.session.execute(db.select(UsageRecord)).scalars()}


def sql_used(key_id):
    db.session.expire_all()
    return db.session.get(ApiKey, key_id).tokens_used


def test_billing_is_exact_over_many_requests(app, client, redis, make_key, fake):
    row, key = make_key(1_000_000)
    expected, cases = 0, []
    for i in range(24):
        model = ("deepseek-v4-flash", "deepseek-v4-pro")[i % 2]
        body = chat_body(
            stream=i % 3 == 0, model=model, content="word " * i, fake={"tokens": i % 7, "reasoning": i % 4}
        )
        assert post(client, key, body).status_code == 200
        multiplier = 1 if model == "deepseek-v4-flash" else 2
        billed = multiplier * (prompt_tokens_of(body) + i % 7 + i % 4)
        expected += billed
        cases.append((body, billed))
    assert live_used(redis, row.id) == expected  # live, before any SQL write
    assert live(redis, row.id)["held"] == 0
    reconcile.drain(redis, P, batch_size=10)
    records = rows()
    assert len(records) == 24
    assert sorted(r.billed_tokens for r in records.values()) == sorted(b for _, b in cases)
    assert sql_used(row.id) == expected == live_used(redis, row.id)
    assert {r.outcome for r in records.values()} == {"done"}
    reasoning = [r for r in records.values() if r.reasoning_tokens]
    assert reasoning and all(r.completion_tokens >= r.reasoning_tokens for r in reasoning)


def test_multipliers_changed_by_an_admin_apply_to_the_next_request(app, client, redis, make_key, fake):
    row, key = make_key(1_000_000)
    catalog.set_route("deepseek-v4-flash", prompt_multiplier=3 * UNIT, completion_multiplier=5 * UNIT)
    body = chat_body(fake={"tokens": 4})
    post(client, key, body)
    assert live_used(redis, row.id) == 3 * prompt_tokens_of(body) + 5 * 4


def test_max_tokens_is_capped_to_what_the_balance_can_pay_for(app, client, redis, make_key, fake):
    body = chat_body(fake={"tokens": 50})
    row, key = make_key(prompt_token_bound(body) + 20)
    assert post(client, key, body).status_code == 200
    assert fake.requests[-1].body["max_tokens"] == 20
    assert live_used(redis, row.id) == prompt_tokens_of(body) + 20 <= row.tokens_quota


def test_max_tokens_is_always_sent_and_a_client_value_within_the_balance_stands(app, client, make_key, fake):
    _, key = make_key(1_000_000)
    post(client, key, chat_body())
    assert fake.requests[-1].body["max_tokens"] == app.config["QUOTA_COMPLETION_ALLOWANCE"]
    post(client, key, chat_body(max_tokens=77))
    assert fake.requests[-1].body["max_tokens"] == 77
    post(client, key, chat_body(max_completion_tokens=66, max_tokens=900))
    assert (fake.requests[-1].body["max_tokens"], fake.requests[-1].body["max_completion_tokens"]) == (66, 66)


def test_out_of_tokens_is_402_insufficient_quota(app, client, redis, make_key, fake):
    body = chat_body(fake={"tokens": 5})
    _, key = make_key(tokenizer.prompt_token_bound(body, 10**6) + 5)  # room for one request, counted tightly
    assert post(client, key, body).status_code == 200
    response = post(client, key, body)
    assert response.status_code == 402
    assert response.status == "402 Token Quota Used Up"
    assert response.headers["x-should-retry"] == "false"
    error = response.get_json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "/topup" in error["message"]
    assert len(fake.requests) == 1  # the upstream never saw the refused request


def test_top_up_takes_effect_on_the_next_request(app, client, make_key, fake):
    row, key = make_key(5)
    assert post(client, key, chat_body()).status_code == 402
    key_lifecycle.topup_key(row, 1000)
    assert post(client, key, chat_body()).status_code == 200


def test_upstream_failure_before_output_bills_nothing_and_frees_the_hold(app, client, redis, make_key, fake):
    row, key = make_key(1000)
    for stream in (False, True):
        response = post(client, key, chat_body(stream=stream, fake={"status": 503}))
        assert response.status_code == 503
    state = live(redis, row.id)
    assert (state.get("held"), state.get("pending", 0)) == (0, 0)
    reconcile.drain(redis, P, batch_size=10)
    assert {(r.outcome, r.billed_tokens, r.status_code) for r in rows().values()} == {("upstream_error", 0, 503)}
    assert len(rows()) == 2


def test_rate_limit_counts_chat_not_models_and_sets_headers(app, client, make_key, fake):
    _, key = make_key(1_000_000, rpm=3)
    for _ in range(5):
        response = client.get("/v1/models", headers=auth(key))
        assert response.headers["x-ratelimit-remaining-requests"] == "3"
    seen = []
    for _ in range(3):
        response = post(client, key, chat_body())
        seen.append((response.status_code, response.headers["x-ratelimit-remaining-requests"]))
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert seen == [(200, "2"), (200, "1"), (200, "0")]
    limited = post(client, key, chat_body())
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "rate_limit_exceeded"
    assert 59 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    # Even a malformed request gets the 429 once the key is over its limit.
    assert client.post("/v1/chat/completions", data="{", headers=auth(key)).status_code == 429
    assert client.get("/v1/models", headers=auth(key)).status_code == 200
    assert len(fake.requests) == 3


def test_invalid_requests_count_against_the_rate_limit(app, client, make_key, fake):
    _, key = make_key(1_000_000, rpm=2)
    bad = client.post("/v1/chat/completions", data="{", headers=auth(key))
    assert bad.status_code == 400
    assert bad.headers["x-ratelimit-remaining-requests"] == "1"
    missing = post(client, key, chat_body(model="no-such-model"))
    assert (missing.status_code, missing.headers["x-ratelimit-remaining-requests"]) == (404, "0")
    assert post(client, key, chat_body()).status_code == 429


def test_quota_refusals_carry_the_rate_limit_headers(app, client, make_key):
    _, key = make_key(1, rpm=10)
    for remaining in ("9", "8"):  # counted once, although admission was asked twice (bytes, then counted)
        response = post(client, key, chat_body())
        assert response.status_code == 402
        assert response.headers["x-ratelimit-remaining-requests"] == remaining


def test_a_request_admitted_on_its_counted_prompt_is_counted_once_by_the_rate_limit(app, client, make_key, fake):
    body = chat_body()
    _, key = make_key(tokenizer.prompt_token_bound(body, 10**6) + 50, rpm=1)
    response = post(client, key, body)  # the byte bound does not fit, the counted prompt does
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert post(client, key, body).status_code == 429


def test_concurrency_cap_refuses_while_a_stream_runs(app, live_server, redis, make_key, fake):
    row, key = make_key(1_000_000, max_concurrent=1)
    slow = post_stream(live_server.url, key, chat_body(stream=True, fake={"tokens": 8, "delay": 0.05}))
    assert slow.status_code == 200
    refused = requests.post(f"{live_server.url}/v1/chat/completions", json=chat_body(), headers=auth(key), timeout=10)
    assert refused.status_code == 429
    assert "at once" in refused.json()["error"]["message"]
    read_sse(slow)  # the stream ends, and with it its slot
    wait_until(lambda: live(redis, row.id).get("held") == 0)
    ok = requests.post(f"{live_server.url}/v1/chat/completions", json=chat_body(), headers=auth(key), timeout=10)
    assert ok.status_code == 200


def test_a_client_that_hangs_up_mid_stream_pays_for_what_was_generated(app, live_server, redis, make_key, fake):
    row, key = make_key(1_000_000)
    body = chat_body(stream=True, fake={"tokens": 400, "delay": 0.02})
    sock, _ = open_raw_stream(live_server.port, key, body, b"data: ", 10)
    sock.close()
    wait_until(lambda: live(redis, row.id).get("pending"), timeout=5)
    reconcile.drain(redis, P, batch_size=10)
    (record,) = rows().values()
    assert record.outcome == "client_closed"
    assert record.prompt_tokens == estimate_prompt_tokens(body)  # no usage chunk came: our estimate
    assert 10 <= record.completion_tokens < 400
    assert record.billed_tokens == record.prompt_tokens + record.completion_tokens == sql_used(row.id)
    assert live(redis, row.id)["held"] == 0


def test_settlement_survives_a_redis_flush_mid_stream(app, live_server, redis, make_key, fake):
    row, key = make_key(1_000_000)
    stream = post_stream(live_server.url, key, chat_body(stream=True, fake={"tokens": 6, "delay": 0.05}))
    chunks = stream.iter_content(chunk_size=None)
    next(chunks)  # the request was admitted and holds its reservation
    redis.flushdb()
    assert b"[DONE]" in b"".join(chunks)
    body = chat_body(stream=True, fake={"tokens": 6})
    wait_until(lambda: live(redis, row.id).get("pending") == prompt_tokens_of(body) + 6)
    reconcile.drain(redis, P, batch_size=10)
    assert sql_used(row.id) == prompt_tokens_of(body) + 6


def test_concurrent_requests_in_one_process_never_overspend(app, live_server, redis, make_key, fake):
    body = chat_body(fake={"tokens": 30, "delay": 0.01})
    estimate = estimate_prompt_tokens(body)
    row, key = make_key(3 * (estimate + 30) + 10)
    statuses = []

    def one():
        response = requests.post(f"{live_server.url}/v1/chat/completions", json=body, headers=auth(key), timeout=30)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) == {200, 402}
    assert live_used(redis, row.id) <= row.tokens_quota
    assert live(redis, row.id)["held"] == 0


def _bill(miss: int, hit: int, completion: int, prompt: str, cache_hit: str, completion_x: str) -> int:
    """The formula, worked out apart from app.billing: exact fractions, one round-up."""
    return math.ceil(miss * Fraction(prompt) + hit * Fraction(cache_hit) + completion * Fraction(completion_x))


def check_cache_hits_bill_by_the_formula(client, make_key, fake) -> None:
    """DeepSeek reports most of a resent chat as cache hits: each request, streamed or not, on a
    whole and a fractional route, is billed ceil(miss x prompt + hit x cache hit + completion x
    completion), in the live ledger, the usage record, SQL's tokens_used and the statement."""
    catalog.set_route(
        "deepseek-v4-pro",
        prompt_multiplier=parse_multiplier("1.5"),
        cache_hit_multiplier=parse_multiplier("0.0333"),
        completion_multiplier=parse_multiplier("2.25"),
    )
    routes = {"deepseek-v4-flash": ("1", "0.02", "1"), "deepseek-v4-pro": ("1.5", "0.0333", "2.25")}
    row, key = make_key(1_000_000)
    expected = []
    for i, (model, stream) in enumerate(itertools.product(routes, (False, True))):
        prompt, hit, tokens = 1_501 + i, 1_237 + 3 * i, 7 + i
        body = chat_body(
            stream=stream,
            model=model,
            content="word " * 2_000,  # the hold's prompt bound must cover the count reported
            fake={"tokens": tokens, "reasoning": 2, "prompt_tokens": prompt, "cache_hit_tokens": hit},
        )
        assert post(client, key, body).status_code == 200
        usage = fake.requests[-1].usage
        assert (usage["prompt_cache_hit_tokens"], usage["prompt_cache_miss_tokens"]) == (hit, prompt - hit)
        expected.append((model, prompt, hit, _bill(prompt - hit, hit, tokens + 2, *routes[model])))
    total = sum(billed for *_, billed in expected)
    wait_until(lambda: _drained(row.id) == len(expected))
    records = sorted(rows().values(), key=lambda r: r.created_at)
    assert sorted((r.model, r.prompt_tokens, r.cached_tokens, r.billed_tokens) for r in records) == sorted(expected)
    assert any(billed != (prompt - hit) + hit + 9 for _, prompt, hit, billed in expected)  # hits did cost less
    assert sql_used(row.id) == total
    lines, _ = key_statement.requests_page(row.id)
    assert all(line.charge.adds_up for line in lines)
    assert sum(line.charge.billed for line in lines) == total


def _drained(key_id: int) -> int:
    reconcile.drain(get_redis(), P, batch_size=100)  # the worker's job (embedded mode did it in-process)
    db.session.expire_all()
    return len(db.session.execute(db.select(UsageRecord).filter_by(api_key_id=key_id)).scalars().all())


def test_cache_hits_bill_by_the_formula(app, client, make_key, fake):
    check_cache_hits_bill_by_the_formula(client, make_key, fake)


def test_an_answer_without_a_count_bills_its_whole_prompt_as_misses(app, client, redis, make_key, fake):
    """No usage from the upstream (here: a stream without its usage chunk): the cache split is
    unknown, so the prompt estimate is billed at the cache-miss multiplier, never the cheaper one."""
    row, key = make_key(1_000_000)
    body = chat_body(stream=True, model="deepseek-v4-pro", fake={"tokens": 5, "no_usage": True, "cache_hit_tokens": 9})
    assert post(client, key, body).status_code == 200
    reconcile.drain(redis, P, batch_size=10)
    (record,) = rows().values()
    assert record.cached_tokens == 0
    assert record.billed_tokens == 2 * record.prompt_tokens + 2 * record.completion_tokens
    assert record.prompt_tokens == estimate_prompt_tokens(body) and record.completion_tokens == 5


class TestEmbeddedMode:
    """No REDIS_URL: in-process Redis and jobs; the CLI is another process that changes only SQL."""

    @pytest.fixture
    def app_extra(self):
        return {"REDIS_URL": None, "LIVE_STATE_TTL": 1}

    def test_usage_is_written_to_sql_at_once_and_exactly(self, app, client, make_key, fake):
        row, key = make_key(100_000)
        body = chat_body(fake={"tokens": 9})
        for stream in (False, True, False):
            assert post(client, key, chat_body(stream=stream, fake={"tokens": 9})).status_code == 200
        assert len(rows()) == 3
        assert sql_used(row.id) == 3 * (prompt_tokens_of(body) + 9)

    def test_cache_hits_bill_by_the_formula(self, app, client, make_key, fake):
        check_cache_hits_bill_by_the_formula(client, make_key, fake)

    def test_quota_changed_by_another_process_applies_within_seconds(self, app, client, make_key, fake):
        row, key = make_key(3)
        assert post(client, key, chat_body()).status_code == 402
        # What `flask keys topup` does from its own process: SQL only; its Redis is its own.
        db.session.execute(db.update(ApiKey).where(ApiKey.id == row.id).values(tokens_quota=100_000))
        db.session.commit()
        time.sleep(1.1)
        assert post(client, key, chat_body()).status_code == 200
        db.session.execute(db.update(ApiKey).where(ApiKey.id == row.id).values(status="revoked"))
        db.session.commit()
        time.sleep(1.1)
        assert post(client, key, chat_body()).status_code == 401

    def test_route_changed_by_another_process_applies_within_seconds(self, app, client, api_key, fake):
        headers = {"Authorization": f"Bearer {api_key}"}
        assert client.get("/v1/models/deepseek-v4-pro", headers=headers).status_code == 200
        # What `flask models set deepseek-v4-pro --disable` does from its own process: SQL only.
        db.session.execute(db.update(ModelRoute).where(ModelRoute.public_id == "deepseek-v4-pro").values(enabled=False))
        db.session.commit()
        time.sleep(3.2)
        assert client.get("/v1/models/deepseek-v4-pro", headers=headers).status_code == 404
