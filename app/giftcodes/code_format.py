"""Generating, normalising, hashing and displaying gift codes (pure).

A code is `RG-` and 20 Crockford base32 symbols in groups of four: 100 random bits. People type
codes from a chat message or a receipt, so redeeming accepts lower case, spaces, missing dashes,
a missing `RG-`, and Crockford's look-alikes (O for 0, I and L for 1).
"""

from __future__ import annotations

import hashlib
import secrets

CODE_PREFIX = "RG"
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
GROUPS, GROUP_SIZE = 5, 4
SYMBOLS = GROUPS * GROUP_SIZE  # 5 bits each: 100 bits
_LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_SEPARATORS = str.maketrans("", "", " -_\t\r\n\u00a0\u2010\u2011\u2012\u2013\u2014\u2212")


def generate_code() -> str:
    return format_code("".join(secrets.choice(ALPHABET) for _ in range(SYMBOLS)))


def format_code(symbols: str) -> str:
    groups = [symbols[i : i + GROUP_SIZE] for i in range(0, SYMBOLS, GROUP_SIZE)]
    return "-".join((CODE_PREFIX, *groups))


def normalise(text: str) -> str | None:
    """The canonical form of a typed code, or None when it cannot be one of ours."""
    symbols = (text or "").upper().translate(_SEPARATORS)
    if len(symbols) == SYMBOLS + len(CODE_PREFIX) and symbols.startswith(CODE_PREFIX):
        symbols = symbols[len(CODE_PREFIX) :]
    symbols = symbols.translate(_LOOK_ALIKES)
    if len(symbols) != SYMBOLS or any(s not in ALPHABET for s in symbols):
        return None
    return format_code(symbols)


def hash_code(code: str) -> str:
    """SHA-256 hex of the canonical form. 100 random bits make a fast hash safe, as for API keys."""
    return hashlib.sha256(code.encode()).hexdigest()


def display_prefix(code: str) -> str:
    """What may be shown and logged: `RG-` and the first group (20 of the 100 bits)."""
    return code[: len(CODE_PREFIX) + 1 + GROUP_SIZE]
