"""A built-in demo upstream, used when no upstream key is configured.

It answers in DeepSeek's wire format (reasoning deltas, a usage chunk, [DONE]) so that a newcomer
can chat through the whole gateway at once; every reply says it comes from the demo.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from app.relay.usage import estimate_prompt_tokens, estimate_text_tokens

DEMO_BASE_URL = "demo:"
_WORD_DELAY = 0.02


def is_demo(base_url: str, api_key: str | None) -> bool:
    return base_url == DEMO_BASE_URL or not api_key


def _reply_text(body: dict[str, Any]) -> str:
    last = ""
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            last = message["content"]
    echo = (last[:80] + "…") if len(last) > 80 else last
    return (
        "[demo] Hello from RelayGate's built-in demo upstream. Set UPSTREAM_API_KEY to your DeepSeek key "
        f"to get real answers. You said: {echo}"
    )


class DemoResponse:
    """Quacks like relay.upstream.UpstreamResponse."""

    status = 200

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body
        self._model = str(body.get("model", "demo"))
        self._id = f"demo-{uuid.uuid4()}"
        self.closed = False
        self._text = _reply_text(body)
        self._prompt = estimate_prompt_tokens(body)
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0:
            self._text = " ".join(self._text.split(" ")[:max_tokens])

    def header(self, name: str) -> str | None:
        return None

    def _usage(self, reasoning_tokens: int) -> dict[str, int | dict[str, int]]:
        completion = estimate_text_tokens(self._text) + reasoning_tokens
        return {
            "prompt_tokens": self._prompt,
            "completion_tokens": completion,
            "total_tokens": self._prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def iter_chunks(self) -> Iterator[bytes]:
        yield b": keep-alive\n\n"
        yield self._chunk({"role": "assistant", "content": None, "reasoning_content": "The user wants a demo."})
        words = self._text.split(" ")
        for index, word in enumerate(words):
            if self.closed:
                return
            time.sleep(_WORD_DELAY)
            yield self._chunk({"content": word if index == 0 else " " + word})
        yield self._chunk({"content": ""}, finish="stop")
        usage = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model,
            "choices": [],
            "usage": self._usage(6),
        }
        yield b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    def read_all(self) -> bytes:
        message = {"role": "assistant", "content": self._text, "reasoning_content": "The user wants a demo."}
        payload = {
            "id": self._id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self._model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": self._usage(6),
        }
        return json.dumps(payload).encode()

    def release(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True
