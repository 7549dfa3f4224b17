"""Encryption at rest for secrets the app must read back (upstream keys, a key awaiting delivery).

Fernet (AES-128-CBC + HMAC-SHA256) keyed from SECRET_KEY: a database dump alone reveals nothing.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken


class SecretUnreadable(Exception):
    """Encrypted under another SECRET_KEY, or damaged."""


def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"relaygate-secretbox:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str, secret_key: str) -> str:
    return _fernet(secret_key).encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str, secret_key: str) -> str:
    try:
        return _fernet(secret_key).decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("cannot decrypt: was SECRET_KEY changed?") from exc
