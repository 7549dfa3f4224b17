"""Quota and rate limit across processes: gunicorn with two gevent workers sharing Redis and SQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from app.billing import quota, reconcile
from app.extensions import db
from app.models import ApiKey, UsageRecord
from app.relay.bounds import prompt_token_bound
from app.relay.usage import estimate_prompt_tokens
from tests.api.helpers import chat_body, open_raw_stream
from tests.conftest import wait_until

P = "rg"


def post_many(url, key, bodies):
    def one(body):
        response = requests.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        response.content  # noqa: B018 - read to the end, so that streams settle
        return response

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(one, bodies))


def live(redis, key_id):
    return {k.decode(): int(v) for k, v in redis.hgetall(quota.acct_key(P, key_id)).items()}


def test_a_small_key_hit_concurrently_by_two_workers_never_overspends(app, redis, make_key, fake, gunicorn_factory):
    server = gunicorn_factory(workers=2)
    body = chat_body(stream=True, max_tokens=20, fake={"tokens": 20, "delay": 0.02})
    per_request = prompt_token_bound(body) + 20  # what each request holds: its prompt's bound and its max_tokens
    row, key = make_key(4 * per_request + 15, rpm=1000)
    responses = post_many(server.url, key, [body] * 40)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 4, statuses
    assert statuses.count(402) >= 20, statuses
    assert set(statuses) == {200, 402}
    wait_until(lambda: live(redis, row.id).get("held") == 0)
    state = live(redis, row.id)
    assert state["synced"] + state["pending"] <= row.tokens_quota  # no overspend
    reconcile.drain(redis, P, batch_size=100)
    db.session.expire_all()
    records = db.session.execute(db.select(UsageRecord)).scalars().all()
    assert len(records) == statuses.count(200)
    assert sum(r.billed_tokens for r in records) == db.session.get(ApiKey, row.id).tokens_used <= row.tokens_quota


def test_the_rate_limit_holds_across_two_workers(app, make_key, fake, gunicorn_factory):
    server = gunicorn_factory(workers=2)
    _, key = make_key(1_000_000, rpm=5)
    responses = post_many(server.url, key, [chat_body(fake={"tokens": 2, "delay": 0.01})] * 20)
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert (len(ok), len(limited)) == (5, 15)
    assert sorted(r.headers["x-ratelimit-remaining-requests"] for r in ok) == ["0", "1", "2", "3", "4"]
    for response in limited:
        assert response.headers["x-ratelimit-limit-requests"] == "5"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    models = requests.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert models.status_code == 200  # listing models never counts
    assert models.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_disconnect_under_gunicorn_bills_prompt_and_received_tokens(app, redis, make_key, fake, gunicorn_factory):
    server = gunicorn_factory(workers=2)
    row, key = make_key(1_000_000)
    body = chat_body(stream=True, fake={"tokens": 300, "delay": 0.02})
    sock, _ = open_raw_stream(server.port, key, body, b'"content"', 15)
    sock.close()
    wait_until(lambda: live(redis, row.id).get("pending"), timeout=5)
    assert live(redis, row.id)["held"] == 0
    reconcile.drain(redis, P, batch_size=10)
    db.session.expire_all()
    (record,) = db.session.execute(db.select(UsageRecord)).scalars().all()
    assert record.outcome == "client_closed"
    assert record.prompt_tokens == estimate_prompt_tokens(body)
    assert 14 <= record.completion_tokens < 300  # what reached the gateway, not the full answer, not zero
    assert record.billed_tokens == record.prompt_tokens + record.completion_tokens
