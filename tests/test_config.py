"""Production refuses weak secrets and a PUBLIC_BASE_URL that is not https; database timeouts reach the driver."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config import engine_options, weak_secret_reason
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
    code = "from app import create_app; app = create_app(); " + env.pop("CODE", "")
    clean.update({"APP_ENV": "production", "DATABASE_URL": "sqlite://", **env})
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


def test_production_starts_with_strong_settings_and_sends_hsts():
    started = _start(
        SECRET_KEY=STRONG,
        PUBLIC_BASE_URL="https://shop.example",
        CODE="print(app.test_client().get('/healthz').headers.get('Strict-Transport-Security'))",
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "max-age=31536000"


TIMEOUTS = {"DATABASE_CONNECT_TIMEOUT": 3, "DATABASE_STATEMENT_TIMEOUT": 1.5, "DATABASE_POOL_TIMEOUT": 4.0}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "connect_args", "pool_timeout"),
    [
        (
            "postgresql://u@db/x",
            {"connect_timeout": 3, "options": "-c statement_timeout=1500 -c lock_timeout=1500"},
            4.0,
        ),
        (
            "postgresql+psycopg://u@db/x",
            {"connect_timeout": 3, "options": "-c statement_timeout=1500 -c lock_timeout=1500"},
            4.0,
        ),
        ("sqlite:///x.sqlite3", None, None),  # one file, no pool to wait for, its own busy timeout
    ],
)
def test_database_timeouts_reach_the_driver(url, connect_args, pool_timeout):
    options = engine_options(
        {"SQLALCHEMY_DATABASE_URI": url, "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True}, **TIMEOUTS}
    )
    assert options.get("connect_args") == connect_args
    assert options.get("pool_timeout") == pool_timeout
    assert options["pool_pre_ping"] is True


@pytest.mark.unit
def test_libpq_gets_at_least_its_two_second_minimum_and_explicit_connect_args_win():
    config = {"SQLALCHEMY_DATABASE_URI": "postgresql://u@db/x", **TIMEOUTS, "DATABASE_CONNECT_TIMEOUT": 0}
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"options": "-c search_path=rg"}}
    args = engine_options(config)["connect_args"]
    assert args == {"connect_timeout": 2, "options": "-c search_path=rg"}


@pytest.mark.parametrize(
    ("env", "pool_size"),
    [
        ({}, "1000"),
        ({"GUNICORN_WORKER_CONNECTIONS": "2500"}, "2500"),  # every client a worker serves has room
        ({"GUNICORN_WORKER_CONNECTIONS": "2500", "RELAY_POOL_SIZE": "300"}, "300"),
    ],
)
def test_the_upstream_pool_has_room_for_every_client_a_worker_serves(env, pool_size):
    started = _start(
        SECRET_KEY=STRONG,
        PUBLIC_BASE_URL="https://shop.example",
        CODE="print(app.extensions['relay_pool'].size)",
        **env,
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == pool_size
