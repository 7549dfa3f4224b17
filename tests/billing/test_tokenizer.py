"""DeepSeek's tokenizer as the tighter prompt bound: never under the count of the rendered chat."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.billing import tokenizer
from app.relay.bounds import prompt_token_bound
from tests.relay.test_bounds import HOSTILE, deepseek, rendered_tokens  # noqa: F401 - deepseek is a fixture

pytestmark = pytest.mark.unit

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def chat(text: str) -> dict:
    turns = [text[i : i + 400] for i in range(0, len(text), 400)]
    roles = ("user", "assistant")
    return {"model": "m", "messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}


@pytest.mark.parametrize("text", [*HOSTILE.values(), README], ids=[*HOSTILE.keys(), "readme"])
def test_the_counted_bound_is_never_under_deepseeks_count_and_never_over_the_byte_bound(deepseek, text):  # noqa: F811
    body = chat(text)
    counted = tokenizer.prompt_token_bound(body, 10**7)
    assert rendered_tokens(deepseek, body) <= counted <= prompt_token_bound(body)


def test_prose_is_counted_far_tighter_than_by_bytes(deepseek):  # noqa: F811
    body = chat(README)
    counted = tokenizer.prompt_token_bound(body, 10**7)
    assert counted < prompt_token_bound(body) / 3
    assert counted < rendered_tokens(deepseek, body) * 1.2


def test_a_body_over_the_size_limit_is_not_counted():
    assert tokenizer.prompt_token_bound(chat("x" * 5000), 4000) is None
    assert tokenizer.prompt_token_bound(chat("x" * 3000), 4000) is not None
