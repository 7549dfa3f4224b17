"""A lost key: a signed link to the purchase address, then a new secret for the same account.

The link proves the requester reads that mailbox, so nobody can revoke someone else's key by
typing their address. It names the key by id and the start of its current hash, so it works
once: after the replacement the hash has changed and the link is dead. The replacement itself is
conditional on the hash it read, so the link used many times at once still replaces the key once.
"""

from __future__ import annotations

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from app import jobs, secretbox
from app.billing import key_lifecycle
from app.extensions import db, get_redis
from app.models import ApiKey
from app.site import site_url

LINK_MAX_AGE = 3600
RESEND_SECONDS = 60  # an operator's resend of the same key within this is a repeated click
_SALT = "relaygate-lost-key"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_SALT)


def keys_for_email(email: str) -> list[ApiKey]:
    stmt = db.select(ApiKey).where(db.func.lower(ApiKey.email) == email.lower(), ApiKey.status == "active")
    return list(db.session.execute(stmt.order_by(ApiKey.id)).scalars())


def request_link(email: str, locale: str) -> None:
    """Queue the link email. At most one per address per 10 minutes (no mailbox flooding).

    The answer to the visitor is the same whether or not the address bought anything."""
    prefix = current_app.config["BILLING_REDIS_PREFIX"]
    if not get_redis().set(f"{prefix}:lostkey:{email.lower()}", "1", nx=True, ex=600):
        return
    jobs.enqueue_lost_key_link(email, locale, site_url())


def make_token(key: ApiKey) -> str:
    return _serializer().dumps({"k": key.id, "h": key.key_hash[:16]})


def resolve_token(token: str) -> ApiKey | None:
    """The active key a link names, or None when the link is expired, forged or already used."""
    try:
        data = _serializer().loads(token, max_age=LINK_MAX_AGE)
    except (SignatureExpired, BadSignature):
        return None
    key = db.session.get(ApiKey, int(data.get("k", 0))) if isinstance(data, dict) else None
    if key is None or key.status != "active" or key.key_hash[:16] != data.get("h"):
        return None
    return key


def confirm(token: str, locale: str) -> ApiKey | None:
    """Use a link: replace the key it names. Returns that key, or None when the link is expired,
    forged or used (also by a request racing this one)."""
    key = resolve_token(token)
    if key is None or not replace(key, locale):
        return None
    return key


def replace(key: ApiKey, locale: str) -> bool:
    """Rotate the key and queue the email with the new one, encrypted in the task's arguments.

    False, and nothing sent, when the key's secret changed since `key` was read: the replacement
    that won sends its own email."""
    plaintext = key_lifecycle.replace_key(key)
    if plaintext is None:
        return False
    ciphertext = secretbox.encrypt(plaintext, current_app.config["SECRET_KEY"])
    jobs.enqueue_replacement_key(key.id, ciphertext, locale, site_url())
    return True


def claim_resend(key_id: int) -> bool:
    """True for the first operator resend of this key in RESEND_SECONDS (the form carries no
    token of its own, so time is what tells a repeated click from a new request)."""
    prefix = current_app.config["BILLING_REDIS_PREFIX"]
    return bool(get_redis().set(f"{prefix}:resend:{key_id}", "1", nx=True, ex=RESEND_SECONDS))
