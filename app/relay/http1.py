"""A lean HTTP/1.1 client for the relay's one hot request: a POST to the upstream, kept alive.

urllib3 and http.client spent more CPU on a chat completion than the rest of the relay together:
header objects, email-package header parsing and layers of wrappers around each read. This client
writes the request in one send, parses the response with httptools (llhttp, the C parser under
Node.js and uvicorn), which also takes chunked framing off the body, and keeps connections alive
per origin. It does one thing: POST, then read the body as it arrives. Admin calls (models,
balance) still use urllib3, where a few hundred microseconds do not matter.

Errors are OSError subclasses, so callers catch them like any socket failure: TimeoutError (a
connect or read timeout, as the socket raises it) and ProtocolError (a malformed or cut-off
answer). Under gevent every wait here blocks only the calling greenlet.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools

from app.relay.watchdog import peek

_READ_SIZE = 65536
_MAX_HEAD = 65536  # a response head larger than this is not an upstream we can talk to


class ProtocolError(OSError):
    """The upstream's answer was not valid HTTP/1.1, or ended before its declared end."""


class ConnectTimeout(TimeoutError):
    """No connection (TCP, then TLS) within the connect timeout."""


class PoolTimeout(ConnectTimeout):
    """Every connection to the origin stayed busy for the whole connect timeout."""


class Origin:
    """scheme://host:port and the request target for one URL, split once."""

    __slots__ = ("tls", "host", "port", "target", "host_header")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = 443 if self.tls else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = name if self.port == default else f"{name}:{self.port}"

    @property
    def key(self) -> tuple[bool, str, int]:
        return (self.tls, self.host, self.port)


def request_head(method: str, origin: Origin, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {origin.target} HTTP/1.1", f"Host: {origin.host_header}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} has a character HTTP does not allow")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Slots:
    """Connections to one origin: at most `size` at a time, the idle ones kept for reuse."""

    def __init__(self, size: int) -> None:
        self.free = threading.BoundedSemaphore(size)
        self.idle: collections.deque[socket.socket] = collections.deque()


class Pool:
    """Keep-alive connections per origin, at most `size` open to each; a caller waits (up to its
    connect timeout) for a free one rather than opening without bound."""

    def __init__(self, size: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.size = size
        self._ssl = ssl_context
        self._slots: dict[tuple[bool, str, int], _Slots] = {}
        self._origins: dict[str, Origin] = {}

    def origin(self, url: str) -> Origin:
        found = self._origins.get(url)
        if found is None:
            found = Origin(url)
            if len(self._origins) < 1024:  # a bounded cache: URLs come from the admin's upstreams
                self._origins[url] = found
        return found

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, connect_timeout: float, read_timeout: float
    ) -> Response:
        """Send the request and read the response head. Raises ConnectTimeout (PoolTimeout when no
        connection came free), TimeoutError for a late head, ProtocolError, or another OSError."""
        origin = self.origin(url)
        head = request_head("POST", origin, headers, len(body))
        slots = self._slots.get(origin.key)
        if slots is None:
            slots = self._slots.setdefault(origin.key, _Slots(self.size))
        if not slots.free.acquire(timeout=connect_timeout):
            raise PoolTimeout("no free connection to the upstream")
        response = Response(slots)
        try:
            response.sock = sock = self._connection(slots, origin, connect_timeout)
            sock.settimeout(read_timeout)
            sock.sendall(head + body)
            response.read_head()
        except BaseException:
            response.close()
            raise
        return response

    def _connection(self, slots: _Slots, origin: Origin, connect_timeout: float) -> socket.socket:
        while slots.idle:
            sock = slots.idle.pop()  # the most recently used: the least likely to have timed out
            if not _dropped(sock):
                return sock
            _close(sock)
        try:
            sock = socket.create_connection((origin.host, origin.port), timeout=connect_timeout)
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {origin.host}:{origin.port} in time") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if origin.tls:
                sock = self._tls().wrap_socket(sock, server_hostname=origin.host)
        except TimeoutError as exc:
            _close(sock)
            raise ConnectTimeout(f"no TLS handshake with {origin.host} in time") from exc
        except BaseException:
            _close(sock)
            raise
        return sock

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = tls_context()
        return self._ssl

    def idle_count(self, url: str) -> int:
        slots = self._slots.get(self.origin(url).key)
        return len(slots.idle) if slots is not None else 0


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """Verified TLS to the upstream: the system's CAs (or `cafile`), HTTP/1.1 by ALPN."""
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _dropped(sock: socket.socket) -> bool:
    """An idle connection the server has closed (or sent something unasked on) is readable."""
    return peek(sock.fileno()) is not None


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


