"""Reading a chat completion request: every field the quota hold depends on is checked here,
before anything is held, with OpenAI's wording (a 400 `invalid_request_error` naming the field)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.api.errors import ApiError
from app.relay.bounds import InvalidText, prompt_token_bound

_TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    max_tokens: int | None  # the smaller of max_tokens and max_completion_tokens; None if neither
    choices: int  # n
    prompt_bound: int  # prompt tokens the upstream can count at most (relay.bounds)


def parse_chat_request(raw: bytes) -> ChatRequest:
    body = _json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        message = "Missing 'model': set it to a model id such as deepseek-v4-flash."
        raise ApiError(400, message, param="model", reason="Missing Model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400,
            "Missing 'messages': send a non-empty list of chat messages.",
            param="messages",
            reason="Missing Messages",
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false.", param="stream", reason="Invalid Stream Flag")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object", options)
    limits = [value for field in _TOKEN_LIMITS if (value := _positive_int(body, field)) is not None]
    return ChatRequest(
        body=body,
        model=model,
        stream=stream is True,
        max_tokens=min(limits) if limits else None,
        choices=_positive_int(body, "n") or 1,
        prompt_bound=_prompt_bound(body),
    )


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.", reason="Invalid JSON") from None
    except RecursionError:
        raise ApiError(
            400, "The request body is nested too deeply to be a chat request.", reason="Invalid JSON"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", reason="Invalid Request")
    return body


def _positive_int(body: dict[str, Any], field: str) -> int | None:
    """OpenAI's rule for token limits and `n`: absent or null, or an integer of at least 1.
    A float, even 100.0, or a numeric string is refused, not rounded or parsed."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid_type(field, "an integer", value)
    if value < 1:
        raise ApiError(
            400,
            f"Invalid '{field}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
            param=field,
            code="integer_below_min_value",
            reason="Invalid Parameter",
        )
    return value


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a decimal number", str: "a string", list: "an array"}


def _invalid_type(field: str, expected: str, value: Any) -> ApiError:
    got = _TYPE_NAMES.get(type(value), "an object")
    return ApiError(
        400,
        f"Invalid type for '{field}': expected {expected}, but got {got} instead.",
        param=field,
        code="invalid_type",
        reason="Invalid Parameter",
    )


def _prompt_bound(body: dict[str, Any]) -> int:
    try:
        return prompt_token_bound(body)
    except InvalidText as exc:
        raise ApiError(
            400,
            f"'{exc.path[:200]}' is not valid Unicode text: it holds a lone UTF-16 surrogate (often half of an emoji "
            "cut by a client). Remove or complete the character and send again.",
            param=exc.path[:200],
            code="invalid_text",
            reason="Invalid Text",
        ) from None
