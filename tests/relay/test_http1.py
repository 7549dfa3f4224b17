"""The relay's HTTP/1.1 client against a real loopback server that answers as scripted: framing,
keep-alive, servers that close, stall, lie about lengths or speak garbage, TLS, and the pool."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from app.relay import http1
from tests.tls import self_signed, server_context

Reply = Callable[[socket.socket], None]


def send(data: bytes) -> Reply:
    return lambda conn: conn.sendall(data)


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(*parts: bytes) -> bytes:
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + framed


def close_connection(conn: socket.socket) -> None:
    conn.shutdown(socket.SHUT_RDWR)
    conn.close()


class Scripted:
    """A loopback server: each request it reads gets the next reply; a reply that closes the
    connection ends it. Records every request and counts connections."""

    def __init__(self, replies: list[Reply], tls: ssl.SSLContext | None = None) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed_by_client = threading.Event()
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/v1/chat/completions", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        self.closed_by_client.set()
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                self.replies.pop(0)(conn)
        except OSError:
            self.closed_by_client.set()

    def stop(self) -> None:
        self._listener.close()


@pytest.fixture
def serve():
    servers: list[Scripted] = []

    def start(*replies: Reply, tls: ssl.SSLContext | None = None) -> Scripted:
        servers.append(Scripted(list(replies), tls))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def post(pool: http1.Pool, url: str, body: bytes = b'{"a":1}', **headers: str) -> http1.Response:
    return pool.post(url, {"Authorization": "Bearer k", **headers}, body, connect_timeout=2, read_timeout=2)


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (ok(b'{"x":1}'), b'{"x":1}'),
        (chunked(b"data: 1\n\n", b"data: 2\n\n"), b"data: 1\n\ndata: 2\n\n"),
        (chunked(), b""),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (ok(b"", "X-Extra: y"), b""),
    ],
)
def test_bodies_framed_by_length_or_chunks_are_read_whole_and_the_connection_is_kept(serve, raw, body):
    server = serve(send(raw), send(ok(b"again")))
    pool = http1.Pool(4)
    response = post(pool, server.url())
    assert response.read() == body
    response.release()
    assert pool.idle_count(server.url()) == 1
    second = post(pool, server.url())
    assert (second.status, second.read()) == (200, b"again")
    assert server.connections == 1


def test_the_request_is_one_well_formed_post(serve):
    server = serve(send(ok(b"{}")))
    pool = http1.Pool(4)
    url = f"http://127.0.0.1:{server.port}/prefix/v1/chat/completions?beta=1"
    post(pool, url, b'{"m":"\xc3\xa9"}').close()
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /prefix/v1/chat/completions?beta=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Authorization: Bearer k" in lines
    assert b"Content-Length: 10" in lines  # bytes, not characters
    assert body == b'{"m":"\xc3\xa9"}'


@pytest.mark.parametrize("bad", ["k\r\nX-Injected: 1", "k\nX: 1", "k\r"])
def test_a_header_value_that_would_split_the_request_is_refused_before_sending(serve, bad):
    server = serve(send(ok(b"{}")))
    pool = http1.Pool(1)
    with pytest.raises(ValueError, match="Authorization"):
        pool.post(server.url(), {"Authorization": bad}, b"{}", connect_timeout=2, read_timeout=2)
    assert server.connections == 0
    post(pool, server.url()).close()  # the refused request did not keep the only slot


def test_a_stream_is_read_as_it_arrives(serve):
    later = threading.Event()

    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
        later.wait(5)
        conn.sendall(b"9\r\ndata: 2\n\n\r\n0\r\n\r\n")

    server = serve(trickle)
    response = post(http1.Pool(1), server.url())
    assert response.read1() == b"data: 1\n\n"  # before the rest exists
    later.set()
    assert response.read1() == b"data: 2\n\n"
    assert response.read1() == b""
    assert response.header("transfer-encoding") == "chunked"
    assert server.requests


def test_a_body_that_runs_to_the_close_is_complete_there_and_not_reused(serve):
    server = serve(lambda conn: (conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nall of it"), close_connection(conn)))
    pool = http1.Pool(1)
    response = post(pool, server.url())
    assert response.read() == b"all of it"
    response.release()
    assert pool.idle_count(server.url()) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\nhalf a chu",
    ],
    ids=["content-length", "chunked, no last chunk", "chunked, cut mid-chunk"],
)
def test_an_answer_cut_short_is_an_error_not_a_short_body(serve, raw):
    server = serve(lambda conn: (conn.sendall(raw), close_connection(conn)))
    pool = http1.Pool(1)
    response = post(pool, server.url())
    with pytest.raises(http1.ProtocolError, match="ended before"):
        response.read()
    response.close()
    post_after = serve(send(ok(b"{}")))
    assert post(pool, post_after.url()).read() == b"{}"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (close_connection, "without an answer"),
        (send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), "not valid HTTP"),
        (send(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"), "not valid HTTP"),
        (send(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000), "too large"),
        (send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"), "switched"),
    ],
    ids=["closed", "not http", "negative length", "endless head", "upgrade"],
)
def test_an_upstream_that_does_not_speak_http_is_a_protocol_error(serve, reply, message):
    server = serve(reply)
    pool = http1.Pool(1)
    with pytest.raises(http1.ProtocolError, match=message):
        post(pool, server.url())
    assert pool.idle_count(server.url()) == 0
    post(pool, serve(send(ok(b"{}"))).url()).close()  # the slot came back


def test_silence_after_the_request_is_a_read_timeout_not_a_connect_timeout(serve):
    server = serve(lambda conn: time.sleep(10))
    started = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        http1.Pool(1).post(server.url(), {}, b"{}", connect_timeout=2, read_timeout=0.3)
    assert not isinstance(caught.value, http1.ConnectTimeout)
    assert time.monotonic() - started < 3


def test_an_idle_connection_the_server_closed_is_replaced_not_used(serve):
    closed = threading.Event()

    def answer_then_close(conn: socket.socket) -> None:
        conn.sendall(ok(b"first"))
        close_connection(conn)  # a server's keep-alive timeout, after the answer
        closed.set()

    server = serve(answer_then_close, send(ok(b"second")))
    pool = http1.Pool(2)
    first = post(pool, server.url())
    assert first.read() == b"first"
    first.release()
    assert closed.wait(5)  # on loopback the FIN is queued by the time close() returns
    second = post(pool, server.url())
    assert second.read() == b"second"
    assert server.connections == 2


def test_connection_close_from_the_server_is_honoured(serve):
    server = serve(send(ok(b"1", "Connection: close")), send(ok(b"2")))
    pool = http1.Pool(2)
    response = post(pool, server.url())
    assert response.read() == b"1"
    response.release()
    assert pool.idle_count(server.url()) == 0


def test_abort_from_another_thread_ends_a_waiting_read_and_closes_the_connection(serve):
    server = serve(send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
    pool = http1.Pool(1)
    response = post(pool, server.url())
    threading.Timer(0.2, response.abort).start()
    started = time.monotonic()
    with pytest.raises(OSError):
        response.read()
    assert time.monotonic() - started < 5
    assert server.closed_by_client.wait(5)
    post(pool, serve(send(ok(b"{}"))).url()).close()  # the slot came back


def test_the_pool_holds_callers_past_its_size_until_a_connection_is_free(serve):
    server = serve(send(ok(b"a")), send(ok(b"b")))
    pool = http1.Pool(1)
    first = post(pool, server.url())
    with pytest.raises(http1.PoolTimeout):
        pool.post(server.url(), {}, b"{}", connect_timeout=0.2, read_timeout=2)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(post(pool, server.url()).read()))
    waiter.start()
    time.sleep(0.2)
    assert not got  # still waiting for the one connection
    assert first.read() == b"a"
    first.release()
    waiter.join(5)
    assert got == [b"b"]
    assert server.connections == 1  # the waiter reused the released connection


def test_releasing_or_closing_twice_frees_one_slot_once(serve):
    server = serve(send(ok(b"a")), send(ok(b"b")), send(ok(b"c")))
    pool = http1.Pool(1)
    response = post(pool, server.url())
    response.read()
    response.release()
    response.release()
    response.close()
    response.abort()
    held = post(pool, server.url())  # the one slot
    with pytest.raises(http1.PoolTimeout):
        pool.post(server.url(), {}, b"{}", connect_timeout=0.2, read_timeout=2)
    held.close()


def test_nothing_listening_is_a_connection_error(serve):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionError):
        post(http1.Pool(1), f"http://127.0.0.1:{port}/v1")


@pytest.mark.parametrize("url", ["ftp://x/y", "http:///nohost", "not a url"])
def test_urls_that_are_not_http_are_refused(url):
    with pytest.raises(ValueError, match="not an http"):
        post(http1.Pool(1), url)


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path):
    return self_signed(tmp_path)


def test_https_upstreams_are_verified_and_kept_alive(serve, tls_files):
    cert, key = tls_files
    server = serve(send(ok(b"one")), send(chunked(b"two")), tls=server_context(cert, key))
    pool = http1.Pool(2, http1.tls_context(str(cert)))
    for expected in (b"one", b"two"):
        response = post(pool, server.url(scheme="https"))
        assert response.read() == expected
        response.release()
    assert server.connections == 1
    assert b"Host: 127.0.0.1:%d" % server.port in server.requests[0]


def test_an_https_upstream_whose_certificate_is_not_trusted_is_refused(serve, tls_files):
    cert, key = tls_files
    server = serve(send(ok(b"secret answer")), tls=server_context(cert, key))
    pool = http1.Pool(1)  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        post(pool, server.url(scheme="https"))
    assert server.requests == []
    post(pool, serve(send(ok(b"{}"))).url()).close()  # the slot came back