class Response:
    """One response on its connection. Read it to the end and release() it to reuse the
    connection; close() (or abort() from another greenlet) otherwise."""

    __slots__ = (
        "sock",
        "status",
        "headers",
        "_slots",
        "_parser",
        "_body",
        "_head_done",
        "_complete",
        "_until_close",
        "_keep_alive",
        "_done",
    )

    def __init__(self, slots: _Slots) -> None:
        self._slots = slots
        self.sock: socket.socket | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._head_done = self._complete = self._until_close = self._keep_alive = self._done = False

    # httptools callbacks ----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_done = True
        self.status = self._parser.get_status_code()
        framed = "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "")
        self._until_close = not framed and self.status not in (204, 304) and self.status >= 200
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once the body is done

    def on_body(self, data: bytes) -> None:
        self._body.append(data)

    def on_message_complete(self) -> None:
        self._complete = True

    # reading -----------------------------------------------------------------------------------
    def _feed(self) -> int:
        """One recv into the parser: the bytes received, 0 at the end of the connection."""
        sock = self.sock
        if sock is None:
            raise ProtocolError("the response is closed")
        data = sock.recv(_READ_SIZE)
        if not data:
            return 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            raise ProtocolError("the upstream switched protocols") from exc
        except httptools.HttpParserError as exc:
            raise ProtocolError(f"the upstream's answer is not valid HTTP: {exc}") from exc
        return len(data)

    def read_head(self) -> None:
        received = 0
        while not self._head_done:
            count = self._feed()
            if not count:
                raise ProtocolError("the upstream closed the connection without an answer")
            received += count
            if not self._head_done and received > _MAX_HEAD:
                raise ProtocolError("the upstream's response head is too large")
        if 100 <= self.status < 200:
            raise ProtocolError(f"unexpected interim status {self.status}")

    def read1(self) -> bytes:
        """The body bytes that have arrived (waiting for some); b"" at the end of the body."""
        while not self._body:
            if self._complete:
                return b""
            if not self._feed():
                if self._until_close:
                    self._complete = True
                    return b""
                raise ProtocolError("the upstream's answer ended before its declared length")
        body, self._body = self._body, []
        return body[0] if len(body) == 1 else b"".join(body)

    def read(self) -> bytes:
        parts = []
        while chunk := self.read1():
            parts.append(chunk)
        return b"".join(parts)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    # ending ------------------------------------------------------------------------------------
    def release(self) -> None:
        """Back to the pool when the body was read to its end and the server keeps the
        connection open; closed otherwise."""
        if self._done:
            return
        sock = self.sock
        reusable = sock is not None and self._complete and self._keep_alive and not self._until_close
        if reusable:
            self._done = True
            self.sock = None
            self._slots.idle.append(sock)
            self._slots.free.release()
        else:
            self.close()

    def abort(self) -> None:
        """Stop a read in progress in another greenlet: it sees the end of the connection."""
        sock = self.sock
        if sock is not None and not self._done:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.close()

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        sock, self.sock = self.sock, None
        if sock is not None:
            _close(sock)
        self._slots.free.release()
