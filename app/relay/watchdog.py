"""One timer for every open relay in the process.

A per-chunk timer costs about 15% of streaming CPU, so instead a single thread (a greenlet once
gevent has patched the process) wakes once per tick and, for each registered relay, checks its
deadlines and whether its client has hung up. Relays do their own work when told.
"""

from __future__ import annotations

import _socket
import _thread
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


def spawn(function: Callable[..., Any], *args: Any) -> None:
    """function(*args), concurrently. The bare _thread call is a greenlet under gevent's patching;
    a threading.Thread costs several times as much, and its start() waits for a switch to it."""
    _thread.start_new_thread(function, args)


class Watched(Protocol):
    client_fd: int | None

    def on_tick(self, now: float) -> None: ...

    def on_client_gone(self) -> None: ...


def peek(fd: int) -> bytes | None:
    """A non-blocking peek at a socket: b"" when its peer closed it (or it failed), the first
    waiting byte when there is one, None when nothing is waiting.

    Uses the C-level socket type so that gevent's cooperative socket does not turn the
    non-blocking peek into a wait, and detaches so the fd stays owned by its socket.
    """
    try:
        probe = _socket.socket(fileno=fd)
    except (OSError, ValueError):
        return b""
    try:
        return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    finally:
        probe.detach()


def is_peer_closed(fd: int) -> bool:
    """True when the client closed its end (or its socket failed)."""
    return peek(fd) == b""


class Watchdog:
    def __init__(self, tick: float = 0.5) -> None:
        self.tick = tick
        self._watched: set[Watched] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def register(self, item: Watched) -> None:
        with self._lock:
            self._watched.add(item)
            self._ensure_running()

    def unregister(self, item: Watched) -> None:
        with self._lock:
            self._watched.discard(item)

    def _ensure_running(self) -> None:
        # Started lazily and per process: a thread started before gunicorn forks does not survive it.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="relay-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            with self._lock:
                watched = list(self._watched)
            now = time.monotonic()
            for item in watched:
                self._check(item, now)

    @staticmethod
    def _check(item: Watched, now: float) -> None:
        try:
            fd = item.client_fd
            if fd is not None and is_peer_closed(fd):
                item.on_client_gone()
            else:
                item.on_tick(now)
        except Exception:  # noqa: BLE001 - one bad relay must not stop the timer for the others
            pass


_watchdog: Watchdog | None = None


def get_watchdog() -> Watchdog:
    global _watchdog
    if _watchdog is None:
        _watchdog = Watchdog()
    return _watchdog
