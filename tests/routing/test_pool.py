"""The choice of targets and the circuit breaker's states (app/routing/pool.py)."""

from __future__ import annotations

import pytest

from app.routing.pool import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    BreakerPolicy,
    Candidate,
    after_failure,
    after_success,
    attempt_order,
    breaker_state,
    is_waiting_for_room,
    weighted_order,
)

pytestmark = pytest.mark.unit


def c(name, priority=0, weight=1, **state):
    return Candidate(target=name, priority=priority, weight=weight, **state)


def names(order):
    return [x.target for x in order]


@pytest.mark.parametrize(
    ("candidates", "rand", "expected"),
    [
        ([c("a")], 0.5, ["a"]),
        # the highest priority first, the lower ones as the fallback
        ([c("low", 0), c("high", 10)], 0.0, ["high", "low"]),
        ([c("low", 0), c("high", 10)], 0.99, ["high", "low"]),
        # by weight within a priority: a takes [0, 0.75), b [0.75, 1)
        ([c("a", weight=3), c("b", weight=1)], 0.0, ["a", "b"]),
        ([c("a", weight=3), c("b", weight=1)], 0.74, ["a", "b"]),
        ([c("a", weight=3), c("b", weight=1)], 0.75, ["b", "a"]),
        ([c("a", weight=3), c("b", weight=1)], 0.999, ["b", "a"]),
        # out of the running: disabled, breaker open, account full
        ([c("a", 10, disabled=True), c("b", 0)], 0.0, ["b"]),
        ([c("a", 10, breaker=OPEN), c("b", 0)], 0.0, ["b"]),
        ([c("a", 10, in_flight=2, limit=2), c("b", 0)], 0.0, ["b"]),
        ([c("a", 10, in_flight=1, limit=2), c("b", 0)], 0.0, ["a", "b"]),
        # a half-open breaker lets a trial through: it is a candidate like the others
        ([c("a", 10, breaker=HALF_OPEN), c("b", 0)], 0.0, ["a", "b"]),
        ([c("a", disabled=True), c("b", breaker=OPEN)], 0.3, []),
        ([], 0.3, []),
        # a full group falls through to the next priority
        (
            [c("a", 5, in_flight=1, limit=1), c("b", 5, disabled=True), c("x", 1, weight=1), c("y", 1, weight=3)],
            0.5,
            ["y", "x"],
        ),
    ],
)
def test_attempt_order(candidates, rand, expected):
    assert names(attempt_order(candidates, rand)) == expected


@pytest.mark.parametrize(
    ("weights", "rand", "expected"),
    [
        # one number, rescaled to the pick's share after each pick
        ((1, 1, 1), 0.0, ["w0", "w1", "w2"]),
        ((1, 1, 1), 0.5, ["w1", "w2", "w0"]),  # w1 holds [1/3, 2/3); 0.5 is its middle: the upper half of w0|w2
        ((1, 1, 1), 0.99, ["w2", "w1", "w0"]),
        ((2, 0), 0.9, ["w0", "w1"]),  # weight 0 only after the others
    ],
)
def test_weighted_order_uses_one_number_for_the_whole_order(weights, rand, expected):
    group = [c(f"w{i}", weight=w) for i, w in enumerate(weights)]
    assert names(weighted_order(group, rand)) == expected


def test_weights_spread_requests_in_proportion():
    group = [c("a", weight=1), c("b", weight=3)]
    firsts = [attempt_order(group, i / 1000)[0].target for i in range(1000)]
    assert firsts.count("b") == 750


@pytest.mark.parametrize(
    ("candidates", "waiting"),
    [
        ([c("a", in_flight=1, limit=1)], True),
        ([c("a", in_flight=1, limit=1), c("b", disabled=True)], True),
        ([c("a", in_flight=0, limit=1)], False),
        ([c("a", disabled=True)], False),  # nothing to wait for: out of service is not busy
        ([c("a", breaker=OPEN, in_flight=1, limit=1)], False),
    ],
)
def test_waiting_for_room_only_when_usable_targets_are_all_full(candidates, waiting):
    assert is_waiting_for_room(candidates) is waiting


POLICY = BreakerPolicy(failures=3, backoff=10.0, max_backoff=35.0)


@pytest.mark.parametrize(
    ("before", "now", "after", "state_after"),
    [
        (Breaker(), 100.0, Breaker(1, 0.0, 0.0), CLOSED),
        (Breaker(1), 100.0, Breaker(2, 0.0, 0.0), CLOSED),
        (Breaker(2), 100.0, Breaker(3, 110.0, 10.0), OPEN),  # the third failure in a row opens it
        (Breaker(3, 110.0, 10.0), 105.0, Breaker(4, 110.0, 10.0), OPEN),  # open: a late failure changes nothing
        (Breaker(3, 110.0, 10.0), 111.0, Breaker(4, 131.0, 20.0), OPEN),  # a failed trial: twice as long
        (Breaker(4, 131.0, 20.0), 140.0, Breaker(5, 175.0, 35.0), OPEN),  # capped
        (Breaker(5, 175.0, 35.0), 200.0, Breaker(6, 235.0, 35.0), OPEN),
    ],
)
def test_breaker_after_a_failure(before, now, after, state_after):
    result = after_failure(before, now, POLICY)
    assert result == after
    assert breaker_state(result, now) == state_after


@pytest.mark.parametrize(
    ("breaker", "now", "state"),
    [
        (Breaker(), 0.0, CLOSED),
        (Breaker(2), 50.0, CLOSED),
        (Breaker(3, 110.0, 10.0), 109.9, OPEN),
        (Breaker(3, 110.0, 10.0), 110.0, HALF_OPEN),
        (Breaker(3, 110.0, 10.0), 1e9, HALF_OPEN),
    ],
)
def test_breaker_state(breaker, now, state):
    assert breaker_state(breaker, now) == state


@pytest.mark.parametrize("before", [Breaker(), Breaker(2), Breaker(3, 110.0, 10.0), Breaker(9, 1e9, 35.0)])
def test_a_success_closes_the_breaker(before):
    assert breaker_state(after_success(before), 0.0) == CLOSED
    assert after_success(before) == Breaker()
