"""Relaying one chat completion: upstream bytes in, client bytes out, usage and outcome tracked.

Streams: a reader thread (a greenlet under gevent) pulls upstream bytes into a queue; the client
generator takes from the queue, decodes SSE, strips reasoning, re-encodes and yields. The shared
watchdog drops a tick into the queue when a keep-alive is due, and aborts the upstream on a missed
deadline or a client that hung up, so no per-chunk timer is needed.

No upstream is trusted to stop at max_tokens: every event's generated text is counted
(relay.bounds) against a Budget, which is asked for more as the answer grows; when it can give no
more, the stream ends with an `insufficient_quota` error event and the upstream is closed.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from app.relay import jsonbytes, reasoning, sse
from app.relay.bounds import output_tokens
from app.relay.errors import upstream_message
from app.relay.upstream import UpstreamResponse
from app.relay.usage import Usage, usage_from_dict
from app.relay.watchdog import Watchdog, spawn

DONE = "done"
CLIENT_CLOSED = "client_closed"
UPSTREAM_ERROR = "upstream_error"
TIMEOUT = "timeout"
QUOTA = "quota"

# Tokens an answer may hold beyond its text: the end-of-sentence and thinking markers.
OUTPUT_MARGIN = 16

_TICK = object()
_EOF = object()
_GONE = object()
_TIMED_OUT = object()
_DONE_FRAME = sse.encode_event(sse.DONE)
_DRAIN_WAIT = 0.05


@dataclass(frozen=True, slots=True)
class RelayOptions:
    public_model: str
    upstream_model: str
    strip_reasoning: bool = True
    include_usage: bool = False  # the client asked for the usage chunk
    keepalive_interval: float = 10.0
    first_event_timeout: float = 600.0
    idle_timeout: float = 300.0
    total_timeout: float = 900.0


class Budget(Protocol):
    """How many completion tokens the request may produce; `extend(produced)` asks for room for
    at least `produced` and returns the new total, which is smaller when the key cannot pay."""

    covered: int

    def extend(self, produced: int) -> int: ...


class Unlimited:
    covered = 1 << 62

    def extend(self, produced: int) -> int:
        return self.covered


def error_payload(message: str, code: str, type_: str = "upstream_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


_dumps = jsonbytes.dumps


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class StreamRelay:
    """Iterate once to get client bytes. Afterwards (also after close()) `usage`, `outcome`,
    `delivered` and `first_output_at` describe what happened. The upstream is always
    closed when iteration ends, however it ends, and `on_end` is called exactly once: before the
    last frame goes to the client (so the request is settled before the client can ask for its
    balance), or when the stream is closed without that frame (a client that hung up)."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        options: RelayOptions,
        watchdog: Watchdog,
        client_fd: int | None = None,
        *,
        budget: Budget | None = None,
        on_end: Callable[[StreamRelay], None] | None = None,
    ) -> None:
        self.upstream = upstream
        self.options = options
        self.client_fd = client_fd
        self.usage: Usage | None = None
        self.outcome = CLIENT_CLOSED  # until proven otherwise: a generator closed early never says
        self.error_message = ""
        self.delivered = 0  # output tokens the client was sent (relay.bounds counts them)
        self.produced = OUTPUT_MARGIN  # completion tokens the upstream has made, as counted here
        self.started_at = time.monotonic()
        self.first_output_at: float | None = None
        self._watchdog = watchdog
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._last_sent = self.started_at
        self._last_progress: float | None = None
        self._tick_pending = False
        self._stopping = False
        self._eof = False
        self._saw_finish = False
        self._model_old = b'"model":"' + options.upstream_model.encode() + b'"'
        self._model_new = b'"model":"' + options.public_model.encode() + b'"'
        self._rewrite_model = options.upstream_model != options.public_model
        self._budget = budget or Unlimited()
        self._covered = self._budget.covered
        self._end_callback = on_end
        self._started = False

    # -- watchdog side -------------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        if self._stopping:
            return
        progress = self._last_progress
        if progress is None and now - self.started_at > self.options.first_event_timeout:
            self._stop(_TIMED_OUT, "The upstream sent no answer in time.")
        elif progress is not None and now - progress > self.options.idle_timeout:
            self._stop(_TIMED_OUT, "The upstream stopped sending tokens; the answer was cut short.")
        elif not self._tick_pending and now - self._last_sent >= self.options.keepalive_interval:
            self._tick_pending = True
            self._queue.put(_TICK)

    def on_client_gone(self) -> None:
        if not self._stopping:
            self._stop(_GONE, "")

    def _stop(self, item: object, message: str) -> None:
        self._stopping = True
        self.error_message = message
        self._queue.put(item)
        self.upstream.abort()

    # -- reader side ---------------------------------------------------------------------------
    def _read(self) -> None:
        put = self._queue.put
        try:
            for chunk in self.upstream.iter_chunks():
                if b"data:" in chunk:
                    self._last_progress = time.monotonic()
                put(chunk)
            self._eof = True
            put(_EOF)
        except BaseException as exc:  # noqa: BLE001 - handed to the client side, which decides
            put(_Failure(exc))

    # -- client side ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[bytes]:
        self._started = True
        spawn(self._read)
        self._watchdog.register(self)
        try:
            # Headers go out with the first body bytes; a comment sends them now, so the client
            # knows the request was accepted even while the model thinks with reasoning stripped.
            yield sse.KEEPALIVE
            yield from self._pump()
        finally:
            self._watchdog.unregister(self)
            self._stopping = True
            self._finish_upstream()
            self._ended()

    def close(self) -> None:
        """For a response that is dropped before its first byte (the server never iterated it)."""
        if not self._started:
            self._started = self._stopping = True
            self.upstream.abort()
            self._ended()

    def _ended(self) -> None:
        on_end, self._end_callback = self._end_callback, None
        if on_end is not None:
            on_end(self)

    def _pump(self) -> Iterator[bytes]:
        decoder = sse.StreamDecoder()
        get = self._queue.get
        while True:
            item = get()
            if item.__class__ is bytes:
                for data in decoder.feed(item):
                    if data == sse.DONE:
                        yield from self._end_ok()
                        return
                    out = self._on_event(data)
                    if out is not None:
                        self._last_sent = time.monotonic()
                        if self.first_output_at is None:
                            self.first_output_at = self._last_sent
                        if self.outcome in (UPSTREAM_ERROR, QUOTA):
                            self._ended()
                            yield out
                            return
                        yield out
            elif item is _TICK:
                self._tick_pending = False
                if time.monotonic() - self._last_sent >= self.options.keepalive_interval:
                    self._last_sent = time.monotonic()
                    yield sse.KEEPALIVE
            else:
                yield from self._on_end(item)
                return

    def _on_end(self, item: object) -> Iterator[bytes]:
        if item is _EOF:
            if self._saw_finish:
                yield from self._end_ok()
            else:
                yield from self._end_error(
                    UPSTREAM_ERROR, "The upstream closed the stream before the answer was finished."
                )
        elif item is _GONE:
            self.outcome = CLIENT_CLOSED
        elif item is _TIMED_OUT:
            yield from self._end_error(TIMEOUT, self.error_message, code="upstream_timeout")
        elif not self._stopping:
            yield from self._end_error(UPSTREAM_ERROR, "The connection to the upstream failed during the answer.")
        elif self.error_message:  # the failure is the read we aborted for a deadline
            yield from self._end_error(TIMEOUT, self.error_message, code="upstream_timeout")

    def _end_ok(self) -> Iterator[bytes]:
        self.outcome = DONE
        self._ended()
        yield _DONE_FRAME

    def _end_error(self, outcome: str, message: str, code: str = "upstream_unavailable") -> Iterator[bytes]:
        self.outcome = outcome
        self.error_message = message
        self._ended()
        yield sse.encode_event(_dumps(error_payload(message, code)))

    def _on_event(self, data: bytes) -> bytes | None:
        if b'"finish_reason":"' in data:
            self._saw_finish = True
        visible, thought = output_tokens(data)
        if visible or thought:
            self.produced += visible + thought
            if self.produced > self._covered and not self._room():
                return self._quota_frame()
            self.delivered += visible if self.options.strip_reasoning else visible + thought
        needs_parse = (
            (b'"usage"' in data and b'"usage":null' not in data)
            or (self.options.strip_reasoning and b'"reasoning' in data)
            or b'"error"' in data
        )
        if not needs_parse:
            if self._rewrite_model:
                data = data.replace(self._model_old, self._model_new, 1)
            return b"data: " + data + b"\n\n"
        return self._on_parsed_event(data)

    def _room(self) -> bool:
        self._covered = self._budget.extend(self.produced)
        return self.produced <= self._covered

    def _quota_frame(self) -> bytes:
        # The event that did not fit is dropped: the client is not billed for what it never got.
        self.outcome = QUOTA
        self.error_message = "This key has no tokens left for the rest of this answer; the answer was cut short."
        self._stopping = True
        self.upstream.abort()
        return sse.encode_event(_dumps(error_payload(self.error_message, "insufficient_quota", "insufficient_quota")))

    def _on_parsed_event(self, data: bytes) -> bytes | None:
        try:
            chunk = jsonbytes.loads(data)
        except ValueError:
            return None  # not JSON: no OpenAI client could parse it either
        if not isinstance(chunk, dict):
            return None
        if "error" in chunk:
            message = upstream_message(chunk["error"]) or "The upstream reported an error during the answer."
            return self._error_frame(message)
        usage = usage_from_dict(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        if not chunk.get("choices") and not self.options.include_usage:
            return None
        if self.options.strip_reasoning and reasoning.strip_chunk(chunk) is None:
            return None
        if "model" in chunk:
            chunk["model"] = self.options.public_model
        return sse.encode_event(_dumps(chunk))

    def _error_frame(self, message: str) -> bytes:
        self.outcome = UPSTREAM_ERROR
        self.error_message = message
        return sse.encode_event(_dumps(error_payload(message, "upstream_error")))

    def _finish_upstream(self) -> None:
        if self.outcome == DONE and not self._eof:
            # [DONE] is normally followed at once by the end of the body; waiting a moment for it
            # lets the connection go back to the pool instead of being torn down.
            try:
                while (item := self._queue.get(timeout=_DRAIN_WAIT)) is not _EOF:
                    if not (item.__class__ is bytes or item is _TICK):
                        break
            except queue.Empty:
                pass
        if self._eof and self.outcome == DONE:
            self.upstream.release()
        else:
            self.upstream.abort()
