"""The live-balance scripts against the real Redis: admission, settlement, holds, quota changes."""

from __future__ import annotations

import json
import random
import time

import pytest

from app.billing import pricing, quota
from app.billing.errors import Stale
from app.models.multiplier import UNIT

P = "t"


def ask(prompt_cost=10, multiplier=UNIT, wanted=100, rpm=0, max_running=0, hold_ms=60_000, upfront=0):
    return quota.Ask(prompt_cost, multiplier, wanted, rpm, max_running, hold_ms, upfront)


def loader(totals, calls=None):
    def load():
        if calls is not None:
            calls.append(1)
        return totals

    return load


def admit(redis, request_id, a, totals=(1000, 0), key_id=1):
    return quota.admit(redis, P, key_id, request_id, a, loader(totals), 0)


def state(redis, key_id=1):
    raw = redis.hgetall(quota.acct_key(P, key_id))
    return {k.decode(): int(v) for k, v in raw.items() if k != b"seen"}


X1, X2, X3 = UNIT, 2 * UNIT, 3 * UNIT


@pytest.mark.parametrize(
    ("quota_", "used", "held", "prompt_cost", "multiplier", "wanted", "upfront"),
    [
        (1000, 0, 0, 10, X1, 100, 0),
        (1000, 0, 0, 10, X1, 5000, 0),
        (1000, 400, 300, 10, X2, 5000, 0),
        (1000, 980, 0, 10, X1, 5000, 0),
        (1000, 989, 0, 10, X1, 5000, 0),
        (1000, 990, 0, 10, X1, 5000, 0),
        (1000, 1200, 0, 3, X1, 10, 0),
        (1000, 0, 0, 10, X1, 5000, 64),  # a stream holds its first step of the cap
        (1000, 0, 0, 10, X3, 5000, 64),
        (1000, 900, 0, 10, X1, 5000, 200),  # a step larger than the cap holds the cap
        (10**15, 10**14, 0, 7, X3, 10**13, 0),  # past Lua's exponent printing: still exact integers
        (10**15, 0, 0, 7, 1, 10**18, 0),  # the cap's own ceiling (pricing.MAX_COMPLETION_UNITS)
        (1000, 0, 0, 10, 3_000, 5000, 0),  # fractional: 0.3 per completion token
        (1000, 989, 0, 10, 3_000, 5000, 0),  # one billed token left pays for 3 at 0.3
        (1000, 0, 0, 10, 1, 10**7, 0),  # 0.0001
        (1000, 0, 0, 10, 2_500, 32_768, 2049),  # a step of 512.25 billed tokens is held as 513
        (1000, 0, 0, 10, 10**7, 5000, 0),  # 1000x
        (10**12, 10**11, 0, 123_457, 3_333, 400_000, 0),
    ],
)
def test_script_admits_exactly_as_the_pure_rule(redis, quota_, used, held, prompt_cost, multiplier, wanted, upfront):
    if held:  # another request in flight holds exactly `held`
        assert admit(redis, "holder", ask(prompt_cost=held - 1, wanted=1), (quota_, used)).admission.amount == held
    decision = admit(redis, "r", ask(prompt_cost, multiplier, wanted, upfront=upfront), (quota_, used))
    expected = pricing.admit(quota_ - used - held, prompt_cost, multiplier, wanted, upfront)
    if expected is None:
        assert decision.status == quota.NO_QUOTA
        assert (decision.used, decision.held, decision.quota) == (used, held, quota_)
        assert decision.running == (1 if held else 0)
    else:
        assert decision.status == quota.ADMITTED
        assert decision.admission == expected
        assert state(redis)["held"] == held + expected.amount


