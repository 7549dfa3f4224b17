"""JSON on the relay's hot path: orjson, several times faster than the standard library at
what the relay does per request (the upstream body out, the answer back), and the standard
library for the rare value orjson refuses, so that nothing a client sends fails here."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON of anything json.dumps takes."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer beyond 64 bits, a lone surrogate, a non-string key
        # \u escapes: a lone surrogate has no UTF-8 form, but JSON can carry it escaped.
        return json.dumps(obj, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """json.loads; ValueError for what is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # a lone surrogate escape: valid JSON orjson refuses
        pass
    try:
        return json.loads(data)
    except RecursionError:  # nested deeper than the interpreter's stack: orjson stops at 1024
        raise ValueError("JSON nested too deeply") from None
