"""Outbox to SQL, and live balances kept honest: drain, crashes, drift, Redis losing its data."""

from __future__ import annotations

import json

from app.billing import ledger, quota, reconcile, statements
from app.extensions import db
from app.models import ApiKey, UsageRecord
from app.relay.bounds import prompt_token_bound
from tests.fake_deepseek import prompt_tokens_of

P = "rg"


def chat_request(content="Hello there", tokens=5, **extra):
    return {
        "model": "deepseek-v4-flash",
        "messages": [{"role": "user", "content": content}],
        "fake": {"tokens": tokens},
    } | extra


def chat(client, key, content="Hello there", tokens=5, **extra):
    body = chat_request(content, tokens, **extra)
    return client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def billed(content="Hello there", tokens=5):
    return prompt_tokens_of({"messages": [{"role": "user", "content": content}]}) + tokens


def sql_used(key_id):
    db.session.expire_all()
    return db.session.get(ApiKey, key_id).tokens_used


def records():
    return db.session.execute(db.select(UsageRecord)).scalars().all()


def acct(redis, key_id):
    return {k.decode(): int(v) for k, v in redis.hgetall(quota.acct_key(P, key_id)).items()}


def test_drain_moves_every_settled_record_into_sql_in_batches(app, client, redis, make_key):
    row, key = make_key(100_000)
    for i in range(23):
        assert chat(client, key, tokens=i % 4 + 1).status_code == 200
    expected = sum(billed(tokens=i % 4 + 1) for i in range(23))
    assert acct(redis, row.id)["pending"] == expected
    assert reconcile.drain(redis, P, batch_size=5) == 23
    assert len(records()) == 23
    assert sql_used(row.id) == expected
    assert redis.hlen(quota.outbox_key(P)) == 0
    assert (acct(redis, row.id)["pending"], acct(redis, row.id)["synced"]) == (0, expected)
    assert statements.live_balance(db.session.get(ApiKey, row.id)).used == expected


def test_a_worker_killed_after_its_commit_leaves_nothing_counted_twice(app, client, redis, make_key):
    row, key = make_key(100_000)
    for _ in range(6):
        chat(client, key)
    # What a worker killed between its SQL commit and its Redis acknowledgement leaves behind:
    # the records are in SQL and still in the outbox (and in pending).
    outbox = redis.hgetall(quota.outbox_key(P))
    ledger.write_batch([json.loads(v) for v in outbox.values()])
    assert statements.live_balance(db.session.get(ApiKey, row.id)).used >= 6 * billed()
    reconcile.drain(redis, P, batch_size=500)
    assert len(records()) == 6
    assert sql_used(row.id) == 6 * billed()
    assert statements.live_balance(db.session.get(ApiKey, row.id)).used == 6 * billed()
    assert acct(redis, row.id)["pending"] == 0


def test_balances_are_rebuilt_from_sql_after_redis_loses_its_data(app, client, redis, make_key, fake):
    fourth = chat_request(max_tokens=1000)
    row, key = make_key(3 * billed() + prompt_token_bound(fourth) + 9)
    for _ in range(3):
        assert chat(client, key).status_code == 200
    reconcile.drain(redis, P, batch_size=500)
    redis.flushdb()
    # Not the whole quota again: what is left pays for the fourth prompt's bound and 9 tokens.
    assert chat(client, key, max_tokens=1000).status_code == 200
    assert fake.requests[-1].body["max_tokens"] == 9
    reconcile.drain(redis, P, batch_size=500)
    report = client.get("/api/key", headers={"Authorization": f"Bearer {key}"}).get_json()
    assert report["tokens_used"] == sql_used(row.id) == 4 * billed()
    left = row.tokens_quota - 4 * billed()
    assert chat(client, key, content="! " * left).status_code == 402  # a token a word, by any count
    assert len(records()) == 4


def test_a_restore_of_an_older_snapshot_is_corrected(app, client, redis, make_key):
    row, key = make_key(100_000)
    chat(client, key)
    names = [quota.acct_key(P, row.id), quota.quota_key(P, row.id), quota.outbox_key(P)]
    snapshot = {name: redis.dump(name) for name in names}
    for _ in range(4):
        chat(client, key)
    reconcile.drain(redis, P, batch_size=500)
    for name, data in snapshot.items():  # Redis restarts from an RDB file written before all that
        redis.restore(name, 0, data, replace=True)
    # Until the next drain the restored record counts twice (SQL has it, the outbox too): never less.
    assert statements.live_balance(db.session.get(ApiKey, row.id)).used == 6 * billed()
    result = reconcile.reconcile()
    assert result["drained"] == 1
    assert len(records()) == 5  # the restored outbox entry was in SQL already: not written twice
    assert sql_used(row.id) == 5 * billed()
    assert acct(redis, row.id)["synced"] == 5 * billed()
    assert acct(redis, row.id)["pending"] == 0


def test_reconcile_corrects_drift(app, client, redis, make_key):
    row, key = make_key(100_000)
    for _ in range(2):
        chat(client, key)
    reconcile.drain(redis, P, batch_size=500)
    name = quota.acct_key(P, row.id)
    redis.hset(name, mapping={"synced": 3, "pending": 999, "held": 50})  # drift, however it came
    redis.set(quota.quota_key(P, row.id), 7)
    redis.zadd(quota.holds_key(P, row.id), {"gone|50": 1})  # a hold whose process died long ago
    db.session.execute(db.update(ApiKey).where(ApiKey.id == row.id).values(tokens_quota=200_000))
    db.session.commit()
    result = reconcile.reconcile()
    assert result["corrected"] == 4
    assert acct(redis, row.id) | {"seen": 0, "qver": 0} == {
        "synced": 2 * billed(),
        "pending": 0,
        "held": 0,
        "seen": 0,
        "qver": 0,
    }
    assert redis.get(quota.quota_key(P, row.id)) == b"200000"
    assert reconcile.reconcile()["corrected"] == 0


def test_idle_keys_are_forgotten_and_rebuilt_on_next_use(app, client, redis, make_key):
    row, key = make_key(100_000)
    chat(client, key)
    reconcile.drain(redis, P, batch_size=500)
    redis.hset(quota.acct_key(P, row.id), "seen", 1)  # last used in 1970
    reconcile.reconcile()
    assert not redis.exists(quota.acct_key(P, row.id))
    assert redis.smembers(quota.live_set_key(P)) == set()
    assert chat(client, key).status_code == 200
    assert acct(redis, row.id)["synced"] == billed()


def test_a_record_that_is_not_json_is_set_aside(app, redis):
    bad = b"not json"
    redis.hset(quota.outbox_key(P), "broken", bad)
    assert reconcile.drain(redis, P, batch_size=10) == 1
    assert redis.hget(quota.dead_letter_key(P), "broken") == bad
    assert redis.hlen(quota.outbox_key(P)) == 0
