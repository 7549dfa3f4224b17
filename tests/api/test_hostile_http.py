"""Hostile HTTP framing through the real serving stack (gunicorn, gevent workers): a body that stops
arriving is cut off at the deadline, a body over the limit is a 413 however it is framed, broken
chunked encoding is a 400, and every one of them is OpenAI-shaped JSON on /v1 and a page elsewhere."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import gevent
import gevent.socket
import pytest
from werkzeug.exceptions import RequestTimeout

from app.request_body import DeadlineBody
from tests.api.helpers import chat_body

LIMIT = 64 * 1024
BODY_TIMEOUT = 1.5
SLACK = 5.0  # a busy machine's scheduling; a body left waiting would hold until the client's 15 s timeout


@pytest.fixture
def server(gunicorn_factory):
    return gunicorn_factory(workers=1, RELAY_MAX_BODY_BYTES=str(LIMIT), REQUEST_BODY_TIMEOUT=str(BODY_TIMEOUT))


@pytest.fixture
def key(make_key):
    return make_key(1_000_000)[1]


class Exchange:
    """One request over a bare socket: what the client sent, what came back, and when."""

    def __init__(self, url: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=15)
        self.started = time.monotonic()

    def send(self, data: bytes) -> Exchange:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)  # the gateway may answer and hang up before the whole body is sent
        return self

    def send_in_background(self, data: bytes) -> Exchange:
        threading.Thread(target=self.send, args=(data,), daemon=True).start()
        return self

    def response(self) -> tuple[int, dict[str, str], bytes, float]:
        raw = b""
        try:
            while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < _length(raw):
                piece = self.sock.recv(65536)
                if not piece:
                    break
                raw += piece
        except ConnectionResetError:
            pass
        took = time.monotonic() - self.started
        self.sock.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body, took


def _length(raw: bytes) -> int:
    for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def head(path: str, *lines: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode(
        "latin-1"
    )


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def api_error(body: bytes) -> dict:
    return json.loads(body)["error"]


def test_a_body_that_stops_arriving_is_cut_off_at_the_deadline(server, key):
    payload = json.dumps(chat_body()).encode()
    exchange = Exchange(server.url).send(
        head("/v1/chat/completions", f"Authorization: Bearer {key}", f"Content-Length: {len(payload) + 100}") + payload
    )
    status, headers, body, took = exchange.response()
    assert status == 408 and BODY_TIMEOUT <= took < BODY_TIMEOUT + SLACK, (status, took)
    assert headers["content-type"] == "application/json"
    assert "did not arrive within 1.5 seconds" in api_error(body)["message"]


def test_a_body_sent_a_byte_at_a_time_is_cut_off_at_the_same_deadline(server, key):
    payload = json.dumps(chat_body()).encode()
    exchange = Exchange(server.url).send(
        head("/v1/chat/completions", f"Authorization: Bearer {key}", f"Content-Length: {len(payload)}")
    )

    def trickle() -> None:
        for byte in payload:
            time.sleep(0.2)  # always a byte within any idle timeout; never the whole body
            if exchange.sock.fileno() < 0:
                return
            exchange.send(bytes([byte]))

    threading.Thread(target=trickle, daemon=True).start()
    status, _, body, took = exchange.response()
    assert status == 408 and took < BODY_TIMEOUT + SLACK, (status, took)


def test_a_chunked_body_over_the_limit_is_a_413_not_a_cut_off_body(server, key):
    oversized = json.dumps(chat_body(content="x" * LIMIT)).encode()
    exchange = Exchange(server.url).send_in_background(
        head("/v1/chat/completions", f"Authorization: Bearer {key}", "Transfer-Encoding: chunked")
        + chunked(*(oversized[i : i + 4096] for i in range(0, len(oversized), 4096)))
    )
    status, headers, body, _ = exchange.response()
    assert status == 413 and headers["content-type"] == "application/json"
    assert "larger than the" in api_error(body)["message"]


def test_a_content_length_over_the_limit_is_a_413_before_the_body_is_read(server, key):
    exchange = Exchange(server.url).send(
        head("/v1/chat/completions", f"Authorization: Bearer {key}", f"Content-Length: {LIMIT + 1}")
    )
    status, _, body, _ = exchange.response()
    # no body is sent at all: had the gateway waited for it, the answer would be the deadline's 408
    assert status == 413 and "larger than the" in api_error(body)["message"]


def test_a_chunked_request_within_the_limit_is_answered_as_usual(server, key, fake):
    payload = json.dumps(chat_body(content="hello in pieces")).encode()
    exchange = Exchange(server.url).send(
        head("/v1/chat/completions", f"Authorization: Bearer {key}", "Transfer-Encoding: chunked")
        + chunked(payload[:10], payload[10:25], payload[25:])
    )
    status, _, body, _ = exchange.response()
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"]
    assert fake.requests[-1].body["messages"][-1]["content"] == "hello in pieces"


@pytest.mark.parametrize(
    ("framing", "expected"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", 400),  # not a hex size
        (b"3\r\nabcdef\r\n0\r\n\r\n", 400),  # more data than the size said
        (b"ffffffffffffffffffff\r\nabc", 408),  # a size no one can send: the rest never arrives
    ],
)
def test_broken_chunked_encoding_is_a_4xx_not_a_500(server, key, framing, expected):
    exchange = Exchange(server.url).send(
        head("/v1/chat/completions", f"Authorization: Bearer {key}", "Transfer-Encoding: chunked") + framing
    )
    status, headers, body, took = exchange.response()
    assert status == expected and headers["content-type"] == "application/json", (status, body)
    assert api_error(body)["type"] == "invalid_request_error" and took < BODY_TIMEOUT + SLACK


def test_a_store_form_that_stops_arriving_gets_a_page_not_json(server):
    exchange = Exchange(server.url).send(
        head("/lost-key", "Content-Type: application/x-www-form-urlencoded", "Content-Length: 500") + b"email=a"
    )
    status, headers, body, took = exchange.response()
    assert status == 408 and took < BODY_TIMEOUT + SLACK
    assert headers["content-type"].startswith("text/html") and b"did not arrive" in body


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        ("Authorization: Bearer \xff\xfe", 401, "invalid_api_key"),
        ("Authorization: Basic dXNlcjpwYXNz", 401, "invalid_api_key"),
        ("Authorization: Bearer", 401, None),
        ("Authorization: " + "B" * 7000, 401, None),
    ],
)
def test_malformed_authorization_headers_get_json_errors(server, header, status, code):
    payload = json.dumps(chat_body()).encode()
    exchange = Exchange(server.url).send(
        head("/v1/chat/completions", header, f"Content-Length: {len(payload)}") + payload
    )
    got, headers, body, _ = exchange.response()
    assert got == status and headers["content-type"] == "application/json", (got, body)
    if code:
        assert api_error(body)["code"] == code


@pytest.mark.unit
def test_the_deadline_covers_the_whole_body_not_each_read():
    ours, theirs = gevent.socket.socketpair()
    body = DeadlineBody(ours.makefile("rb"), time.monotonic() + 0.5, 0.5)

    def trickle() -> None:
        for _ in range(20):
            theirs.sendall(b"x")
            gevent.sleep(0.1)

    sender = gevent.spawn(trickle)
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        while body.read(1):
            pass
    assert 0.45 < time.monotonic() - started < 1.0
    sender.kill()
    ours.close()
    theirs.close()
