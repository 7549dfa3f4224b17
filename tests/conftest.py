"""Shared fixtures: a real Redis (own database number), SQLite by default or PostgreSQL when
TEST_DATABASE_URL is set, and a fake DeepSeek on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from werkzeug.serving import make_server

from app import create_app
from app.billing import key_lifecycle
from app.extensions import db as _db
from app.routing import catalog
from config import TestingConfig
from tests.fake_deepseek import FakeDeepSeek, FakeServer

REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
UPSTREAM_SECRET = "sk-upstream-test-secret"
# Usage spooled by the gateways a test starts: never the repository's instance/usage-spool.
SPOOL_DIR = tempfile.mkdtemp(prefix="relaygate-test-spool-")


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail the block with TimeoutError after `seconds`, whatever hangs inside it (main thread only)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"ran past its {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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
        "USAGE_SPOOL_DIR": SPOOL_DIR,
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
        return key_lifecycle.create_key(tokens=tokens, **kwargs)

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


ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def subprocess_env(db_url: str, **extra: str) -> dict[str, str]:
    """Environment for a gateway or worker process that shares this test's database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env.update(
        {
            "APP_ENV": "testing",
            "TEST_DATABASE_URL": db_url,
            "TEST_REDIS_URL": REDIS_URL,
            "USAGE_SPOOL_DIR": SPOOL_DIR,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


def _bin(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else name


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


class Gunicorn:
    """The production serving stack (gunicorn, gevent workers) in a subprocess."""

    def __init__(self, db_url: str, workers: int = 2, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                _bin("gunicorn"),
                "-c",
                "gunicorn.conf.py",
                "-k",
                "gevent",
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{self.port}",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=subprocess_env(db_url, **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port)

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def gunicorn_factory(app: Any, db_url: str) -> Iterator[Any]:
    started: list[Gunicorn] = []

    def start(workers: int = 2, **env: str) -> Gunicorn:
        server = Gunicorn(db_url, workers, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class CeleryWorker:
    """A real Celery worker on the real Redis broker, sharing this test's database."""

    def __init__(self, app: Any, db_url: str, **env: str) -> None:
        self.app = app
        self.proc = subprocess.Popen(
            [
                _bin("celery"),
                "-A",
                "workers.celery_app",
                "worker",
                "--pool=solo",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"test{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env=subprocess_env(db_url, **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        celery = self.app.extensions["celery"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.proc.stderr.read().decode()[-2000:]}")
            if celery.control.ping(timeout=0.5):
                return
        raise TimeoutError("celery worker did not start")

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def celery_worker_factory(app: Any, db_url: str) -> Iterator[Any]:
    started: list[CeleryWorker] = []

    def start(**env: str) -> CeleryWorker:
        worker = CeleryWorker(app, db_url, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def celery_worker(celery_worker_factory: Any) -> CeleryWorker:
    return celery_worker_factory()


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError("condition not met in time")


_IO_FIXTURES = {"app", "client", "redis", "runner", "live_server", "gunicorn_factory", "celery_worker", "fake"}


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """A test marked unit may not reach for a server, a database or Redis."""
    for item in items:
        if item.get_closest_marker("unit") is not None:
            used = _IO_FIXTURES & set(getattr(item, "fixturenames", ()))
            if used:
                raise pytest.UsageError(f"{item.nodeid} is marked unit but uses {sorted(used)}")
