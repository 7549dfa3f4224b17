"""Small clients for talking to a live gateway in tests."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import requests

from app.relay.sse import StreamDecoder


def chat_body(stream: bool = False, model: str = "deepseek-v4-flash", content: str = "Hello!", **extra: Any) -> dict:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}], **extra}


def post_stream(base_url: str, key: str, body: dict, timeout: float = 30) -> requests.Response:
    return requests.post(
        f"{base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        stream=True,
        timeout=timeout,
    )


def read_sse(response: requests.Response) -> tuple[list[bytes], list[float], bytes]:
    """All event payloads, the time each arrived, and the raw bytes (comments included)."""
    decoder, events, times, raw = StreamDecoder(), [], [], b""
    for chunk in response.iter_content(chunk_size=None):
        raw += chunk
        for data in decoder.feed(chunk):
            events.append(data)
            times.append(time.monotonic())
    return events, times, raw


def json_events(events: list[bytes]) -> list[dict]:
    return [json.loads(e) for e in events if e != b"[DONE]"]


def content_of(chunks: list[dict]) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))


def send_raw_request(port: int, key: str, body: dict) -> socket.socket:
    """POST a chat completion over a bare socket; the caller reads, or hangs up with sock.close()."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    payload = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def open_raw_stream(port: int, key: str, body: dict, until: bytes, count: int = 1) -> tuple[socket.socket, bytes]:
    """POST over a bare socket and read until `until` was seen `count` times; the caller hangs up
    with sock.close(), which is how a client that presses Stop looks to the gateway."""
    sock = send_raw_request(port, key, body)
    received = b""
    while received.count(until) < count:
        received += sock.recv(65536)
    return sock, received
