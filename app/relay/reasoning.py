"""Removing chain-of-thought fields from chat completion chunks and messages (pure)."""

from __future__ import annotations

from typing import Any

REASONING_FIELDS = ("reasoning_content", "reasoning")


def _visible(delta: dict[str, Any]) -> bool:
    return bool(delta.get("content") or delta.get("tool_calls") or delta.get("refusal") or delta.get("function_call"))


def strip_chunk(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """Remove reasoning from every choice's delta, in place.

    Returns None when the chunk carried only reasoning, so that no empty delta reaches the client.
    A chunk with a finish_reason, usage or anything visible is kept.
    """
    choices = chunk.get("choices")
    if not choices:
        return chunk
    had_reasoning = False
    keep = False
    for choice in choices:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for field in REASONING_FIELDS:
                if field in delta:
                    had_reasoning = True
                    del delta[field]
            keep = keep or _visible(delta)
        keep = keep or bool(choice.get("finish_reason")) or bool(choice.get("logprobs"))
    if had_reasoning and not keep and not chunk.get("usage"):
        return None
    return chunk


def strip_message(body: dict[str, Any]) -> dict[str, Any]:
    """Remove reasoning from every choice's message of a non-streaming completion, in place."""
    for choice in body.get("choices") or ():
        message = choice.get("message")
        if isinstance(message, dict):
            for field in REASONING_FIELDS:
                message.pop(field, None)
    return body
