"""Shared fixtures: a real Redis (own database number), SQLite by default or PostgreSQL when
TEST_DATABASE_URL is set, and a fake DeepSeek on loopback."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from werkzeug.serving import make_server

from app import create_app
from app.billing import accounts, catalog
from app.extensions import db as _db
from config import TestingConfig
from tests.fake_deepseek import FakeDeepSeek, FakeServer

REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
UPSTREAM_SECRET = "sk-upstream-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer(FakeDeepSeek(api_key=UPSTREAM_SECRET)).start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_server: FakeServer) -> Iterator[FakeDeepSeek]:
    fake_server.fake.reset()
    yield fake_server.fake
    fake_server.fake.reset()


@pytest.fixture(scope="session")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"


def app_overrides(db_url: str, fake_base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "SQLALCHEMY_DATABASE_URI": db_url,
        "REDIS_URL": REDIS_URL,
        "UPSTREAM_BASE_URL": fake_base_url,
        "UPSTREAM_API_KEY": UPSTREAM_SECRET,
        "RELAY_KEEPALIVE_INTERVAL": 10.0,
        **extra,
    }


@pytest.fixture
def app_extra() -> dict[str, Any]:
    """Override in a test module to change the app's configuration."""
    return {}


@pytest.fixture
def app(db_url: str, fake_server: FakeServer, app_extra: dict[str, Any]) -> Iterator[Any]:
    app = create_app(TestingConfig, app_overrides(db_url, fake_server.base_url, **app_extra))
    client = redis_lib.Redis.from_url(REDIS_URL)
    client.flushdb()
    with app.app_context():
        _db.drop_all()
        _db.create_all()
        catalog.seed_defaults(fake_server.base_url, UPSTREAM_SECRET, app.config["SECRET_KEY"])
        yield app
        _db.session.remove()
        _db.drop_all()
        _db.engine.dispose()
    client.flushdb()
    client.close()


@pytest.fixture
def redis(app: Any) -> redis_lib.Redis:
    return app.extensions["redis"]


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Any) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def make_key(app: Any) -> Any:
    def make(tokens: int = 1_000_000, **kwargs: Any) -> tuple[Any, str]:
        return accounts.create_key(tokens=tokens, **kwargs)

    return make


@pytest.fixture
def api_key(make_key: Any) -> str:
    return make_key()[1]


class LiveServer:
    """The app served by werkzeug's threaded server on a real socket, in this process."""

    def __init__(self, app: Any) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def live_server(app: Any) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    yield server
    server.stop()


def tmp_sqlite_url() -> str:
    return f"sqlite:///{Path(tempfile.mkdtemp()) / 'gw.sqlite3'}"
