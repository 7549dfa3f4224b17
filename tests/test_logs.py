"""The request id: on every response, on every log line the request causes (also those a stream
writes after its view returned), as JSON lines when asked; reused from the client on pages only."""

from __future__ import annotations

import json
import logging
import signal
import sys

import pytest
import requests

from app import logs
from tests.api.helpers import chat_body


@pytest.mark.unit
@pytest.mark.parametrize(
    ("incoming", "reused"),
    [
        ("req-2026-12-01.abc:42", True),
        ("a" * 64, True),
        ("a" * 65, False),  # too long to be anyone's trace id
        ("short", False),
        ("has space in it", False),
        ("line\nbreak-injected", False),  # would forge a second log line
        (None, False),
        ("", False),
    ],
)
def test_an_incoming_id_is_reused_only_when_it_is_plainly_an_id(incoming, reused):
    got = logs.incoming_or_new(incoming)
    assert (got == incoming) is reused
    assert len(got) == 32 or reused


@pytest.mark.unit
def test_json_lines_carry_the_request_id_and_the_exception():
    record = logging.LogRecord("app.x", logging.ERROR, __file__, 1, "failed: %s", ("boom",), None)
    record.request_id = "r-12345678"
    try:
        raise ValueError("inner")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["request_id"] == "r-12345678" and line["message"] == "failed: boom" and line["level"] == "ERROR"
    assert "ValueError: inner" in line["exception"] and line["time"].endswith("Z")


def test_pages_reuse_a_valid_incoming_id_and_the_api_never_does(client, api_key):
    page = client.get("/guide", headers={"X-Request-Id": "trace-from-the-proxy-1"})
    assert page.headers["x-request-id"] == "trace-from-the-proxy-1"
    assert len(client.get("/guide").headers["x-request-id"]) == 32
    api = client.get(
        "/v1/models", headers={"X-Request-Id": "trace-from-the-proxy-1", "Authorization": f"Bearer {api_key}"}
    )
    # on the API the id is what a charge is idempotent by: the client must not choose it
    assert api.headers["x-request-id"] != "trace-from-the-proxy-1" and len(api.headers["x-request-id"]) == 32


def test_under_gunicorn_each_log_line_names_the_request_that_caused_it(gunicorn_factory, make_key, fake):
    server = gunicorn_factory(workers=1, LOG_FORMAT="json")
    _, key = make_key(10_000_000)
    # an upstream that counts far more prompt than was sent: the settlement, which runs after the
    # view has returned (the stream is being sent), logs a warning about it
    body = chat_body(stream=True, fake={"prompt_tokens": 5_000_000})
    response = requests.post(
        f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert b"[DONE]" in response.content
    request_id = response.headers["x-request-id"]
    server.proc.send_signal(signal.SIGINT)  # a quick stop: only its log is wanted now
    server.proc.wait(15)
    lines = [json.loads(line) for line in server.proc.stderr.read().decode().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line["request_id"] == request_id]
    assert any("counted" in line["message"] for line in mine), lines[-5:]
    assert all(line["request_id"] == request_id for line in lines if "counted" in line["message"])
