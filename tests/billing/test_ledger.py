"""The SQL ledger: batches are written once, with the keys' tokens_used in the same transaction."""

from __future__ import annotations

from app.billing import ledger
from app.extensions import db
from app.models import ApiKey, UsageRecord


def record(request_id, key_id, billed, **extra):
    return {
        "request_id": request_id,
        "api_key_id": key_id,
        "model": "deepseek-v4-flash",
        "upstream_model": "deepseek-v4-flash",
        "stream": True,
        "prompt_tokens": billed - 1,
        "completion_tokens": 1,
        "reasoning_tokens": 0,
        "cached_tokens": 0,
        "billed_tokens": billed,
        "outcome": "done",
        "status_code": 200,
        "latency_ms": 12,
        "ttft_ms": 3,
        "created_at": 1_800_000_000.5,
        **extra,
    }


def used(key_id):
    db.session.expire_all()
    return db.session.get(ApiKey, key_id).tokens_used


def test_batch_writes_records_and_usage_together(app, make_key):
    a, _ = make_key(1000)
    b, _ = make_key(1000)
    result = ledger.write_batch([record("r1", a.id, 10), record("r2", a.id, 5), record("r3", b.id, 7)])
    assert result.written == 3
    assert result.used == {a.id: 15, b.id: 7}
    assert (used(a.id), used(b.id)) == (15, 7)
    row = db.session.execute(db.select(UsageRecord).filter_by(request_id="r1")).scalar_one()
    assert (row.billed_tokens, row.outcome, row.ttft_ms, row.created_at.year) == (10, "done", 3, 2027)


def test_a_batch_delivered_twice_is_written_once(app, make_key):
    key, _ = make_key(1000)
    batch = [record("r1", key.id, 10), record("r2", key.id, 5)]
    ledger.write_batch(batch)
    again = ledger.write_batch([*batch, record("r3", key.id, 1)])
    assert again.written == 1
    assert again.used == {key.id: 16}
    assert used(key.id) == 16
    assert db.session.execute(db.select(db.func.count()).select_from(UsageRecord)).scalar() == 3


def test_write_record_is_idempotent_by_request_id(app, make_key):
    key, _ = make_key(1000)
    assert ledger.write_record(record("r1", key.id, 9)) is True
    assert ledger.write_record(record("r1", key.id, 9)) is False
    assert used(key.id) == 9


def test_key_totals_reads_quota_and_usage(app, make_key):
    key, _ = make_key(1234)
    ledger.write_record(record("r1", key.id, 34))
    assert ledger.key_totals([key.id, 999]) == {key.id: (1234, 34)}
