"""The relay's exception family; app/api/errors.py maps them to OpenAI-shaped responses."""

from __future__ import annotations

from typing import Any


class UpstreamError(Exception):
    """The upstream could not give a usable answer."""


class UpstreamConnectError(UpstreamError):
    """Could not connect or send the request (DNS, refused, connect timeout, reset)."""


class UpstreamTimeout(UpstreamError):
    """Connected, but no first event, or no progress, within the configured time."""


class ClientGone(Exception):
    """The client hung up before the answer was ready; the upstream was closed."""


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a non-2xx status."""

    def __init__(self, status: int, message: str, *, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def upstream_message(error: Any) -> str | None:
    """The human message of an upstream `error` value: an OpenAI-shaped object or a bare string."""
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    return None
