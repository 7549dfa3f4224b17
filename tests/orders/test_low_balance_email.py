"""The low-balance email end to end: a key used through the relay (fake DeepSeek), its usage drained
to SQL by a real Celery worker, the email received by a real SMTP server: one when the key drops
below a tenth of its quota, none on further use, one more after a top-up; one however many drains
race; one however often SMTP fails first; in the buyer's language."""

from __future__ import annotations

from app.billing import key_lifecycle, reconcile
from app.extensions import db
from app.models import ApiKey
from app.orders import delivery
from tests.conftest import wait_until
from tests.orders.racing import at_once, wait_for_workers
from tests.shop import csrf_token
from tests.smtp_sink import html_of, text_of


def _opt_in(client, key, email="low@example.com"):
    token = csrf_token(client, "/balance")
    client.post("/balance/statement", data={"csrf_token": token, "key": key})
    saved = client.post("/balance/alerts", data={"csrf_token": token, "low_balance_alert": "1", "email": email})
    assert saved.status_code == 303


def _chat(client, key, tokens):
    body = {"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "Hi"}], "fake": {"tokens": tokens}}
    response = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text


def _row(key_id):
    db.session.expire_all()
    return db.session.get(ApiKey, key_id)


def _use_and_wait(client, redis, key, key_id, tokens):
    """A request, then until the worker has moved its usage to SQL and run whatever that queued."""
    before = _row(key_id).tokens_used
    _chat(client, key, tokens)
    wait_until(lambda: _row(key_id).tokens_used > before, timeout=30)
    wait_for_workers(redis)
    return _row(key_id)


def test_one_email_below_a_tenth_none_after_and_one_again_after_a_top_up(client, redis, make_key, store_worker, mail):
    row, key = make_key(tokens=10_000, email="buyer@example.com")
    _opt_in(client, key)

    used = _use_and_wait(client, redis, key, row.id, 8_500)
    assert used.tokens_remaining * 10 >= 10_000 and mail.messages == []  # still a tenth or more left
    used = _use_and_wait(client, redis, key, row.id, 700)
    assert used.tokens_remaining * 10 < 10_000
    (message,) = mail.wait_for(1)
    assert message["To"] == "low@example.com"
    assert message["Subject"] == f"Your RelayGate key {row.prefix} is running low"
    text = text_of(message)
    assert f"has {used.tokens_remaining:,} of its 10,000 tokens left: less than 10%." in text
    assert "http://testserver/topup" in text and 'href="http://testserver/topup"' in html_of(message)
    assert key not in text and key not in html_of(message)
    assert "To stop it, open Check balance" in html_of(message) and "used for a purchase" not in html_of(message)

    _use_and_wait(client, redis, key, row.id, 5)
    _use_and_wait(client, redis, key, row.id, 5)
    assert len(mail.messages) == 1  # one per crossing, not one per request

    key_lifecycle.topup_key(_row(row.id), 10_000)
    used = _use_and_wait(client, redis, key, row.id, 9_000)
    assert used.tokens_remaining * 10 < 20_000
    second = mail.wait_for(2)[1]
    assert "of its 20,000 tokens left" in text_of(second)
    _use_and_wait(client, redis, key, row.id, 5)
    assert len(mail.messages) == 2


def test_twenty_drains_at_once_in_several_processes_send_one_email(
    app, client, redis, make_key, in_processes, start_workers, mail
):
    row, key = make_key(tokens=10_000, email="buyer@example.com")
    _opt_in(client, key)
    for tokens in (8_500, 500, 200):  # no worker yet: the usage waits in the outbox
        _chat(client, key, tokens)

    def drain_here():
        with app.app_context():
            return reconcile.drain_outbox()

    # Two worker-like processes and 18 threads here: 20 drains of the same records at the same moment.
    in_processes("app.billing.reconcile:drain_outbox", [()], processes=2, meanwhile=lambda: at_once([drain_here] * 18))
    assert _row(row.id).tokens_remaining * 10 < 10_000 and _row(row.id).low_balance_alerted_quota == 10_000

    start_workers(1)  # the email tasks the 20 drains queued
    mail.wait_for(1)
    wait_for_workers(redis)
    assert len(mail.messages) == 1
    assert _row(row.id).low_balance_emailed_quota == 10_000


def test_smtp_failures_are_retried_and_the_email_still_goes_out_once(client, redis, make_key, store_worker, mail):
    mail.fail_next(2)
    row, key = make_key(tokens=10_000, email="buyer@example.com")
    _opt_in(client, key)
    _chat(client, key, 9_500)
    mail.wait_for(1, timeout=30)
    assert mail.handler.refused == 2
    wait_until(lambda: _row(row.id).low_balance_emailed_quota == 10_000)
    assert delivery.send_low_balance_email(row.id, 10_000) is False  # a late duplicate task sends nothing
    assert len(mail.messages) == 1


def test_the_email_in_chinese_for_a_buyer_who_asked_in_chinese(client, redis, make_key, mail):
    row, key = make_key(tokens=10_000, email="buyer@example.com")
    client.get("/?lang=zh")
    _opt_in(client, key, "zh@example.com")
    _chat(client, key, 9_500)
    reconcile.drain_outbox()  # no worker here: the drain and the email task's body, run directly
    assert _row(row.id).low_balance_alerted_quota == 10_000
    assert delivery.send_low_balance_email(row.id, 10_000) is True
    (message,) = mail.wait_for(1)
    assert message["Subject"] == f"你的 RelayGate 密钥 {row.prefix} 余额不足"
    remaining = _row(row.id).tokens_remaining
    assert f"你的密钥 {row.prefix} 还剩 {remaining:,} tokens（共 10,000）：已不足 10%。" in text_of(message)
    assert "为这个密钥充值：http://testserver/topup" in text_of(message)


def test_no_email_for_a_buyer_who_opted_out_or_topped_up_before_it_went_out(client, redis, make_key, mail):
    row, key = make_key(tokens=10_000, email="buyer@example.com")
    _opt_in(client, key)
    _chat(client, key, 9_500)
    reconcile.drain_outbox()
    key_lifecycle.topup_key(_row(row.id), 5_000)
    assert delivery.send_low_balance_email(row.id, 10_000) is False
    assert mail.messages == []
