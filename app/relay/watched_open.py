"""Waiting for the upstream's response headers while watching the client.

An upstream may take long to answer a request at all (a queue, a slow proxy). A client that hangs
up meanwhile must be noticed then, not after the whole answer was made and billed: the open runs
in its own thread (a greenlet under gevent) while the caller waits on it or on the watchdog's word
that the client is gone, whichever comes first. An abandoned open closes its response on arrival.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from app.relay.errors import ClientGone
from app.relay.watchdog import Watchdog, spawn


class _PendingOpen:
    def __init__(self, client_fd: int) -> None:
        self.client_fd: int | None = client_fd
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.gone = False
        self.finished = False
        self.response: Any = None
        self.error: BaseException | None = None

    def on_tick(self, now: float) -> None:
        pass

    def on_client_gone(self) -> None:
        self.gone = True
        self.done.set()

    def run(self, opener: Callable[[], Any]) -> None:
        try:
            response = opener()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            response, self.error = None, exc
        with self.lock:
            self.finished, self.response = True, response
            abandoned = self.gone
        if abandoned and response is not None:
            response.abort()
        self.done.set()


def open_watching_client(opener: Callable[[], Any], client_fd: int | None, watchdog: Watchdog) -> Any:
    """opener() or its exception; ClientGone if the client hung up before it returned."""
    if client_fd is None:
        return opener()
    pending = _PendingOpen(client_fd)
    spawn(pending.run, opener)
    watchdog.register(pending)
    try:
        pending.done.wait()
    finally:
        watchdog.unregister(pending)
    with pending.lock:
        if pending.gone:
            if pending.finished and pending.response is not None:
                pending.response.abort()
            raise ClientGone()
    if pending.error is not None:
        raise pending.error
    return pending.response
