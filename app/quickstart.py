"""`flask --app wsgi quickstart`: what a newcomer needs to start chatting, printed as a banner.

Development only: it keeps one quickstart key in instance/quickstart.key (mode 600) so that the
key printed stays the same across restarts of a local install.
"""

from __future__ import annotations

import os
import secrets

import click
from flask import current_app

from app.billing import key_lifecycle
from app.billing.key_format import hash_key
from app.extensions import db
from app.models import AdminUser, ApiKey, Upstream
from app.relay.demo import is_demo

QUICKSTART_TOKENS = 1_000_000
ADMIN_EMAIL = "admin@localhost"


def _quickstart_key() -> str:
    path = os.path.join(current_app.instance_path, "quickstart.key")
    if os.path.exists(path):
        with open(path) as handle:
            key = handle.read().strip()
        row = db.session.execute(db.select(ApiKey).filter_by(key_hash=hash_key(key))).scalar_one_or_none()
        if row is not None and row.status == "active":
            return key
    _row, key = key_lifecycle.create_key(tokens=QUICKSTART_TOKENS, name="quickstart")
    os.makedirs(current_app.instance_path, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def _admin_line() -> str:
    admin = db.session.execute(db.select(AdminUser).order_by(AdminUser.id)).scalars().first()
    if admin is not None:
        return f"log in as {admin.email} (reset: flask --app wsgi admin create --email {admin.email} --password NEW)"
    password = secrets.token_urlsafe(12)
    user = AdminUser(email=ADMIN_EMAIL)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return f"log in as {ADMIN_EMAIL} / {password}   (shown once; change it with flask --app wsgi admin create)"


def _is_demo_upstream() -> bool:
    upstream = db.session.execute(db.select(Upstream).order_by(Upstream.id)).scalars().first()
    if upstream is None:
        return True
    return is_demo(upstream.base_url, upstream.api_key_encrypted or current_app.config["UPSTREAM_API_KEY"])


@click.command("quickstart")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8000, type=int)
def quickstart_command(host: str, port: int) -> None:
    """Print how to log in and a working example."""
    key = _quickstart_key()
    base = f"http://{host}:{port}"
    demo = _is_demo_upstream()
    upstream = "DEMO upstream (canned replies; set UPSTREAM_API_KEY for DeepSeek)" if demo else "DeepSeek"
    click.echo(f"""
================================ RelayGate ================================
 Gateway    {base}/v1        upstream: {upstream}
 Storefront {base}/
 Admin      {base}/admin     {_admin_line()}

 Your quickstart key ({QUICKSTART_TOKENS:,} tokens):
   {key}

 Try it:
   curl {base}/v1/chat/completions \\
     -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
     -d '{{"model": "deepseek-v4-flash", "stream": true, "messages": [{{"role": "user", "content": "Hello"}}]}}'

 SillyTavern: API = Chat Completion, Source = Custom (OpenAI-compatible)
   Custom Endpoint (Base URL): {base}/v1
   Custom API Key:             the key above
   Model ID:                   deepseek-v4-flash   (or deepseek-v4-pro)
   Streaming: on
===========================================================================
""")
