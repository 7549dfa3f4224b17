"""Generating, hashing and displaying client API keys (pure)."""

from __future__ import annotations

import hashlib
import secrets
import string

KEY_PREFIX = "sk-gateway-"
_ALPHABET = string.ascii_letters + string.digits
_RANDOM_CHARS = 40  # about 238 bits


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))


def hash_key(key: str) -> str:
    """SHA-256 hex. Keys are long random strings, so a fast hash is safe and keeps auth cheap."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """What may be shown and logged: the first characters and the last four."""
    return f"{key[:15]}…{key[-4:]}"


def mask(key: str) -> str:
    """For messages about a key that may not be ours: never echo more than a few characters."""
    if len(key) <= 12:
        return "***"
    return f"{key[:6]}***{key[-4:]}"


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX) and len(value) == len(KEY_PREFIX) + _RANDOM_CHARS and value.isascii()
