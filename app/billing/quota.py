"""Live token balances in Redis: the fast ledger. Key names are built here only."""

from __future__ import annotations

from typing import Any

# Credit only a balance that is already live; a missing one is rebuilt from SQL on next use.
_CREDIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return nil
"""


def balance_key(prefix: str, key_id: int) -> str:
    return f"{prefix}:bal:{key_id}"


def credit(redis: Any, prefix: str, key_id: int, tokens: int) -> None:
    redis.eval(_CREDIT, 1, balance_key(prefix, key_id), int(tokens))
