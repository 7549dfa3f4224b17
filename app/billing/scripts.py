"""Running Lua scripts in Redis with one round trip: EVALSHA, and EVAL only when the server lost
its script cache (after a restart or SCRIPT FLUSH)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

# The server's clock in milliseconds, so every process and machine agrees on "now".
NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Lua 5.1 prints numbers past 1e14 in exponent form, which INCRBY/HSET would then store as text
# that is not an integer; every number written back goes through int() (which also turns -0 into 0).
INT = """
local function int(x) return string.format('%.0f', x + 0) end
"""


class Script:
    """A Lua script, immutable; safe to share between apps and threads."""

    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, redis: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return redis.eval(self.source, len(keys), *keys, *args)
