"""The pool's live state (app/routing/health.py) on the real Redis and on the embedded fakeredis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis as redis_lib

from app.routing import health
from app.routing.pool import CLOSED, HALF_OPEN, OPEN, BreakerPolicy
from app.routing.routes import TargetInfo

P = "rgtest"
POLICY = BreakerPolicy(failures=2, backoff=10.0, max_backoff=100.0)


@pytest.fixture(params=["redis", "fakeredis"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fakeredis":
        yield fakeredis.FakeRedis(server=fakeredis.FakeServer())
        return
    client = redis_lib.Redis.from_url(f"redis://127.0.0.1:6379/{int(os.environ.get('TEST_REDIS_DB', '11'))}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def target(upstream_id: int = 1, limit: int | None = 2) -> TargetInfo:
    return TargetInfo(upstream_id, f"up{upstream_id}", "http://x", None, "m", {}, 0, 1, limit)


def test_slots_are_counted_across_clients_and_expire(store):
    t = target(limit=2)
    assert health.acquire(store, P, t, "a", 1000.0, 30)
    assert health.acquire(store, P, t, "b", 1000.0, 30)
    assert not health.acquire(store, P, t, "c", 1001.0, 30)
    (live,) = health.candidates(store, P, [t], 1001.0)
    assert (live.in_flight, live.has_room) == (2, False)
    health.release(store, P, t, "a")
    assert health.acquire(store, P, t, "c", 1002.0, 30)
    # a process that died holding "b" and "c": their leases run out
    assert health.acquire(store, P, t, "d", 1040.0, 30)
    assert health.candidates(store, P, [t], 1040.0)[0].in_flight == 1


def test_an_unlimited_account_counts_nothing(store):
    t = target(limit=None)
    assert all(health.acquire(store, P, t, str(i), 1000.0, 30) for i in range(50))
    assert store.keys("*") == []


def test_failures_open_the_breaker_and_a_trial_decides(store):
    t = target()
    health.record_failure(store, P, 1, 100.0, POLICY)
    assert health.candidates(store, P, [t], 100.0)[0].breaker == CLOSED
    health.record_failure(store, P, 1, 101.0, POLICY)
    assert health.candidates(store, P, [t], 105.0)[0].breaker == OPEN
    half_open = health.candidates(store, P, [t], 111.5)[0]
    assert half_open.breaker == HALF_OPEN
    assert health.claim_trial(store, P, 1, 5)
    assert not health.claim_trial(store, P, 1, 5)  # one trial at a time
    health.record_failure(store, P, 1, 112.0, POLICY)  # the trial failed: open twice as long
    assert health.candidates(store, P, [t], 131.0)[0].breaker == OPEN
    assert health.candidates(store, P, [t], 132.5)[0].breaker == HALF_OPEN
    health.record_success(store, P, health.candidates(store, P, [t], 132.5)[0])
    closed = health.candidates(store, P, [t], 133.0)[0]
    assert (closed.breaker, closed.failures) == (CLOSED, 0)


def test_an_account_is_disabled_once_until_restored(store):
    t = target()
    assert health.disable(store, P, 1, "Insufficient Balance")
    assert not health.disable(store, P, 1, "Authentication Fails")  # the first reason stays
    live = health.candidates(store, P, [t], 0.0)[0]
    assert (live.disabled, health.describe(live)) == (True, "disabled")
    health.restore(store, P, 1)
    assert health.describe(health.candidates(store, P, [t], 0.0)[0]) == "healthy"


def _epoch(store: Any) -> Any:
    return store.get(health.epoch_key(P)) or b"0"


WRITERS = {
    "disable": lambda store, t: health.disable(store, P, 1, "Insufficient Balance"),
    "failure": lambda store, t: health.record_failure(store, P, 1, 100.0, POLICY),
    "restore": lambda store, t: health.restore(store, P, 1),
    "success after a failure": lambda store, t: health.record_success(
        store, P, health.candidates(store, P, [t], 100.0)[0]
    ),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_change_of_an_accounts_state_moves_the_epoch(store, writer):
    t = target(limit=None)
    if writer in ("restore", "success after a failure"):
        health.disable(store, P, 1, "x") if writer == "restore" else health.record_failure(store, P, 1, 99.0, POLICY)
    before = _epoch(store)
    WRITERS[writer](store, t)
    assert _epoch(store) != before


def test_a_process_reads_an_accounts_state_again_only_when_the_epoch_moved(store):
    t, cache, other = target(limit=None), health.StateCache(), store  # `other`: another process's writes
    assert not health.candidates(store, P, [t], 0.0, _epoch(store), cache)[0].disabled
    seen = _epoch(store)
    health.disable(other, P, 1, "Insufficient Balance")
    # A request that read the epoch before the change was made sees what it would have read then;
    # the next request reads the new epoch with its key, and with it the change.
    assert not health.candidates(store, P, [t], 0.0, seen, cache)[0].disabled
    assert health.candidates(store, P, [t], 0.0, _epoch(store), cache)[0].disabled
    health.restore(other, P, 1)
    assert not health.candidates(store, P, [t], 0.0, _epoch(store), cache)[0].disabled


def test_an_unchanged_epoch_costs_no_read_of_the_state(store):
    t, cache = target(limit=None), health.StateCache()
    epoch = _epoch(store)
    health.candidates(store, P, [t], 0.0, epoch, cache)
    # Written behind the epoch's back (no writer in the gateway does this): a request that still
    # sees the old epoch does not notice, because it never read the hash.
    store.hset(health.state_key(P, 1), "disabled", "written directly")
    assert not health.candidates(store, P, [t], 0.0, epoch, cache)[0].disabled
    assert health.candidates(store, P, [t], 0.0, None, cache)[0].disabled  # no epoch: read afresh
