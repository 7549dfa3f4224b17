"""A real SMTP server for tests: aiosmtpd's Controller on 127.0.0.1, collecting messages.

aiosmtpd cannot start on port 0 (its start-up self-connection goes to port 0), so a free port
is picked first. `fail_next(n)` answers the next n messages with a temporary 451 error, and
`refuse_to(address)` every message to that address until `reset()`.
"""

from __future__ import annotations

import socket
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CollectingHandler:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.failures_left = 0
        self.refused = 0
        self.refused_addresses: set[str] = set()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        with self.lock:
            refused_address = bool(self.refused_addresses & set(envelope.rcpt_tos))
            if self.failures_left > 0 or refused_address:
                self.failures_left -= 0 if refused_address else 1
                self.refused += 1
                return "451 4.3.0 Temporary failure, try again later"
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self) -> None:
        self.handler = CollectingHandler()
        self.port = _free_port()
        self.host = "127.0.0.1"
        self._controller = Controller(self.handler, hostname=self.host, port=self.port)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        return self.handler.messages

    def reset(self) -> None:
        with self.handler.lock:
            self.handler.messages.clear()
            self.handler.envelopes.clear()
            self.handler.failures_left = 0
            self.handler.refused = 0
            self.handler.refused_addresses.clear()

    def fail_next(self, count: int) -> None:
        self.handler.failures_left = count

    def refuse_to(self, address: str) -> None:
        with self.handler.lock:
            self.handler.refused_addresses.add(address)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} message(s), got {len(self.messages)}")

    def config(self) -> dict[str, Any]:
        """App settings that point at this sink."""
        return {"SMTP_HOST": self.host, "SMTP_PORT": self.port, "SMTP_STARTTLS": False, "SMTP_USER": None}

    def env(self) -> dict[str, str]:
        """The same settings for a subprocess (a Celery worker)."""
        return {"SMTP_HOST": self.host, "SMTP_PORT": str(self.port), "SMTP_STARTTLS": "0"}


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    return part.get_content() if part is not None else ""
