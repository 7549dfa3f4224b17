"""Which upstream failures move a request to the next target, and the bounded attempt loop."""

from __future__ import annotations

import time

import pytest

from app.relay.errors import ClientGone, UpstreamConnectError, UpstreamHTTPError, UpstreamTimeout
from app.relay.failover import FailoverPolicy, first_answer, is_account_refused, is_retryable

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error", "retry", "refused"),
    [
        (UpstreamConnectError("refused"), True, False),
        (UpstreamTimeout("no headers"), True, False),
        (UpstreamHTTPError(500, "boom"), True, False),
        (UpstreamHTTPError(502, "error inside a 200"), True, False),
        (UpstreamHTTPError(503, "overloaded"), True, False),
        (UpstreamHTTPError(429, "busy"), True, False),
        (UpstreamHTTPError(401, "Authentication Fails"), True, True),
        (UpstreamHTTPError(402, "Insufficient Balance"), True, True),
        (UpstreamHTTPError(400, "bad request"), False, False),  # the request's fault: anywhere the same
        (UpstreamHTTPError(422, "invalid parameters"), False, False),
        (UpstreamHTTPError(403, "forbidden"), False, False),
    ],
)
def test_what_moves_a_request_on(error, retry, refused):
    assert (is_retryable(error), is_account_refused(error)) == (retry, refused)


def run(outcomes, max_attempts=3, seconds=10.0):
    """first_answer over targets named by index; outcomes[i] is what target i's attempt does."""
    tried, failed = [], []

    def attempt(target, left):
        tried.append(target)
        outcome = outcomes[target]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    policy = FailoverPolicy(max_attempts, time.monotonic() + seconds)
    try:
        result = first_answer(range(len(outcomes)), attempt, lambda t, e: failed.append(t), policy)
    except BaseException as exc:  # noqa: BLE001 - the table names what ends the loop
        result = type(exc).__name__
    return result, tried, failed


@pytest.mark.parametrize(
    ("outcomes", "max_attempts", "expected"),
    [
        (["ok"], 3, ((0, "ok"), [0], [])),
        ([UpstreamConnectError("x"), "ok"], 3, ((1, "ok"), [0, 1], [0])),
        ([UpstreamHTTPError(402, "x"), UpstreamHTTPError(503, "x"), "ok"], 3, ((2, "ok"), [0, 1, 2], [0, 1])),
        # bounded: the fourth target is never tried
        ([UpstreamTimeout("x")] * 3 + ["ok"], 3, ("UpstreamTimeout", [0, 1, 2], [0, 1, 2])),
        # a refusal of the request itself ends it at once
        ([UpstreamHTTPError(400, "x"), "ok"], 3, ("UpstreamHTTPError", [0], [0])),
        # a client that hung up ends it, and is no target's failure
        ([ClientGone(), "ok"], 3, ("ClientGone", [0], [])),
        ([], 3, ("NoTargetTried", [], [])),
    ],
)
def test_first_answer(outcomes, max_attempts, expected):
    assert run(outcomes, max_attempts) == expected


def test_no_attempt_starts_after_the_deadline():
    assert run([UpstreamConnectError("x"), "ok"], seconds=0.0) == ("NoTargetTried", [], [])
