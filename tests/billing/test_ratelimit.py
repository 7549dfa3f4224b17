"""Moving-window maths (pure tables) and the window scripts against the real Redis."""

from __future__ import annotations

import pytest

from app.billing import ratelimit
from app.billing.ratelimit import RateWindow, go_duration, retry_after_seconds, window_state

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("limit", "count", "blocking", "newest", "expected"),
    [
        (30, 0, 0, 0, RateWindow(30, 30, 0, 0)),
        (30, 1, 0, NOW, RateWindow(30, 29, 60_000, 0)),
        (30, 29, 0, NOW - 20_000, RateWindow(30, 1, 40_000, 0)),
        # Full: the oldest request arrived 45 s ago, so a slot frees in 15 s.
        (30, 30, NOW - 45_000, NOW - 1_000, RateWindow(30, 0, 59_000, 15_000)),
        # The limit was lowered below what the window holds: the blocking request is a later one.
        (2, 5, NOW - 10_000, NOW - 5_000, RateWindow(2, 0, 55_000, 50_000)),
        # A slot frees within the millisecond: still "come back in" at least 1 ms.
        (1, 1, NOW - 60_000, NOW - 60_000, RateWindow(1, 0, 0, 1)),
    ],
)
def test_window_state(limit, count, blocking, newest, expected):
    assert window_state(limit, count, blocking, newest, NOW) == expected


@pytest.mark.parametrize(("retry_ms", "seconds"), [(1, 1), (999, 1), (1000, 1), (1001, 2), (15_000, 15), (59_999, 60)])
def test_retry_after_rounds_up_to_whole_seconds(retry_ms, seconds):
    assert retry_after_seconds(RateWindow(1, 0, 0, retry_ms)) == seconds


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (250, "250ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (20_000, "20s"),
        (59_999, "59.999s"),
        (60_000, "1m0s"),
        (90_500, "1m30.5s"),
        (360_000, "6m0s"),
        (3_600_000, "1h0m0s"),
    ],
)
def test_reset_is_a_go_duration_like_openai_sends(ms, text):
    assert go_duration(ms) == text


def test_headers_name_the_limit_remaining_and_reset():
    assert ratelimit.headers(RateWindow(30, 12, 20_000, 0)) == {
        "x-ratelimit-limit-requests": "30",
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "20s",
    }


def test_hit_counts_until_the_limit_and_refusals_do_not_count(redis):
    windows = [ratelimit.hit(redis, "t", 1, f"r{i}", 3) for i in range(5)]
    assert [w.remaining for w in windows] == [2, 1, 0, 0, 0]
    assert [w.limited for w in windows] == [False, False, False, True, True]
    assert redis.zcard(ratelimit.window_key("t", 1)) == 3  # the two refused requests left no trace
    assert 59 <= retry_after_seconds(windows[-1]) <= 60
    assert ratelimit.peek(redis, "t", 1, 3).remaining == 0
    assert ratelimit.peek(redis, "t", 2, 3).remaining == 3  # windows are per key


def test_requests_older_than_a_minute_leave_the_window(redis):
    key = ratelimit.window_key("t", 1)
    now_ms = int(redis.time()[0]) * 1000
    redis.zadd(key, {"old1": now_ms - 61_000, "old2": now_ms - 60_500, "recent": now_ms - 30_000})
    assert ratelimit.peek(redis, "t", 1, 2).remaining == 1
    window = ratelimit.hit(redis, "t", 1, "new", 2)
    assert not window.limited and window.remaining == 0
    refused = ratelimit.hit(redis, "t", 1, "newer", 2)
    assert refused.limited
    assert 29 <= retry_after_seconds(refused) <= 31  # "recent" leaves first
