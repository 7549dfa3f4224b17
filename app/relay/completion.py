"""Relaying a non-streaming chat completion: the whole upstream JSON, reasoning removed."""

from __future__ import annotations

import json
import time

from app.relay import jsonbytes, reasoning
from app.relay.errors import ClientGone, UpstreamConnectError, UpstreamHTTPError, UpstreamTimeout, upstream_message
from app.relay.stream import CLIENT_CLOSED, DONE, TIMEOUT, UPSTREAM_ERROR, RelayOptions
from app.relay.upstream import UpstreamResponse
from app.relay.usage import Usage, estimate_text_tokens, usage_from_dict
from app.relay.watchdog import Watchdog


class JsonRelay:
    def __init__(
        self,
        upstream: UpstreamResponse,
        options: RelayOptions,
        watchdog: Watchdog,
        client_fd: int | None = None,
    ) -> None:
        self.upstream = upstream
        self.options = options
        self.client_fd = client_fd
        self.usage: Usage | None = None
        self.output_estimate = 0  # completion tokens estimated from the answer, when it came without usage
        self.outcome = UPSTREAM_ERROR
        self.started_at = time.monotonic()
        self._watchdog = watchdog
        self._stopped: str | None = None

    def on_tick(self, now: float) -> None:
        if self._stopped is None and now - self.started_at > self.options.total_timeout:
            self._stopped = TIMEOUT
            self.upstream.abort()

    def on_client_gone(self) -> None:
        if self._stopped is None:
            self._stopped = CLIENT_CLOSED
            self.upstream.abort()

    def run(self) -> bytes:
        """The client body. Raises ClientGone, UpstreamTimeout, UpstreamConnectError or
        UpstreamHTTPError (an error object inside a 200 answer)."""
        self._watchdog.register(self)
        try:
            raw = self.upstream.read_all()
        except OSError as exc:
            raise self._read_failure() from exc
        finally:
            self._watchdog.unregister(self)
        if self._stopped is not None:
            raise self._read_failure()
        self.upstream.release()
        return self._transform(raw)

    def _read_failure(self) -> Exception:
        self.upstream.abort()
        self.outcome = self._stopped or UPSTREAM_ERROR
        if self._stopped == CLIENT_CLOSED:
            return ClientGone()
        if self._stopped == TIMEOUT:
            return UpstreamTimeout("The upstream did not finish the answer in time.")
        return UpstreamConnectError("The connection to the upstream failed during the answer.")

    def _transform(self, raw: bytes) -> bytes:
        # DeepSeek sends blank lines while a non-streaming request waits in its queue.
        try:
            body = jsonbytes.loads(raw)
        except ValueError as exc:
            raise UpstreamHTTPError(502, "The upstream sent an answer that is not JSON.") from exc
        if not isinstance(body, dict) or "error" in body:
            error = body.get("error") if isinstance(body, dict) else None
            message = upstream_message(error) or "The upstream reported an error instead of an answer."
            raise UpstreamHTTPError(502, message)
        self.usage = usage_from_dict(body.get("usage"))
        if self.usage is None:
            self.output_estimate = max(1, estimate_text_tokens(json.dumps(body.get("choices"), ensure_ascii=False)))
        self.outcome = DONE
        changed = False
        if self.options.strip_reasoning and b'"reasoning' in raw:
            reasoning.strip_message(body)
            changed = True
        if body.get("model") != self.options.public_model and "model" in body:
            body["model"] = self.options.public_model
            changed = True
        if not changed:
            return raw.strip()
        return jsonbytes.dumps(body)
