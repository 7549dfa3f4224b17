"""The usage tasks: called synchronously, and run by a real Celery worker on the real Redis broker,
including one killed in the middle of a batch."""

from __future__ import annotations

import json

from app import jobs
from app.billing import ledger, quota
from app.extensions import db
from app.models import ApiKey, UsageRecord
from tests.api.helpers import chat_body
from tests.conftest import wait_until
from tests.fake_deepseek import prompt_tokens_of
from workers import usage

P = "rg"


def spend(client, key, n):
    total = 0
    for i in range(n):
        body = chat_body(stream=i % 2 == 0, fake={"tokens": i % 5 + 1})
        response = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        response.get_data()
        assert response.status_code == 200
        total += prompt_tokens_of(body) + i % 5 + 1
    return total


def count_records():
    db.session.rollback()
    return db.session.execute(db.select(db.func.count()).select_from(UsageRecord)).scalar()


def sql_used(key_id):
    db.session.rollback()
    return db.session.get(ApiKey, key_id).tokens_used


def pending(redis, key_id):
    return int(redis.hget(quota.acct_key(P, key_id), "pending") or 0)


def test_tasks_run_synchronously_drain_and_reconcile(app, client, redis, make_key, fake):
    row, key = make_key(100_000)
    total = spend(client, key, 5)
    assert usage.drain() == 5
    assert usage.reconcile_usage() == {"drained": 0, "corrected": 0}
    assert (count_records(), sql_used(row.id), pending(redis, row.id)) == (5, total, 0)


def test_the_beat_drains_and_reconciles():
    from workers.celery_app import celery_app

    tasks = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    assert {"usage.drain", "usage.reconcile"} <= tasks


def test_a_real_worker_writes_every_record_exactly(app, client, redis, make_key, fake, celery_worker):
    row, key = make_key(1_000_000)
    total = spend(client, key, 20)
    wait_until(lambda: count_records() == 20 and pending(redis, row.id) == 0, timeout=15)
    assert sql_used(row.id) == total
    assert int(redis.hget(quota.acct_key(P, row.id), "synced")) == total


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    app, client, redis, make_key, fake, celery_worker_factory
):
    row, key = make_key(1_000_000)
    worker = celery_worker_factory(USAGE_DRAIN_BATCH="5", CELERY_VISIBILITY_TIMEOUT="1")
    # The worker is killed while its batch waits for the database, which this test holds.
    with db.engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(db.update(ApiKey).where(ApiKey.id == row.id).values(note="locked by the test"))
        total = spend(client, key, 24)  # the first one wakes the worker; the rest queue up meanwhile
        wait_until(lambda: redis.hlen("unacked") == 1, timeout=5)  # it took the drain job and works on it
        worker.stop(kill=True)
        transaction.rollback()
    assert count_records() == 0
    assert redis.hlen(quota.outbox_key(P)) == 24  # nothing was acknowledged
    # And an earlier worker died after committing eight records, before acknowledging them.
    queued = [json.loads(raw) for raw in redis.hgetall(quota.outbox_key(P)).values()]
    ledger.write_batch(queued[:8])
    celery_worker_factory(USAGE_DRAIN_BATCH="5", CELERY_VISIBILITY_TIMEOUT="1")
    jobs.enqueue_usage_drain()
    wait_until(lambda: redis.hlen(quota.outbox_key(P)) == 0, timeout=15)
    assert count_records() == 24
    assert sql_used(row.id) == total
    assert pending(redis, row.id) == 0
    assert int(redis.hget(quota.acct_key(P, row.id), "synced")) == total