def test_script_and_pure_rule_agree_on_random_asks(redis):
    """The Lua arithmetic (doubles) and pricing.admit (Python integers) over random balances,
    fractional multipliers, caps and steps, up to the largest values admission takes."""
    rng = random.Random(7)
    for i in range(1500):
        free = rng.choice([rng.randint(-100, 100), rng.randint(0, 10**6), rng.randint(0, 10**15)])
        multiplier = rng.choice([1, X1, rng.randint(1, 3 * UNIT), rng.randint(1, 1000 * UNIT), rng.randint(1, 10**9)])
        prompt_cost = rng.choice([0, rng.randint(0, 1000), rng.randint(0, max(0, free))])
        wanted = rng.choice([1, rng.randint(1, 400_000), rng.randint(1, 10**18)])
        upfront = rng.choice([0, 0, rng.randint(1, 4096)])
        quota_ = 2 * 10**15  # Lua numbers are doubles: balances are exact below 2**53 (9e15)
        a = ask(prompt_cost, multiplier, wanted, upfront=upfront)
        decision = quota.admit(redis, P, 1000 + i, "r", a, loader((quota_, quota_ - free)), 0)
        expected = pricing.admit(free, prompt_cost, multiplier, wanted, upfront)
        assert decision.admission == expected, (free, prompt_cost, multiplier, wanted, upfront)


def test_live_state_is_loaded_once_and_then_kept_in_redis(redis):
    calls = []
    for i in range(3):
        assert quota.admit(redis, P, 1, f"r{i}", ask(), loader((1000, 250), calls), 0).status == quota.ADMITTED
    assert len(calls) == 1
    assert state(redis)["synced"] == 250
    assert redis.smembers(quota.live_set_key(P)) == {b"1"}


def test_a_quota_read_that_races_a_top_up_is_not_cached(redis):
    """The loader reads SQL, then a top-up commits and calls credit() before the loader's value is
    stored: the old value must not be cached, or the top-up would be lost until it expired."""
    reads = []

    def load_while_topping_up():
        reads.append(1)
        if len(reads) == 1:
            quota.credit(redis, P, 1, 500)  # the top-up lands between our read and our write
            return 1000, 0
        return 1500, 0

    decision = quota.admit(redis, P, 1, "r", ask(wanted=10_000), load_while_topping_up, 0)
    assert len(reads) == 2
    assert decision.admission.amount == 1500


def test_credit_makes_the_next_admission_read_the_new_quota(redis):
    assert admit(redis, "a", ask(wanted=10_000), (100, 0)).admission.amount == 100
    quota.settle(redis, P, 1, "a", 100, 100, "{}")
    assert admit(redis, "b", ask(), (100, 0)).status == quota.NO_QUOTA
    quota.credit(redis, P, 1, 900)
    decision = admit(redis, "c", ask(wanted=10_000), (1000, 0))
    assert decision.admission.amount == 900  # 1000 quota - 100 pending


def test_settle_moves_the_hold_into_pending_and_queues_the_record_once(redis):
    held = admit(redis, "r1", ask(prompt_cost=10, wanted=100)).admission.amount
    assert state(redis)["held"] == held == 110
    record = json.dumps({"request_id": "r1", "api_key_id": 1, "billed_tokens": 37})
    assert quota.settle(redis, P, 1, "r1", held, 37, record) == 1
    assert quota.settle(redis, P, 1, "r1", held, 37, record) == -1  # a second settle bills nothing
    assert state(redis)["held"] == 0
    assert state(redis)["pending"] == 37
    assert redis.hget(quota.outbox_key(P), "r1") == record.encode()


def test_concurrency_cap_counts_requests_in_flight(redis):
    a = ask(max_running=2)
    first = admit(redis, "r1", a).admission
    assert admit(redis, "r2", a).status == quota.ADMITTED
    refused = admit(redis, "r3", a)
    assert (refused.status, refused.running) == (quota.TOO_MANY_RUNNING, 2)
    quota.settle(redis, P, 1, "r1", first.amount, 5, "{}")
    assert admit(redis, "r4", a).status == quota.ADMITTED


