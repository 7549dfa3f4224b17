"""What the gateway asks of Redis per request, seen through MONITOR on the bench's own database."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis

CELERY_QUEUE_PATTERN = "celery*"


class CommandCounter:
    """Counts commands sent to one Redis database by other clients while `watch` runs an action."""

    def __init__(self, client: redis.Redis, db: int) -> None:
        self.client = client
        self.db = db
        self.commands: Counter[str] = Counter()  # sent by clients over the network
        self.scripted: Counter[str] = Counter()  # run inside Lua scripts (EVAL/EVALSHA), no round trip of their own
        self._stop_word = f"relay-bench-stop-{uuid.uuid4().hex}"

    def watch(self, action: Callable[[], Any]) -> Any:
        # Connect before the action starts; the thread then reads until our stop word comes round.
        monitor = self.client.monitor()
        monitor.__enter__()
        thread = threading.Thread(target=self._read, args=(monitor,), daemon=True)
        thread.start()
        try:
            return action()
        finally:
            self.client.echo(self._stop_word)
            thread.join(10)
            monitor.__exit__(None, None, None)

    def _read(self, monitor: Any) -> None:
        while True:
            entry = monitor.next_command()
            command = entry.get("command", "")
            if self._stop_word in command:
                return
            if entry.get("db") == self.db and command:
                counter = self.scripted if entry.get("client_type") == "lua" else self.commands
                counter[command.split(" ", 1)[0].upper()] += 1


def drop_celery_queue(client: redis.Redis) -> int:
    """Deletes the usage-job messages queued for Celery (the bench runs no worker); returns how many there were."""
    queued = 0
    for name in client.scan_iter(CELERY_QUEUE_PATTERN):
        if client.type(name) == b"list":
            queued += client.llen(name)
            client.delete(name)
    return queued
