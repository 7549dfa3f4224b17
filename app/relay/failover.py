"""Trying a request on one target after another until one answers, before the client has
been sent anything: bounded attempts within a total deadline.

What moves a request on: no connection, a connect or header timeout, a 5xx, a 429, an error
object inside a 200, and the account refused (401, 402). A refusal of the request itself (400,
404, 422) would be refused anywhere, and goes to the client as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from app.relay.errors import UpstreamError, UpstreamHTTPError

T = TypeVar("T")
R = TypeVar("R")

ACCOUNT_REFUSED = frozenset({401, 402})


class NoTargetTried(UpstreamError):
    """No target could be tried: none usable, or none with a free slot."""


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    max_attempts: int
    deadline: float  # time.monotonic() after which no attempt starts


def is_account_refused(exc: UpstreamError) -> bool:
    return isinstance(exc, UpstreamHTTPError) and exc.status in ACCOUNT_REFUSED


def is_retryable(exc: UpstreamError) -> bool:
    if isinstance(exc, UpstreamHTTPError):
        return exc.status >= 500 or exc.status == 429 or exc.status in ACCOUNT_REFUSED
    return True


def first_answer(
    targets: Iterable[T],
    attempt: Callable[[T, float], R],
    on_failure: Callable[[T, UpstreamError], None],
    policy: FailoverPolicy,
) -> tuple[T, R]:
    """The first target whose attempt(target, seconds_left) returns, and what it returned.
    Raises the last attempt's UpstreamError, the first one that is not retryable, or
    NoTargetTried. Anything else an attempt raises (the client hung up) ends it at once."""
    last: UpstreamError | None = None
    remaining = iter(targets)  # taken one at a time: taking a target may hold a slot for it
    for _ in range(policy.max_attempts):
        left = policy.deadline - time.monotonic()
        target = next(remaining, None) if left > 0 else None
        if target is None:
            break
        try:
            return target, attempt(target, left)
        except UpstreamError as exc:
            on_failure(target, exc)
            if not is_retryable(exc):
                raise
            last = exc
    if last is None:
        raise NoTargetTried("no upstream target could be tried")
    raise last
