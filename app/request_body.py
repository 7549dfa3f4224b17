"""The request body as every view reads it: it must arrive within a deadline, it may not exceed the
size limit however it is framed, and a framing error is the client's 400, not the gateway's 500.

gunicorn hands the app a body that blocks for as long as the client stays silent (a Content-Length
larger than what is sent holds a worker's greenlet forever), passes chunked bodies through with no
length, and raises its own parse errors from read(). Werkzeug stops reading a chunked body at
MAX_CONTENT_LENGTH without saying so, so a view sees a cut-off body.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gevent import Timeout
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException, RequestTimeout

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_READ_SIZE = 64 * 1024


class BodyGuard:
    """WSGI middleware: wraps wsgi.input in a deadline; reads a chunked body up front, to the limit."""

    def __init__(self, app: WSGIApp, *, max_bytes: int | None, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ.get("wsgi.input")
        if stream is not None:
            body = DeadlineBody(stream, time.monotonic() + self.timeout, self.timeout)
            if is_chunked(environ):
                _buffer_chunked(environ, body, self.max_bytes)
            else:
                environ["wsgi.input"] = body
        return self.app(environ, start_response)


def is_chunked(environ: dict[str, Any]) -> bool:
    return "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


class DeadlineBody(io.RawIOBase):
    """wsgi.input that raises RequestTimeout once the deadline passes, wherever the read is."""

    def __init__(self, stream: Any, deadline: float, timeout: float) -> None:
        self._stream = stream
        self._deadline = deadline
        self._timeout = timeout

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._guarded(self._stream.read, -1 if size is None else size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._guarded(self._stream.readline, -1 if size is None else size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def _guarded(self, read: Callable[[int], bytes], size: int) -> bytes:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _too_slow(self._timeout)
        timer = Timeout(remaining)
        timer.start()
        try:
            return read(size)
        except Timeout as exc:
            if exc is not timer:
                raise
            raise _too_slow(self._timeout) from None
        except HTTPException:
            raise
        except OSError as exc:
            raise ClientDisconnected() from exc
        except Exception as exc:
            # Anything else the server raises while decoding the body (gunicorn's InvalidChunkSize,
            # ChunkMissingTerminator, NoMoreData...) is the client's framing.
            log.info("unreadable request body: %s", exc)
            raise BadRequest(f"The request body could not be read: {type(exc).__name__}.") from exc
        finally:
            timer.close()


def _too_slow(timeout: float) -> RequestTimeout:
    return RequestTimeout(f"The request body did not arrive within {timeout:g} seconds.")


class _Unreadable(io.RawIOBase):
    """The body stands for an error found while reading it up front; reading it raises that error."""

    def __init__(self, error: HTTPException) -> None:
        self._error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        raise self._error

    def readline(self, size: int | None = -1) -> bytes:
        raise self._error

    def readinto(self, buffer: Any) -> int:
        raise self._error


def _buffer_chunked(environ: dict[str, Any], body: DeadlineBody, max_bytes: int | None) -> None:
    """Read a chunked body whole, but never more than one byte past the limit, and present it with a
    Content-Length so that the size check applies as it does to any other body."""
    received = bytearray()
    ceiling = None if max_bytes is None else max_bytes + 1
    try:
        while ceiling is None or len(received) < ceiling:
            piece = body.read(_READ_SIZE if ceiling is None else min(_READ_SIZE, ceiling - len(received)))
            if not piece:
                break
            received += piece
    except HTTPException as error:
        environ["wsgi.input"] = _Unreadable(error)
        return
    del environ["HTTP_TRANSFER_ENCODING"]
    environ["CONTENT_LENGTH"] = str(len(received))  # past the limit: Werkzeug answers 413 on first read
    environ["wsgi.input"] = io.BytesIO(b"" if ceiling is not None and len(received) >= ceiling else bytes(received))
