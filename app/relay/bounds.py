"""Counting tokens before the upstream has counted them (pure).

The prompt is the client's to write, so its count must be an upper bound no text can beat:
DeepSeek's tokenizer, like every byte-level BPE tokenizer, never makes a token of less than one
byte of UTF-8, so the UTF-8 length bounds the tokens whatever the text is. The bound is loose
(3.8 to 4.6 times DeepSeek V4's count on chat transcripts: bench/prompt_bound.py), which is why
it only sizes holds; bills come from the upstream's own count.

The answer is the upstream's to write, and DeepSeek streams one token an event: an event counts
as one token, and one more for every 4 bytes of text past the longest common token (an upstream
that packs tokens together). What a request is billed never exceeds what it held, so a count
that falls short can cost the operator, never the key's bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

# The chat template's role markers and separators, per message and per request (DeepSeek V4
# spends 2 to 4 tokens a message); generous, since the bound must hold for any template.
PER_MESSAGE = 8
PER_REQUEST = 16
# Tool definitions are rendered into a system preamble whose own words are not in the request.
TOOLS_PREAMBLE = 1024
# An image or other media part is not text: its tokens depend on its pixels, not on its URL.
PER_MEDIA_PART = 4096
ONE_TOKEN_BYTES = 16  # escaped text of one streamed token, generously: "        return" is one
BYTES_PER_OUTPUT_TOKEN = 4

# Fields of a streamed delta that carry generated text, matched in their escaped JSON form.
_VISIBLE = re.compile(rb'"(?:content|refusal|arguments|name)"\s*:\s*"((?:[^"\\]|\\.)*)"', re.DOTALL)
_REASONING = re.compile(rb'"(?:reasoning_content|reasoning)"\s*:\s*"((?:[^"\\]|\\.)*)"', re.DOTALL)


class InvalidText(ValueError):
    """A string that is not valid Unicode (a lone surrogate, e.g. an emoji cut in half)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} contains a lone UTF-16 surrogate")
        self.path = path


def utf8_length(text: str, path: str = "text") -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidText(path) from None


def prompt_token_bound(body: Mapping[str, Any]) -> int:
    """At most how many prompt tokens the upstream can count for this request body.

    Everything in the body counts at one token per UTF-8 byte of its compact JSON form (field
    names, values and punctuation alike, so nothing a template might render is missed), plus
    overhead(). Raises InvalidText for a string that cannot be encoded, naming where it is."""
    try:
        size = len(orjson.dumps(body))  # the bytes the upstream is sent (jsonbytes.dumps)
    except TypeError:  # a lone surrogate, an integer past 64 bits, nesting past orjson's limit
        size = _walked_size(body)  # names the bad string, and knows no depth limit
    return overhead(body) + size


def _walked_size(body: Mapping[str, Any]) -> int:
    return sum(utf8_length(text, path) for path, text in texts(body))


def texts(body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, text) for every field name, string and number in the body, walked iteratively so
    that no nesting depth breaks it; `where` is a path such as messages[0].content."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path or "body", value
        elif isinstance(value, Mapping):
            for key, item in value.items():
                yield path or "body", str(key)
                stack.append((f"{path}.{key}" if path else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
        elif value is not None and not isinstance(value, bool):
            yield path, str(value)  # numbers: their digits, should a template print them


def overhead(body: Mapping[str, Any]) -> int:
    """Tokens the request costs beyond its text: the chat template, tools, images."""
    total = PER_REQUEST
    messages = body.get("messages")
    if isinstance(messages, list):
        total += PER_MESSAGE * len(messages)
        for message in messages:
            content = message.get("content") if isinstance(message, Mapping) else None
            if isinstance(content, list):
                total += PER_MEDIA_PART * sum(
                    1 for part in content if isinstance(part, Mapping) and _is_media_part(part)
                )
    if body.get("tools") or body.get("functions"):
        total += TOOLS_PREAMBLE
    return total


def _is_media_part(part: Mapping[str, Any]) -> bool:
    kind = part.get("type")
    return isinstance(kind, str) and kind not in ("text", "function") and kind != ""


def output_tokens(data: bytes) -> tuple[int, int]:
    """(visible, reasoning) tokens in one streamed event: what a client sees (content, refusals,
    tool calls) and reasoning. 0 for an event without generated text (a role or a usage chunk)."""
    visible = _count(_VISIBLE.findall(data)) if b'"' in data else 0
    reasoning = _count(_REASONING.findall(data)) if b'"reasoning' in data else 0
    return visible, reasoning


def _count(texts: list[bytes]) -> int:
    size = sum(len(text) for text in texts)
    if not size:
        return 0
    return 1 + max(0, -(-(size - ONE_TOKEN_BYTES) // BYTES_PER_OUTPUT_TOKEN))
