"""The low-balance alert: when a key is due its email (a table), and the claim that queues it once
per crossing, however many drains see the crossing at the same moment, re-armed by a top-up."""

from __future__ import annotations

import base64
import json

import pytest

from app.billing import key_lifecycle, low_balance
from app.extensions import db
from app.jobs import EMAIL_LOW_BALANCE
from app.models import ApiKey
from tests.conftest import app_overrides
from tests.orders.racing import at_once, run_in_processes


@pytest.mark.unit
@pytest.mark.parametrize(
    ("quota", "used", "alerted", "opted_in", "due"),
    [
        (1000, 0, None, True, False),
        (1000, 900, None, True, False),  # exactly a tenth left is not below it
        (1000, 901, None, True, True),
        (1000, 1000, None, True, True),  # nothing left
        (1000, 1200, None, True, True),  # overdrawn by requests that were running
        (1000, 950, None, False, False),  # not asked for
        (1000, 950, 1000, True, False),  # alerted at this quota already
        (1000, 999, 1000, True, False),  # ... however much more is used
        (2000, 1950, 1000, True, True),  # topped up since: armed again
        (2000, 1000, 1000, True, False),  # topped up and not low
        (900, 850, 1000, True, False),  # a refund lowered the quota: not a new top-up
        (0, 0, None, True, False),  # nothing bought, nothing to run low
        (10, 10, None, True, True),
        (9, 1, None, True, False),  # 8 of 9 left
    ],
)
def test_when_a_key_is_due_its_low_balance_email(quota, used, alerted, opted_in, due):
    assert low_balance.should_alert(quota, used, alerted, opted_in) is due


def _key(make_key, quota=1000, used=0, email="low@example.com", status="active"):
    row, _ = make_key(tokens=quota, email="buyer@example.com")
    if email:
        low_balance.subscribe(row.id, email, "en")
    _set(row.id, tokens_used=used, status=status)
    return row.id


def _set(key_id, **values):
    db.session.execute(db.update(ApiKey).where(ApiKey.id == key_id).values(**values))
    db.session.commit()


def _row(key_id):
    db.session.expire_all()
    return db.session.get(ApiKey, key_id)


def queued_alerts(redis):
    """The (key id, quota) payloads of the low-balance email tasks waiting in the broker."""
    found = []
    for raw in redis.lrange("celery", 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == EMAIL_LOW_BALANCE:
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append(tuple(args))
    return sorted(found)


def test_a_crossing_is_claimed_once_and_a_top_up_arms_it_again(app, redis, make_key):
    key_id = _key(make_key, quota=1000, used=850)
    assert low_balance.alert_low_keys([key_id]) == []  # 15% left
    _set(key_id, tokens_used=950)
    assert low_balance.alert_low_keys([key_id, key_id]) == [key_id]
    assert low_balance.alert_low_keys([key_id]) == []
    _set(key_id, tokens_used=1000)
    assert low_balance.alert_low_keys([key_id]) == []  # still this quota's crossing
    assert _row(key_id).low_balance_alerted_quota == 1000

    key_lifecycle.topup_key(_row(key_id), 1000)
    assert low_balance.alert_low_keys([key_id]) == []  # 50% left
    _set(key_id, tokens_used=1850)
    assert low_balance.alert_low_keys([key_id]) == [key_id]
    assert queued_alerts(redis) == [(key_id, 1000), (key_id, 2000)]  # ids and quotas: no key, no address


def test_keys_that_did_not_ask_or_no_longer_work_get_nothing(app, redis, make_key):
    unasked = _key(make_key, used=990, email=None)
    revoked = _key(make_key, used=990, status="revoked")
    opted_out = _key(make_key, used=990)
    low_balance.unsubscribe(opted_out)
    assert low_balance.alert_low_keys([unasked, revoked, opted_out, 999_999]) == []
    assert queued_alerts(redis) == []


def test_twenty_drains_seeing_the_same_crossing_queue_one_email(app, redis, make_key, db_url, fake_server):
    key_id = _key(make_key, quota=1000, used=990)

    def drain_alert():
        with app.app_context():
            return low_balance.alert_low_keys([key_id])

    # Two worker-like processes and 18 threads here, all between their read and their claim at once.
    threads = []
    processes = run_in_processes(
        app_overrides(db_url, fake_server.base_url),
        "app.billing.low_balance:alert_low_keys",
        [([key_id],)],
        processes=2,
        meanwhile=lambda: threads.extend(at_once([drain_alert] * 18)),
    )
    queued = [repr(ids) for ids in threads if ids] + [ids for (ids,) in processes if ids != "[]"]
    assert queued == [repr([key_id])]
    assert queued_alerts(redis) == [(key_id, 1000)]


def test_a_claim_that_could_not_be_queued_is_given_back(app, redis, make_key):
    key_id = _key(make_key, quota=1000, used=990)
    app.extensions["celery"].conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    app.extensions["celery"].conf.broker_connection_max_retries = 0
    try:
        assert low_balance.alert_low_keys([key_id]) == []
    finally:
        app.extensions["celery"].conf.broker_url = app.config["CELERY"]["broker_url"]
    assert _row(key_id).low_balance_alerted_quota is None  # the next drain tries again
