"""Route defaults (app/routing/catalog.py): a new route's cache-hit multiplier."""

from __future__ import annotations

import pytest

from app.routing.catalog import default_cache_hit_multiplier

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("upstream_model", "prompt", "cache_hit"),
    [
        ("deepseek-v4-flash", 10_000, 200),  # DeepSeek Flash: a hit costs 1/50 of a miss
        ("deepseek-flash", 10_000, 200),
        ("deepseek-chat", 15_000, 300),  # served by Flash
        ("deepseek-reasoner", 10_000, 200),
        ("DeepSeek-V4-Pro", 10_000, 334),  # Pro: 1/30, rounded up to the unit
        ("deepseek-v4-pro", 20_000, 667),
        ("deepseek-v4-pro", 30_000, 1_000),
        ("deepseek-v4-flash", 1, 1),  # never rounded down to free
        ("gpt-4o-mini", 20_000, 20_000),  # not DeepSeek: a hit costs what a miss does
        ("", 10_000, 10_000),
    ],
)
def test_a_new_route_gets_deepseeks_hit_to_miss_price_ratio(upstream_model, prompt, cache_hit):
    assert default_cache_hit_multiplier(upstream_model, prompt) == cache_hit