def test_holds_left_by_a_dead_process_expire(redis):
    assert admit(redis, "dead", ask(wanted=990, hold_ms=50)).admission.amount == 1000  # never settled
    assert admit(redis, "r1", ask()).status == quota.NO_QUOTA
    time.sleep(0.08)
    decision = admit(redis, "r2", ask(wanted=900))
    assert decision.admission.amount == 910
    assert state(redis)["held"] == 910


def test_rate_limit_refusal_reserves_nothing_and_quota_refusal_still_counts(redis):
    a = ask(rpm=2, wanted=500)
    assert admit(redis, "r1", a, (520, 0)).status == quota.ADMITTED
    no_quota = admit(redis, "r2", a, (520, 0))
    assert no_quota.status == quota.NO_QUOTA
    assert no_quota.window.remaining == 0
    limited = admit(redis, "r3", a, (520, 0))
    assert limited.status == quota.RATE_LIMITED
    assert limited.window.limited
    assert state(redis)["held"] == 510


def test_settle_after_redis_lost_its_data_still_bills(redis):
    held = admit(redis, "r1", ask()).admission.amount
    redis.flushdb()
    assert quota.settle(redis, P, 1, "r1", held, 40, json.dumps({"request_id": "r1"})) == 1
    assert state(redis) == {"pending": 40}  # no hold to free; the usage is still owed
    decision = admit(redis, "r2", ask(wanted=10_000), (1000, 300))
    assert decision.admission.amount == 1000 - 300 - 40


def extend(redis, request_id, held, wanted, fewest, totals=(1000, 0), hold_ms=60_000):
    return quota.extend(redis, P, 1, request_id, held, wanted, fewest, hold_ms, loader(totals), 0)


def test_extend_grows_a_hold_from_what_is_free(redis):
    held = admit(redis, "r1", ask(prompt_cost=10, wanted=900, upfront=40)).admission.amount
    assert held == 50
    assert extend(redis, "r1", held, 100, 20) == 100
    assert state(redis)["held"] == 150
    assert redis.zrange(quota.holds_key(P, 1), 0, -1) == [b"r1|150"]
    record = json.dumps({"request_id": "r1"})
    assert quota.settle(redis, P, 1, "r1", 150, 120, record) == 1  # settles the grown hold
    assert state(redis)["held"] == 0


@pytest.mark.parametrize(
    ("free_after_others", "wanted", "fewest", "granted"),
    [
        (500, 100, 20, 100),  # plenty
        (60, 100, 20, 60),  # less than asked, more than needed: take what there is
        (19, 100, 20, 0),  # not even what is needed: nothing, the stream must stop
        (0, 100, 1, 0),
    ],
)
def test_extend_takes_at_most_what_is_free_and_at_least_what_is_needed(
    redis, free_after_others, wanted, fewest, granted
):
    held = admit(redis, "r1", ask(prompt_cost=10, wanted=900, upfront=40)).admission.amount
    other = 1000 - held - free_after_others
    admit(redis, "other", ask(prompt_cost=other - 1, wanted=1))
    assert extend(redis, "r1", held, wanted, fewest) == granted
    assert state(redis)["held"] == 1000 - free_after_others + granted
    assert redis.zscore(quota.holds_key(P, 1), f"r1|{held + granted}") is not None


def test_extensions_racing_for_the_last_tokens_never_hold_more_than_the_quota(redis):
    holds = {
        f"r{i}": admit(redis, f"r{i}", ask(prompt_cost=10, wanted=900, upfront=40)).admission.amount for i in range(5)
    }
    assert sum(holds.values()) == 250
    for _ in range(20):
        for rid in holds:
            holds[rid] += extend(redis, rid, holds[rid], 30, 1)
    assert sum(holds.values()) == state(redis)["held"] == 1000


