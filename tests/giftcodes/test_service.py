"""Gift codes against the real database and Redis: generate, redeem once, refuse clearly, throttle."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from app.billing.key_format import hash_key
from app.extensions import db
from app.giftcodes import service, throttle
from app.giftcodes.code_format import hash_code
from app.models import ApiKey, AuditLog, Plan, utcnow
from app.models.gift_code import GiftCode
from tests.orders.racing import KEY, queued_tasks, wait_for_workers
from tests.smtp_sink import html_of, text_of

OPERATOR = service.Actor("ops@example.com")
BUYER_IP = "203.0.113.7"


def make_plan(**fields) -> Plan:
    values = {"name": "Gift 3M", "tokens": 3_000_000, "price_cents": 150, "active": True, **fields}
    plan = Plan(**values)
    db.session.add(plan)
    db.session.commit()
    return plan


def make_codes(plan: Plan, count: int = 1, **options) -> list[str]:
    return list(service.generate(plan.id, count, actor=OPERATOR, **options).codes)


def redeem(code: str, ip: str = BUYER_IP, **options) -> service.Redemption:
    return service.redeem(code, client_ip=ip, **options)


def refused(code: str, ip: str = BUYER_IP, **options) -> service.RedeemError:
    with pytest.raises(service.RedeemError) as caught:
        redeem(code, ip, **options)
    return caught.value


def code_row(code: str) -> GiftCode:
    db.session.expire_all()
    return db.session.execute(db.select(GiftCode).filter_by(code_hash=hash_code(code))).scalar_one()


def counts() -> tuple[int, int, int]:
    """Keys, redeemed codes and redemption audit entries: what a refused redemption must not change."""
    db.session.expire_all()
    count = db.func.count
    return (
        db.session.execute(db.select(count(ApiKey.id))).scalar_one(),
        db.session.execute(db.select(count(GiftCode.id)).filter_by(status="redeemed")).scalar_one(),
        db.session.execute(db.select(count(AuditLog.id)).filter_by(action="giftcode.redeem")).scalar_one(),
    )


# -- generate ------------------------------------------------------------------------------------


def test_generating_stores_only_hashes_and_prefixes_and_audits_the_batch(app):
    plan = make_plan()
    batch = service.generate(plan.id, 5, actor=OPERATOR, note="Shop A")
    assert len(set(batch.codes)) == 5
    rows = db.session.execute(db.select(GiftCode).order_by(GiftCode.id)).scalars().all()
    assert [r.code_hash for r in rows] == [hash_code(c) for c in batch.codes]
    assert [r.prefix for r in rows] == [c[:7] for c in batch.codes]
    assert {(r.status, r.tokens, r.plan_id, r.batch, r.note) for r in rows} == {
        ("unused", 3_000_000, plan.id, batch.batch, "Shop A")
    }
    stored = json.dumps([[str(v) for v in r.__dict__.values()] for r in rows])
    entry = db.session.execute(db.select(AuditLog).filter_by(action="giftcode.create")).scalar_one()
    assert (entry.actor, entry.target, entry.details["count"]) == ("ops@example.com", f"batch:{batch.batch}", 5)
    for code in batch.codes:
        assert code[8:] not in stored and code[8:] not in json.dumps(entry.details)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"plan_id": 999}, "no plan #999"),
        ({"count": 0}, "the count must be from 1 to 1000"),
        ({"count": 1001}, "the count must be from 1 to 1000"),
        ({"expires_at": utcnow() - timedelta(minutes=1)}, "the expiry date must be in the future"),
        ({"note": "x" * 201}, "the note must be at most 200 characters"),
    ],
)
def test_bad_generation_requests_store_nothing(app, change, message):
    plan = make_plan()
    args = {"plan_id": plan.id, "count": 3, **change}
    with pytest.raises(service.GiftCodeError, match=message):
        service.generate(args.pop("plan_id"), args.pop("count"), actor=OPERATOR, **args)
    assert db.session.execute(db.select(db.func.count(GiftCode.id))).scalar_one() == 0


# -- redeem --------------------------------------------------------------------------------------


def test_a_code_becomes_a_new_key_with_the_plan_applied_as_for_a_purchase(app, redis):
    plan = make_plan(models=["deepseek-v4-flash"], rpm=12, valid_days=30)
    (code,) = make_codes(plan)
    done = redeem(code.lower().replace("-", " "))
    assert done.kind == "new" and done.tokens == done.remaining == 3_000_000
    key = db.session.get(ApiKey, done.key_id)
    assert key.key_hash == hash_key(done.key) and KEY.fullmatch(done.key)
    assert (key.tokens_quota, key.allowed_models, key.rpm, key.status) == (
        3_000_000,
        ["deepseek-v4-flash"],
        12,
        "active",
    )
    assert abs(key.expires_at - (utcnow() + timedelta(days=30))) < timedelta(minutes=1)
    row = code_row(code)
    assert (row.status, row.redeemed_kind, row.api_key_id) == ("redeemed", "new", key.id)
    entry = db.session.execute(db.select(AuditLog).filter_by(action="giftcode.redeem")).scalar_one()
    assert (entry.actor, entry.ip, entry.target) == ("store", BUYER_IP, f"key:{key.id}")
    assert entry.details == {
        "gift_code_id": row.id,
        "code": code[:7],
        "kind": "new",
        "key_id": key.id,
        "key_prefix": key.prefix,
        "plan_id": plan.id,
        "tokens": 3_000_000,
    }
    assert done.key not in json.dumps(entry.details) and code[8:] not in json.dumps(entry.details)


def test_a_code_tops_up_an_existing_key_and_extends_its_expiry(app, make_key):
    plan = make_plan(valid_days=10)
    row, key = make_key(tokens=500, expires_at=utcnow() + timedelta(days=2))
    (code,) = make_codes(plan)
    done = redeem(code, key_text=f"  {key}  ")
    assert (done.kind, done.key, done.key_id, done.remaining) == ("topup", None, row.id, 3_000_500)
    db.session.expire_all()
    topped = db.session.get(ApiKey, row.id)
    assert topped.tokens_quota == 3_000_500
    assert abs(topped.expires_at - (utcnow() + timedelta(days=12))) < timedelta(minutes=1)
    assert db.session.execute(db.select(db.func.count(ApiKey.id))).scalar_one() == 1
    assert (code_row(code).redeemed_kind, code_row(code).api_key_id) == ("topup", row.id)


def test_a_code_is_worth_the_tokens_of_its_plan_when_it_was_generated(app):
    plan = make_plan()
    (code,) = make_codes(plan)
    plan.tokens = 1  # the operator edits the plan after the codes were sold
    db.session.commit()
    assert redeem(code).tokens == 3_000_000


def test_a_retired_plan_still_honours_its_codes(app):
    plan = make_plan(active=False)
    (code,) = make_codes(plan)
    assert redeem(code).tokens == 3_000_000


def test_a_used_code_is_refused_and_changes_nothing(app):
    (code,) = make_codes(make_plan())
    redeem(code)
    before = counts()
    assert refused(code).reason == "used"
    assert counts() == before


def test_an_expired_code_is_refused_with_its_date_and_changes_nothing(app):
    plan = make_plan()
    (code,) = make_codes(plan, expires_at=utcnow() + timedelta(days=1))
    yesterday = utcnow() - timedelta(days=1)
    db.session.execute(db.update(GiftCode).values(expires_at=yesterday))  # a day passes
    db.session.commit()
    error = refused(code)
    assert (error.reason, error.expired_on) == ("expired", yesterday)
    assert counts() == (0, 0, 0) and code_row(code).status == "unused"


def test_a_voided_code_is_refused_and_changes_nothing(app):
    first, second = make_codes(make_plan(), 2)
    service.void(first, actor=OPERATOR)
    assert refused(first).reason == "void"
    assert counts() == (0, 0, 0)
    assert redeem(second).kind == "new"  # voiding one code leaves the others of its batch alone


@pytest.mark.parametrize("typed", ["RG-0000-0000-0000-0000-0000", "not a code", ""])
def test_a_wrong_code_is_refused_and_changes_nothing(app, typed):
    make_codes(make_plan())
    assert refused(typed).reason == "unknown"
    assert counts() == (0, 0, 0)


def test_a_bad_key_or_email_is_refused_before_the_code_is_used(app, make_key):
    plan = make_plan()
    (code,) = make_codes(plan)
    row, revoked = make_key()
    row.status = "revoked"
    db.session.commit()
    assert refused(code, key_text="sk-gateway-nope").reason == "key"
    assert refused(code, key_text=revoked).reason == "key_revoked"
    assert refused(code, email="not-an-address").reason == "email"
    assert counts() == (1, 0, 0) and code_row(code).status == "unused"


# -- throttle ------------------------------------------------------------------------------------


def test_guessing_is_throttled_per_address_before_any_code_is_checked(app, redis):
    (code,) = make_codes(make_plan())
    for n in range(throttle.LIMIT):
        assert refused(f"RG-0000-0000-0000-0000-{n:04d}").reason == "unknown"
    error = refused(code)  # even the right code is not looked at now
    assert error.reason == "throttled" and 0 < error.retry_after <= throttle.WINDOW_SECONDS
    assert code_row(code).status == "unused"
    assert redeem(code, ip="198.51.100.9").kind == "new"  # another address is not held up
    ttl = redis.ttl(f"{app.config['BILLING_REDIS_PREFIX']}:giftcode:ip:{BUYER_IP}")
    assert 0 < ttl <= throttle.WINDOW_SECONDS  # the window ends by itself


def test_real_codes_give_their_attempt_back_so_a_buyer_with_many_codes_is_not_held_up(app):
    codes = make_codes(make_plan(), throttle.LIMIT + 5)
    assert [redeem(c).kind for c in codes] == ["new"] * (throttle.LIMIT + 5)


# -- the email -----------------------------------------------------------------------------------


def test_the_new_key_is_emailed_by_the_worker_and_never_queued_readable(app, redis, start_workers, mail):
    (code,) = make_codes(make_plan())
    done = redeem(code, email="friend@example.com", locale="zh")
    assert queued_tasks(redis) == 1
    (message,) = redis.lrange("celery", 0, -1)
    assert done.key not in message.decode() and done.key[11:] not in message.decode()

    start_workers(1)
    (sent,) = mail.wait_for(1)
    wait_for_workers(redis)
    assert sent["To"] == "friend@example.com" and "礼品码" in sent["Subject"]
    assert done.key in text_of(sent) and done.key in html_of(sent)
    assert "3,000,000" in text_of(sent)
    assert db.session.get(ApiKey, done.key_id).email == "friend@example.com"  # the lost-key page can find it
    assert len(mail.messages) == 1


def test_no_email_is_queued_without_an_address_or_for_a_top_up(app, redis, make_key):
    first, second = make_codes(make_plan(), 2)
    redeem(first)
    redeem(second, key_text=make_key()[1], email="ignored@example.com")
    assert queued_tasks(redis) == 0
