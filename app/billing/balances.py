"""What a key has left, as buyers and operators see it."""

from __future__ import annotations

from typing import Any


def remaining_tokens(row: Any) -> int:
    return max(0, row.tokens_quota - row.tokens_used)
