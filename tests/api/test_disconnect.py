"""A client that hangs up mid-stream makes the gateway close the upstream within a second."""

from __future__ import annotations

import time

import pytest

from tests.api.helpers import chat_body, open_raw_stream


def wait_for_close(fake, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = fake.requests[-1] if fake.requests else None
        if seen is not None and seen.closed_early_at is not None:
            return seen.closed_early_at
        time.sleep(0.02)
    return None


@pytest.fixture(params=["werkzeug", "gunicorn"])
def server_port(request, live_server, gunicorn_factory):
    if request.param == "werkzeug":
        return live_server.port
    return gunicorn_factory(workers=1).port


@pytest.mark.parametrize(
    "script",
    [
        {"tokens": 400, "delay": 0.05},  # content flowing: the next write to the client fails
        {"reasoning": 400, "delay": 0.05, "tokens": 1},  # reasoning stripped: nothing is written to the client
    ],
    ids=["while-content-streams", "while-reasoning-is-stripped"],
)
def test_upstream_closed_within_a_second_of_client_disconnect(server_port, api_key, fake, script):
    sock, received = open_raw_stream(server_port, api_key, chat_body(stream=True, fake=script), b"keep-alive")
    assert b"200 OK" in received
    time.sleep(0.3)
    sock.close()
    closed_at = time.monotonic()
    upstream_closed = wait_for_close(fake, timeout=3.0)
    assert upstream_closed is not None, "the upstream connection was left open"
    assert upstream_closed - closed_at < 1.0
    assert fake.requests[-1].finished_at is None
