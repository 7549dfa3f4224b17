"""A Redis of the test's own (never the shared one), frozen and killed under real gunicorn workers:
clients get a clear 503 within seconds, never a hang, and /readyz tells a load balancer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.api.helpers import chat_body
from tests.conftest import free_port, wait_for_port


class OwnRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OwnRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis().start()
    yield server
    server.stop()


def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_frozen_then_dead_redis_gets_clients_a_503_in_seconds_and_readyz_says_so(
    app, make_key, fake, gunicorn_factory, own_redis
):
    server = gunicorn_factory(workers=2, TEST_REDIS_URL=own_redis.url, REDIS_SOCKET_TIMEOUT="1.5")
    _, key = make_key(1_000_000)
    headers = {"Authorization": f"Bearer {key}"}

    def chat() -> requests.Response:
        return requests.post(f"{server.url}/v1/chat/completions", json=chat_body(), headers=headers, timeout=30)

    def ready() -> requests.Response:
        return requests.get(f"{server.url}/readyz", timeout=30)

    assert chat().status_code == 200
    assert ready().json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200

    own_redis.signal(signal.SIGSTOP)  # frozen: accepts nothing, answers nothing
    try:
        response, took = _timed(chat)
        assert response.status_code == 503 and took < 5, (response.status_code, took)
        error = response.json()["error"]
        assert error["code"] == "service_unavailable" and "on our side" in error["message"]
        assert response.headers["Retry-After"] == "5"
        response, took = _timed(ready)
        assert (response.status_code, response.json()["checks"]["database"]) == (503, "ok") and took < 5
        store, took = _timed(lambda: requests.get(f"{server.url}/api/key", headers=headers, timeout=30))
        assert store.status_code == 503 and took < 5
    finally:
        own_redis.signal(signal.SIGCONT)
    assert chat().status_code == 200  # back by itself

    own_redis.stop()  # dead: refused at once
    response, took = _timed(chat)
    assert response.status_code == 503 and took < 3
    assert ready().status_code == 503
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200  # the process itself is fine


class SilentDatabase:
    """A PostgreSQL address that accepts connections and never says a word, like a frozen server or
    a firewall that swallows packets after the handshake."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"postgresql://relaygate@127.0.0.1:{self.listener.getsockname()[1]}/relaygate"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)  # kept open, never answered

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_database() -> Iterator[SilentDatabase]:
    server = SilentDatabase()
    yield server
    server.close()


def test_a_database_that_never_answers_gets_clients_a_503_in_seconds(gunicorn_factory, silent_database):
    server = gunicorn_factory(workers=1, TEST_DATABASE_URL=silent_database.url, DATABASE_CONNECT_TIMEOUT="2")
    headers = {"Authorization": "Bearer sk-gateway-" + "a" * 48}

    chat, took = _timed(
        lambda: requests.post(f"{server.url}/v1/chat/completions", json=chat_body(), headers=headers, timeout=60)
    )
    assert chat.status_code == 503 and took < 6, (chat.status_code, took)
    assert chat.json()["error"]["code"] == "service_unavailable" and chat.headers["Retry-After"] == "5"

    page, took = _timed(lambda: requests.get(f"{server.url}/", timeout=60))
    assert page.status_code == 503 and took < 6, (page.status_code, took)
    assert "text/html" in page.headers["Content-Type"] and "briefly unavailable" in page.text

    ready, took = _timed(lambda: requests.get(f"{server.url}/readyz", timeout=60))
    assert ready.status_code == 503 and took < 6
    assert ready.json()["checks"]["database"].startswith("OperationalError")
    assert silent_database.accepted  # the gateway really did connect and wait
