"""A small, strict Server-Sent Events decoder and encoder.

Follows the HTML Living Standard's event-stream parsing: lines end in CRLF, LF or CR; lines that
start with ":" are comments; "data:" with or without one leading space; several data lines join
with "\n"; a blank line dispatches the event. Only the data field matters to OpenAI-format streams,
so event/id/retry fields are read and ignored. Works on raw bytes so a CRLF split across two reads
and U+2028 inside JSON are handled correctly (str.splitlines and requests.iter_lines get both wrong).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

DONE = b"[DONE]"
KEEPALIVE = b": keep-alive\n\n"


class LineDecoder:
    """Splits a byte stream into lines, remembering partial lines between reads."""

    __slots__ = ("_buffer", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False  # the previous read ended in CR: a leading LF belongs to it

    def feed(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return []
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        data = self._buffer + chunk if self._buffer else chunk
        if b"\r" not in data:
            lines = data.split(b"\n")
            self._buffer = lines.pop()
            return lines
        return self._feed_with_cr(data)

    def _feed_with_cr(self, data: bytes) -> list[bytes]:
        if data.endswith(b"\r"):
            self._skip_lf = True
            lines = data[:-1].replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            self._buffer = b""
            return lines
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buffer = lines.pop()
        return lines

    def flush(self) -> list[bytes]:
        rest, self._buffer = self._buffer, b""
        return [rest] if rest else []


class EventDecoder:
    """Turns lines into event data payloads (bytes). Comments and data-less events yield nothing."""

    __slots__ = ("_data", "comments")

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self.comments = 0

    def line(self, line: bytes) -> bytes | None:
        if not line:
            if not self._data:
                return None
            data = b"\n".join(self._data)
            self._data = []
            return data
        if line[0] == 0x3A:  # ":" comment, e.g. ": keep-alive"
            self.comments += 1
            return None
        name, sep, value = line.partition(b":")
        if name == b"data":
            self._data.append(value[1:] if value.startswith(b" ") else value)
        return None


class StreamDecoder:
    """Bytes in, complete event payloads out."""

    __slots__ = ("_lines", "_events")

    def __init__(self) -> None:
        self._lines = LineDecoder()
        self._events = EventDecoder()

    @property
    def comments(self) -> int:
        return self._events.comments

    def feed(self, chunk: bytes) -> list[bytes]:
        out = []
        line = self._events.line
        for raw in self._lines.feed(chunk):
            data = line(raw)
            if data is not None:
                out.append(data)
        return out

    def close(self) -> list[bytes]:
        """An event not terminated by a blank line is incomplete and, per the spec, dropped."""
        for raw in self._lines.flush():
            self._events.line(raw)
        return []


def iter_events(chunks: Iterable[bytes]) -> Iterator[bytes]:
    decoder = StreamDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()


def encode_event(data: bytes) -> bytes:
    """One SSE event, always terminated by a blank line; multi-line data becomes several data lines."""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return b"data: " + data + b"\n\n"
