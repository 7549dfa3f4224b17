import pytest

from app.relay.usage import Usage, estimate_prompt_tokens, estimate_text_tokens, usage_from_dict

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "usage"),
    [
        (None, None),
        ("x", None),
        ({"prompt_tokens": 10, "completion_tokens": 5}, Usage(10, 5, 0, 0)),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 7,
                "completion_tokens_details": {"reasoning_tokens": 4},
                "prompt_cache_hit_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 3},
            },
            Usage(10, 7, 4, 3),
        ),
        ({"prompt_tokens": 2, "prompt_tokens_details": {"cached_tokens": 2}}, Usage(2, 0, 0, 2)),
        ({"prompt_tokens": -1, "completion_tokens": "5", "total_tokens": 4}, Usage(0, 0, 0, 0)),
        # DeepSeek's split: prompt_tokens = hit + miss
        (
            {"prompt_tokens": 1_000, "prompt_cache_hit_tokens": 900, "prompt_cache_miss_tokens": 100},
            Usage(1_000, 0, 0, 900),
        ),
        # parts adding up to more than prompt_tokens: the parts are billed, never fewer
        ({"prompt_tokens": 50, "prompt_cache_hit_tokens": 40, "prompt_cache_miss_tokens": 30}, Usage(70, 0, 0, 40)),
        ({"prompt_cache_miss_tokens": 12}, Usage(12, 0, 0, 0)),
    ],
)
def test_usage_from_dict(raw, usage):
    assert usage_from_dict(raw) == usage


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("a", 1), ("abcdefghij", 3), ("你好", 2), ("你好你好你", 3), ("ab你", 2)],
)
def test_estimate_text_tokens_rounds_up(text, tokens):
    assert estimate_text_tokens(text) == tokens


def test_prompt_estimate_counts_messages_parts_and_tools():
    base = estimate_prompt_tokens({"messages": [{"role": "user", "content": ""}]})
    longer = estimate_prompt_tokens({"messages": [{"role": "user", "content": "x" * 100}]})
    assert longer - base == 30
    parts = estimate_prompt_tokens(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 100}, {"type": "image_url"}]}]}
    )
    assert parts > longer
    with_tools = estimate_prompt_tokens({"messages": [{"role": "user", "content": ""}], "tools": [{"a": "b" * 50}]})
    assert with_tools > base


def test_estimate_is_not_below_fake_upstream_count_for_english():
    # The test upstream counts 1 token per 4 characters plus 5; the estimate must not be lower.
    body = {"messages": [{"role": "user", "content": "hello world " * 50}]}
    assert estimate_prompt_tokens(body) >= 5 + len("hello world " * 50) // 4
