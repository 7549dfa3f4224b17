"""Token usage as reported by the upstream, and the estimates used before it is known (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Per DeepSeek's guidance, one English character is about 0.3 tokens and one Chinese character about
# 0.6. We count in tenths to stay in integers and round up, so estimates err on the high side.
_ASCII_TENTHS = 3
_OTHER_TENTHS = 6
_PER_MESSAGE = 4
_PER_REQUEST = 3


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens DeepSeek served from its context cache (prompt_cache_hit_tokens)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_dict(raw: Any) -> Usage | None:
    """Read an OpenAI/DeepSeek usage object; None when there is none."""
    if not isinstance(raw, dict):
        return None
    completion_details = raw.get("completion_tokens_details") or {}
    prompt_details = raw.get("prompt_tokens_details") or {}
    cached = _int(raw.get("prompt_cache_hit_tokens")) or _int(prompt_details.get("cached_tokens"))
    # DeepSeek: prompt_tokens = hit + miss. Should the parts ever add up to more, bill the parts.
    split = cached + _int(raw.get("prompt_cache_miss_tokens"))
    return Usage(
        prompt_tokens=max(_int(raw.get("prompt_tokens")), split),
        completion_tokens=_int(raw.get("completion_tokens")),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
        cached_tokens=cached,
    )


def estimate_text_tokens(text: str) -> int:
    if not text:
        return 0
    ascii_count = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))
    other = len(text) - ascii_count
    return -(-(ascii_count * _ASCII_TENTHS + other * _OTHER_TENTHS) // 10)


def _content_text(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]
            elif isinstance(part, dict):
                yield "x" * 300  # an image or other media part: a fixed, generous allowance


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """An upper-leaning estimate of the prompt tokens of a chat completion request."""
    messages = body.get("messages") or []
    total = _PER_REQUEST
    for message in messages:
        total += _PER_MESSAGE
        if not isinstance(message, dict):
            continue
        for key in ("content", "reasoning_content", "name"):
            for text in _content_text(message.get(key)):
                total += estimate_text_tokens(text)
        if message.get("tool_calls"):
            total += estimate_text_tokens(str(message["tool_calls"]))
    if body.get("tools"):
        total += estimate_text_tokens(str(body["tools"]))
    return total
