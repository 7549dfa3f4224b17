"""Opening requests to an OpenAI-format upstream over the relay's keep-alive pool (http1.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3

from app.relay import http1
from app.relay.errors import UpstreamConnectError, UpstreamHTTPError, UpstreamTimeout, upstream_message


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    base_url: str
    api_key: str = field(repr=False)
    model: str
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    connect_timeout: float = 10.0
    header_timeout: float = 20.0  # for the response headers (and a stream's first line: first_event.py)
    first_event_timeout: float = 600.0
    idle_timeout: float = 300.0
    total_timeout: float = 900.0

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def make_pool(size: int, cafile: str | None = None) -> http1.Pool:
    """Chat completions: at most `size` connections to an upstream; under load, greenlets wait for
    a free one instead of opening without bound."""
    return http1.Pool(size, http1.tls_context(cafile))


def make_account_pool() -> urllib3.PoolManager:
    """The admin's occasional calls (models, balance): urllib3, with its redirects and retries off."""
    return urllib3.PoolManager(num_pools=16, maxsize=4, block=False, retries=False)


def build_body(client_body: Mapping[str, Any], target: UpstreamTarget, *, stream: bool) -> dict[str, Any]:
    """The upstream request: the client's fields unchanged, except the model and, for streams,
    usage always requested. Route extras (e.g. DeepSeek's `thinking`) apply only where the client
    did not set the field itself."""
    body = dict(client_body)
    for key, value in target.extra_body.items():
        body.setdefault(key, value)
    body["model"] = target.model
    if stream:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return body


class UpstreamResponse:
    """An open upstream response. Always close it; abort() may be called from another greenlet."""

    __slots__ = ("_resp", "status", "_unread")

    def __init__(self, resp: http1.Response) -> None:
        self._resp = resp
        self.status = resp.status
        self._unread: list[bytes] = []

    def header(self, name: str) -> str | None:
        return self._resp.header(name)

    def set_read_timeout(self, seconds: float) -> None:
        """The socket timeout for the reads from now on (the connection's own, so it also
        covers a read already waiting under gevent)."""
        sock = self._resp.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(seconds)

    def read_chunk(self) -> bytes:
        """The next bytes as they come; b"" at the end."""
        return self._resp.read1()

    def unread(self, chunks: list[bytes]) -> None:
        """Bytes already read (a peek at the first event) that iter_chunks() yields first."""
        self._unread = chunks + self._unread

    def iter_chunks(self) -> Iterator[bytes]:
        pending, self._unread = self._unread, []
        yield from pending
        read1 = self._resp.read1
        while True:
            data = read1()
            if not data:
                return
            yield data

    def read_all(self) -> bytes:
        return self._resp.read()

    # Each of these ends the response once; whichever comes first wins (http1.Response).
    def release(self) -> None:
        """Return a fully read connection to the pool for reuse."""
        self._resp.release()

    def abort(self) -> None:
        """Stop a read in progress, so the upstream sees the connection close and stops generating."""
        self._resp.abort()

    def close(self) -> None:
        # Closes the connection: a half-read stream must not go back to the pool.
        self._resp.close()


def open_upstream(pool: http1.Pool, target: UpstreamTarget, body: bytes) -> UpstreamResponse:
    """POST the chat completion. Raises UpstreamConnectError, UpstreamTimeout or UpstreamHTTPError."""
    headers = {
        "Authorization": f"Bearer {target.api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Accept-Encoding": "identity",
        "User-Agent": "RelayGate/1.0",
    }
    # Headers must come within header_timeout; after them the read timeout is only a backstop:
    # first-event and idle deadlines are enforced by the watchdog.
    try:
        resp = pool.post(target.chat_url, headers, body, target.connect_timeout, target.header_timeout)
    except http1.PoolTimeout as exc:
        raise UpstreamConnectError("every connection to the upstream stayed busy") from exc
    except http1.ConnectTimeout as exc:
        raise UpstreamConnectError("connect timed out") from exc
    except TimeoutError as exc:
        raise UpstreamTimeout("no response headers in time") from exc
    except (OSError, ValueError) as exc:
        raise UpstreamConnectError(type(exc).__name__) from exc
    response = UpstreamResponse(resp)
    if not 200 <= resp.status < 300:
        raise _http_error(response)
    response.set_read_timeout(backstop_timeout(target))
    return response


def backstop_timeout(target: UpstreamTarget) -> float:
    return max(target.first_event_timeout, target.total_timeout)


def _http_error(response: UpstreamResponse) -> UpstreamHTTPError:
    try:
        raw = response.read_all()
    except OSError:
        raw = b""
    finally:
        response.close()
    return UpstreamHTTPError(response.status, error_message(raw), retry_after=response.header("Retry-After"))


def error_message(raw: bytes) -> str:
    """The human message of an OpenAI-shaped error body, or a short excerpt of anything else."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace").strip()
    if isinstance(parsed, dict):
        message = upstream_message(parsed.get("error")) or upstream_message(parsed)
        if message:
            return message
    return raw[:200].decode("utf-8", "replace").strip()
