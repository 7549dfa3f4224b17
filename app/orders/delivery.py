"""The storefront's emails: the new key or top-up receipt, the lost-key link, the replacement key,
the key a gift code bought, the low-balance alert; and the admins' alerts about an upstream account
taken out or running low.

Each is sent by a worker task that may be retried: a short Redis lock stops two copies of the
same task from sending at once, and a record of the successful send (Order.emailed_at, or a
marker for replacements and for each admin told of an upstream event) stops a later run. A crash
between the SMTP server's "250" and that record is the one window left; the stable Message-ID
lets mail systems drop that duplicate.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

from flask import current_app, render_template
from flask_babel import force_locale
from flask_babel import lazy_gettext as _l

from app import mailer, secretbox
from app.billing import low_balance
from app.billing.key_format import display_prefix
from app.billing.statements import remaining_tokens
from app.extensions import db, get_redis
from app.models import AdminUser, ApiKey, Order, Upstream, utcnow
from app.orders import fulfilment, lostkey
from app.orders.plans import display_name
from app.orders.status import OrderStatus
from app.site import site_url

log = logging.getLogger(__name__)

_LOCK_SECONDS = 300
_SENT_MARKER_SECONDS = 30 * 86400


def _redis_key(name: str) -> str:
    return f"{current_app.config['BILLING_REDIS_PREFIX']}:mail:{name}"


@contextmanager
def _sending(name: str) -> Iterator[bool]:
    """True when this caller holds the send lock for `name`; callers re-check "already sent" inside."""
    redis = get_redis()
    lock = _redis_key(f"lock:{name}")
    acquired = bool(redis.set(lock, "1", nx=True, ex=_LOCK_SECONDS))
    try:
        yield acquired
    finally:
        if acquired:
            redis.delete(lock)


def _settings() -> mailer.SmtpSettings | None:
    try:
        return mailer.SmtpSettings.from_config(current_app.config)
    except mailer.MailNotConfigured:
        log.warning("SMTP_HOST is not set: storefront email not sent")
        return None


def _message(
    template: str, locale: str, to: str, message_id: str | None, site: str | None, **context: Any
) -> EmailMessage:
    settings = mailer.SmtpSettings.from_config(current_app.config)
    context.update(base_url=site_url(site), app_name=current_app.config.get("APP_NAME", "RelayGate"))
    with force_locale(locale):
        subject = str(SUBJECTS[template]) % context
        text = render_template(f"email/{template}.txt", **context)
        html = render_template(f"email/{template}.html", subject=subject, **context)
    return mailer.build_message(
        sender=settings.sender, to=to, subject=subject, text=text, html=html, message_id=message_id
    )


SUBJECTS = {
    "order_key": _l("Your %(app_name)s API key"),
    "topup": _l("%(tokens_text)s tokens added to your %(app_name)s key"),
    "lost_key_link": _l("Replace your %(app_name)s API key"),
    "replacement_key": _l("Your new %(app_name)s API key"),
    "gift_key": _l("Your %(app_name)s API key from a gift code"),
    "upstream_disabled": _l("%(app_name)s: upstream %(name)s was taken out of service"),
    "upstream_low_balance": _l("%(app_name)s: upstream %(name)s is running low"),
    "low_balance": _l("Your %(app_name)s key %(key_prefix)s is running low"),
}


def send_order_email(order_id: int) -> bool:
    """The new key (or the top-up receipt) to the purchase address, once. True if sent now."""
    order = db.session.get(Order, order_id)
    if order is None or order.status != OrderStatus.FULFILLED or order.emailed_at is not None:
        return False
    settings = _settings()
    if settings is None:
        return False
    with _sending(f"order:{order.id}") as may_send:
        db.session.refresh(order)
        if not may_send or order.emailed_at is not None:
            return False
        mailer.send(_order_message(order), settings)
        db.session.execute(
            db.update(Order).where(Order.id == order.id, Order.emailed_at.is_(None)).values(emailed_at=utcnow())
        )
        db.session.commit()
    fulfilment.wipe_delivered_keys()
    log.info("order %s: email sent", order.public_id)
    return True


def _order_message(order: Order) -> EmailMessage:
    key = db.session.get(ApiKey, order.api_key_id)
    context = {
        "order": order,
        "plan_name": display_name(order.plan, order.locale),
        "tokens_text": f"{order.tokens:,}",
        "key_prefix": key.prefix if key else "",
        "remaining": remaining_tokens(key) if key else 0,
        "model_ids": ("deepseek-v4-flash", "deepseek-v4-pro"),
    }
    domain = _domain()
    if order.kind == "topup":
        return _message(
            "topup", order.locale, order.email, f"<topup-{order.public_id}@{domain}>", order.site_url, **context
        )
    plaintext = fulfilment.read_key_for_email(order)
    message_id = f"<order-{order.public_id}@{domain}>"
    return _message("order_key", order.locale, order.email, message_id, order.site_url, key=plaintext, **context)


def _domain() -> str:
    sender = current_app.config.get("MAIL_FROM") or "localhost"
    return sender.rsplit("@", 1)[-1].strip(" >") or "localhost"


def send_lost_key_link(email: str, locale: str, site: str | None = None) -> bool:
    keys = lostkey.keys_for_email(email)
    settings = _settings()
    if not keys or settings is None:
        return False
    base = site_url(site)
    links = [(key.prefix, f"{base}/lost-key/confirm/{lostkey.make_token(key)}") for key in keys]
    with _sending(f"link:{hashlib.sha256(email.lower().encode()).hexdigest()[:24]}") as may_send:
        if may_send:
            mailer.send(_message("lost_key_link", locale, keys[0].email or email, None, site, links=links), settings)
    return may_send


def send_replacement_key(key_id: int, ciphertext: str, locale: str, site: str | None = None) -> bool:
    """The new key after a replacement. `ciphertext` is the key encrypted with app.secretbox."""
    return _send_key("replacement_key", key_id, ciphertext, locale, site)


def send_gift_key(key_id: int, ciphertext: str, locale: str, site: str | None = None) -> bool:
    """The new key a gift code bought, to the address given with it. `ciphertext` as above."""
    return _send_key("gift_key", key_id, ciphertext, locale, site)


def _send_key(template: str, key_id: int, ciphertext: str, locale: str, site: str | None) -> bool:
    """Email a key once (a marker per key secret stops a retried task), to the address on its row."""
    key = db.session.get(ApiKey, key_id)
    settings = _settings()
    if key is None or not key.email or settings is None:
        return False
    kind = template.removesuffix("_key")
    marker = _redis_key(f"sent:{kind}:{hashlib.sha256(ciphertext.encode()).hexdigest()[:32]}")
    redis = get_redis()
    plaintext = secretbox.decrypt(ciphertext, current_app.config["SECRET_KEY"])
    with _sending(f"{kind}:{key_id}") as may_send:
        if not may_send or redis.exists(marker):
            return False
        message = _message(
            template,
            locale,
            key.email,
            f"<{kind}-{key.id}-{marker[-12:]}@{_domain()}>",
            site,
            key=plaintext,
            key_prefix=display_prefix(plaintext),
            tokens_text=f"{key.tokens_quota:,}",
        )
        mailer.send(message, settings)
        redis.set(marker, "1", ex=_SENT_MARKER_SECONDS)
    return True


# -- the operator's alerts ----------------------------------------------------------------------


def send_upstream_alert(upstream_id: int, kind: str, event: str) -> int:
    """Tell every active admin that an upstream account was taken out ("disabled") or runs low
    ("low_balance"), in the site's default language. One email per admin per `event`: a marker per
    admin stops a retried task from repeating those that went out. Nothing is sent when it is over
    by the time the task runs (the account is back, or was topped up). Returns how many were sent."""
    upstream = db.session.get(Upstream, upstream_id)
    settings = _settings()
    if upstream is None or settings is None or not _is_alert_due(upstream, kind):
        return 0
    admins = db.session.execute(db.select(AdminUser).where(AdminUser.active).order_by(AdminUser.id)).scalars().all()
    redis, sent = get_redis(), 0
    with _sending(f"upstream:{event}") as may_send:
        for admin in admins if may_send else ():
            marker = _redis_key(f"sent:upstream:{event}:{admin.id}")
            if redis.exists(marker):
                continue
            message_id = f"<{event}-{admin.id}@{_domain()}>"
            mailer.send(_upstream_message(upstream, kind, admin.email, message_id), settings)
            redis.set(marker, "1", ex=_SENT_MARKER_SECONDS)
            sent += 1
    log.info("upstream %s: %s alert sent to %s admin(s)", upstream.name, kind, sent)
    return sent


def _is_alert_due(upstream: Upstream, kind: str) -> bool:
    if kind == "disabled":
        return upstream.status == "disabled"
    return kind == "low_balance" and upstream.low_balance_warned_at is not None


def _upstream_message(upstream: Upstream, kind: str, to: str, message_id: str) -> EmailMessage:
    locale = current_app.config.get("BABEL_DEFAULT_LOCALE") or "en"
    return _message(f"upstream_{kind}", locale, to, message_id, None, upstream=upstream, name=upstream.name)


def send_low_balance_email(key_id: int, quota: int) -> bool:
    """The low-balance email of a key whose alert was claimed at `quota` (app.billing.low_balance),
    once: low_balance_emailed_quota records the send, so a retried or repeated task sends nothing
    more. Nothing is sent when the buyer opted out or topped up meanwhile. True if sent now."""
    key = db.session.get(ApiKey, key_id)
    settings = _settings()
    if key is None or not low_balance.is_email_due(key, quota) or settings is None:
        return False
    with _sending(f"low_balance:{key_id}:{quota}") as may_send:
        db.session.refresh(key)
        if not may_send or not low_balance.is_email_due(key, quota):
            return False
        mailer.send(_low_balance_message(key, quota), settings)
        low_balance.record_emailed(key_id, quota)
    log.info("key %s: low-balance email sent", key_id)
    return True


def _low_balance_message(key: ApiKey, quota: int) -> EmailMessage:
    # The key has no address of its own: links follow the one its latest order was made on.
    site = db.session.execute(
        db.select(Order.site_url).where(Order.api_key_id == key.id).order_by(Order.id.desc()).limit(1)
    ).scalar_one_or_none()
    return _message(
        "low_balance",
        key.low_balance_locale,
        key.low_balance_email or "",
        f"<low-balance-{key.id}-{quota}@{_domain()}>",
        site,
        key_prefix=key.prefix,
        remaining=remaining_tokens(key),
        quota=quota,
        topup_url=f"{site_url(site)}/topup",
    )