def test_extend_retakes_a_hold_that_expired_and_loads_a_lost_state(redis):
    held = admit(redis, "r1", ask(prompt_cost=10, wanted=900, upfront=40, hold_ms=30)).admission.amount
    time.sleep(0.05)
    admit(redis, "r2", ask(prompt_cost=10, wanted=1))  # sweeps the expired hold
    assert state(redis)["held"] == 11
    assert extend(redis, "r1", held, 100, 20) == 100
    assert state(redis)["held"] == 11 + held + 100
    redis.flushdb()
    calls = []
    assert quota.extend(redis, P, 1, "r1", held + 100, 100, 20, 60_000, loader((1000, 300), calls), 0) == 100
    assert calls == [1]
    assert state(redis)["held"] == held + 200


def everything(redis) -> dict[bytes, object]:
    """Every key of the test database with its value, whatever its type."""
    readers = {b"string": redis.get, b"hash": redis.hgetall, b"zset": lambda k: redis.zrange(k, 0, -1, withscores=True)}
    readers[b"set"] = redis.smembers
    return {name: readers[redis.type(name)](name) for name in redis.keys("*")}


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (b"v2", b"v1"),  # changed
        (None, b"v1"),  # deleted (a revoke drops the key's cache entry)
        (b"v1", b""),  # appeared where the caller saw none
    ],
)
def test_a_guard_that_moved_refuses_before_anything_changes(redis, stored, expected):
    admit(redis, "r0", ask(rpm=5))  # live state, a hold and a rate-limit entry to keep
    redis.set("t:guarded:other", b"same")
    if stored is not None:
        redis.set("t:guarded", stored)
    before = everything(redis)
    guard = [("t:guarded:other", b"same"), ("t:guarded", expected)]
    with pytest.raises(Stale):
        quota.admit(redis, P, 1, "r1", ask(rpm=5), loader((1000, 0)), 0, guard, reads=["t:guarded:other"])
    assert everything(redis) == before


def test_a_guard_that_holds_admits_and_reads_come_back_after_the_decision(redis):
    redis.set("t:snapshot", b'{"id": 1}')
    redis.set("t:epoch", b"7")
    guard = [("t:snapshot", b'{"id": 1}'), ("t:generation", b"")]  # b"": the key must not exist
    decision = quota.admit(redis, P, 1, "r1", ask(rpm=5), loader((1000, 0)), 0, guard, ["t:epoch", "t:none"])
    assert decision.status == quota.ADMITTED
    assert decision.admission.amount == 110
    assert decision.reads == (b"7", b"")
    assert decision.window.remaining == 4
    lowered = quota.admit(redis, P, 1, "r2", ask(wanted=10_000, rpm=5), loader((1000, 0)), 0, guard, ["t:epoch"])
    assert (lowered.status, lowered.reads) == (quota.ADMITTED, (b"7",))
    assert lowered.admission.cap == 1000 - 110 - 10  # the rest of the balance, after the first hold


def test_refusals_keep_their_fields_when_values_are_read_with_them(redis):
    guard = [("t:snapshot", b"")]
    quota.admit(redis, P, 1, "r1", ask(wanted=990, rpm=3), loader((1000, 0)), 0, guard, ["t:epoch"])
    no_quota = quota.admit(redis, P, 1, "r2", ask(rpm=3), loader((1000, 0)), 0, guard, ["t:epoch"])
    assert (no_quota.status, no_quota.held, no_quota.quota, no_quota.reads) == (quota.NO_QUOTA, 1000, 1000, (b"",))
    assert no_quota.window.remaining == 1
    quota.admit(redis, P, 1, "r3", ask(rpm=3), loader((1000, 0)), 0, guard, ["t:epoch"])
    limited = quota.admit(redis, P, 1, "r4", ask(rpm=3), loader((1000, 0)), 0, guard, ["t:epoch"])
    assert (limited.status, limited.window.limited, limited.window.limit) == (quota.RATE_LIMITED, True, 3)
