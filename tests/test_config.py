"""Production refuses weak secrets and a PUBLIC_BASE_URL that is not https."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config import weak_secret_reason
from tests.conftest import ROOT

STRONG = "Zk3v9QwPp0LrT7yXcB2nM5sD8fH1jK4gE6aU"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("secret", "refused"),
    [
        ("", True),
        (None, True),
        ("dev-insecure-change-me", True),
        ("a", True),
        ("changeme", True),
        ("x" * 64, True),  # long, but one character
        ("please-change-me-before-going-live-ok", True),
        ("short-but-random-9Qx", True),
        (STRONG, False),
    ],
)
def test_weak_secrets_are_named(secret, refused):
    assert (weak_secret_reason(secret) is not None) is refused


def _start(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TEST_"))}
    clean.update({"APP_ENV": "production", "DATABASE_URL": "sqlite://", **env})
    code = "from app import create_app; create_app()"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SECRET_KEY": "dev-insecure-change-me", "PUBLIC_BASE_URL": "https://shop.example"}, "published default"),
        ({"SECRET_KEY": "a", "PUBLIC_BASE_URL": "https://shop.example"}, "at least 32"),
        ({"SECRET_KEY": STRONG, "PUBLIC_BASE_URL": "http://shop.example"}, "https://"),
        ({"SECRET_KEY": STRONG}, "https://"),
    ],
)
def test_production_does_not_start_with_a_weak_setting(env, says):
    started = _start(**env)
    assert started.returncode != 0
    assert says in started.stderr
    assert "token_urlsafe" in started.stderr or "PUBLIC_BASE_URL" in started.stderr


def test_production_starts_with_strong_settings():
    started = _start(SECRET_KEY=STRONG, PUBLIC_BASE_URL="https://shop.example")
    assert started.returncode == 0, started.stderr
