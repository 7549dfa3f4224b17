"""A stream's first line, read before anything goes to the client, so that a stream that fails at
once can still be retried elsewhere.

An upstream that answers 200 and then sends an error as its first event, closes the connection
before any event, or says nothing at all within the header timeout has failed as surely as one
that answered 500. One that sends a `: keep-alive` comment is alive (queued, or thinking): the
relay goes on with it however long it then takes.
"""

from __future__ import annotations

import json

from app.relay import sse
from app.relay.errors import UpstreamConnectError, UpstreamHTTPError, UpstreamTimeout, upstream_message
from app.relay.upstream import UpstreamResponse


def check_first_event(response: UpstreamResponse, timeout: float, backstop: float) -> UpstreamResponse:
    """Read up to the first event or comment, and give those bytes back to the response for the
    relay. Raises (after closing the response) UpstreamHTTPError for an error event,
    UpstreamConnectError for an early end, UpstreamTimeout for silence."""
    decoder, seen = sse.StreamDecoder(), []
    response.set_read_timeout(timeout)
    try:
        while True:
            chunk = response.read_chunk()
            if not chunk:
                raise UpstreamConnectError("The upstream closed the stream before its first event.")
            seen.append(chunk)
            events = decoder.feed(chunk)
            if events:
                _raise_for_error(events[0])
                break
            if decoder.comments:
                break
    except TimeoutError as exc:
        response.close()
        raise UpstreamTimeout("The upstream sent nothing after its headers.") from exc
    except OSError as exc:
        response.close()
        raise UpstreamConnectError(type(exc).__name__) from exc
    except (UpstreamConnectError, UpstreamHTTPError):
        response.close()
        raise
    response.set_read_timeout(backstop)
    response.unread(seen)
    return response


def _raise_for_error(data: bytes) -> None:
    if b'"error"' not in data:
        return
    try:
        chunk = json.loads(data)
    except ValueError:
        return
    if isinstance(chunk, dict) and "error" in chunk:
        message = upstream_message(chunk["error"]) or "The upstream reported an error instead of an answer."
        raise UpstreamHTTPError(502, message)
