"""The gevent worker's sendall (app/gevent_send.py), in a gevent-patched child process: small
writes skip gevent's per-call getsockopt, large ones and slow readers still get every byte, TLS
sockets still send TLS, and a peer that never reads still times the writer out."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.tls import self_signed

CHILD = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import hashlib, socket, ssl, sys, time
    import gevent
    from app import gevent_send

    calls = {"getsockopt": 0}

    class Counting(socket.socket):
        def getsockopt(self, *args):
            calls["getsockopt"] += 1
            return super().getsockopt(*args)

    def pair(cls=socket.socket):
        listener = socket.create_server(("127.0.0.1", 0))
        writer = cls(socket.AF_INET, socket.SOCK_STREAM)
        writer.connect(listener.getsockname())
        reader, _ = listener.accept()
        listener.close()
        return writer, reader

    def read_all(sock, size, pause=0.0):
        got = bytearray()
        while len(got) < size:
            data = sock.recv(65536)
            if not data:
                break
            got += data
            if pause:
                gevent.sleep(pause)
        return bytes(got)

    def small_write_asks_nothing():
        writer, reader = pair(Counting)
        calls["getsockopt"] = 0  # connect() asks for SO_ERROR: not the write's
        writer.sendall(b"data: {}\\n\\n")
        assert reader.recv(100) == b"data: {}\\n\\n"
        return calls["getsockopt"]

    before = small_write_asks_nothing()
    gevent_send.install()
    gevent_send.install()  # twice is once
    after = small_write_asks_nothing()
    assert (before, after) == (1, 0), (before, after)

    big = hashlib.sha256(b"x").digest() * 400_000  # 12.8 MB: many times the socket buffer
    writer, reader = pair()
    job = gevent.spawn(read_all, reader, len(big), 0.001)
    writer.sendall(big)
    assert job.get(timeout=60) == big
    writer.sendall(bytearray(b"not bytes")); writer.sendall(memoryview(b"a view")); writer.sendall(b"")
    assert read_all(reader, 15) == b"not bytesa view"

    writer, reader = pair()
    writer.settimeout(0.5)
    started = time.monotonic()
    try:
        writer.sendall(big)  # nobody reads
    except TimeoutError:
        assert time.monotonic() - started < 5
    else:
        raise AssertionError("a peer that never reads did not time the writer out")

    cert, key = sys.argv[1], sys.argv[2]
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)
    writer, reader = pair()
    accepted = gevent.spawn(server_ctx.wrap_socket, reader, server_side=True)
    writer = client_ctx.wrap_socket(writer, server_hostname="127.0.0.1")
    reader = accepted.get(timeout=10)
    job = gevent.spawn(read_all, reader, len(big))
    writer.sendall(big)
    writer.sendall(b"tail")
    assert job.get(timeout=60) == big
    assert read_all(reader, 4) == b"tail"
    print("ok")
    """
)


def test_sendall_skips_the_buffer_query_and_still_delivers_every_byte(tmp_path):
    cert, key = self_signed(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(cert), str(key)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
