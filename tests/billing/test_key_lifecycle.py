"""Key changes made inside a caller's transaction refresh the live state only once it commits."""

from __future__ import annotations

from datetime import timedelta

from app.billing import key_lifecycle, quota
from app.extensions import db
from app.models import ApiKey, utcnow
from tests.api.helpers import chat_body

P = "rg"


def ask(client, key):
    response = client.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {key}"})
    response.get_data()
    return response.status_code


def test_a_credit_in_a_transaction_that_rolls_back_leaves_sql_and_the_live_state_alone(app, client, redis, make_key):
    row, key = make_key(1)
    assert ask(client, key) == 402  # loads and caches the quota
    cached = redis.get(quota.quota_key(P, row.id))
    assert cached == b"1"
    key_lifecycle.credit(row.id, 1_000_000)
    db.session.rollback()
    assert redis.get(quota.quota_key(P, row.id)) == cached
    db.session.expire_all()
    assert db.session.get(ApiKey, row.id).tokens_quota == 1
    db.session.commit()  # a later, unrelated commit runs nothing left over from the rolled-back one
    assert redis.get(quota.quota_key(P, row.id)) == cached


def test_a_committed_credit_reaches_the_next_request_and_extends_a_set_expiry(app, client, redis, make_key, fake):
    expires = utcnow() + timedelta(days=3)
    row, key = make_key(1, expires_at=expires)
    assert ask(client, key) == 402
    key_lifecycle.credit(row.id, 1_000_000, extend_days=30)
    assert redis.get(quota.quota_key(P, row.id)) == b"1"  # not before the commit
    db.session.commit()
    assert redis.get(quota.quota_key(P, row.id)) is None
    assert ask(client, key) == 200
    db.session.expire_all()
    assert db.session.get(ApiKey, row.id).expires_at == expires + timedelta(days=30)
