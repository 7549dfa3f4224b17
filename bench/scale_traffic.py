"""Requests for the scale test: spread over the gateway nodes, tallied by what the client saw.

A node that refuses the connection (it is restarting) is skipped for the next one, the way a load
balancer retries a connect failure; such a request never reached a gateway, so nothing was billed.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

REFUSED = "refused"


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    by_node: Counter[int] = field(default_factory=Counter)  # 200 answers per node port
    retried: int = 0  # connections refused and sent to the next node
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, port: int, retried: int) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            self.retried += retried
            if outcome == "200":
                self.by_node[port] += 1

    def text(self) -> str:
        return ", ".join(f"{name}: {count}" for name, count in sorted(self.outcomes.items()))


def send(session: requests.Session, port: int, key: str, body: bytes, stream: bool) -> str:
    """One request; the outcome is the status, "200 cut" for a stream without [DONE], or REFUSED."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        with session.post(url, data=body, headers=headers, stream=stream, timeout=60) as response:
            data = response.content
    except requests.ConnectionError as exc:
        if "Connection refused" in str(exc):
            return REFUSED
        if "Remote end closed connection" in str(exc):
            return "no answer (node closed a kept-alive connection)"
        return f"no answer ({type(exc).__name__})"
    except requests.RequestException as exc:
        return f"no answer ({type(exc).__name__})"
    if response.status_code == 200 and stream and not data.endswith(b"data: [DONE]\n\n"):
        return "200 cut"
    return str(response.status_code)


class Spread:
    """Round-robin over the nodes."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def next_index(self) -> int:
        with self._lock:
            return next(self._turn)

    def send(self, session: requests.Session, key: str, body: bytes, stream: bool, tally: Tally) -> str:
        start = self.next_index()
        for attempt in range(len(self.ports) * 2):
            port = self.ports[(start + attempt) % len(self.ports)]
            outcome = send(session, port, key, body, stream)
            if outcome != REFUSED:
                tally.add(outcome, port, attempt)
                return outcome
            time.sleep(0.05)
        tally.add(REFUSED, 0, len(self.ports) * 2)
        return REFUSED

    def burst(self, key: str, body: bytes, count: int, tally: Tally) -> None:
        """`count` requests at once, each on its own connection, over all the nodes."""

        def one(_: int) -> str:
            with requests.Session() as session:
                return self.send(session, key, body, False, tally)

        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(one, range(count)))


def steady_load(spread: Spread, key: str, bodies: dict[bool, bytes], stop: threading.Event, tally: Tally) -> None:
    """One client: alternately non-stream and stream requests until `stop`, on keep-alive connections."""
    with requests.Session() as session:
        for n in itertools.count():
            if stop.is_set():
                return
            stream = n % 2 == 1
            spread.send(session, key, bodies[stream], stream, tally)
