"""A lean fake DeepSeek for the bench: canned bytes on a gevent StreamServer, HTTP/1.1 keep-alive.

It speaks DeepSeek's /chat/completions wire format: a JSON answer with usage, or an SSE stream sent
with chunked transfer encoding (role chunk, content chunks, finish chunk, usage chunk with
"choices": [], then `data: [DONE]`), one write per event; an answer stops at the request's
max_tokens, as DeepSeek's does. Only the bearer key given on the command line is accepted, and
GET /stats counts the answers given (requests, prompt and completion tokens), so that a ledger can
be checked against it. The point is to cost as little CPU as possible, so that the bench measures the
gateway; tests/fake_deepseek.py is the full-featured fake for tests.

    python bench/fake_upstream.py --port N --api-key SECRET [--tokens 8] [--event-gap-ms 0]
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from typing import Any

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

WORDS = ("Hello", " there", ",", " traveller", ".", " The", " road", " is", " long", " and", " winding", ".")
MAX_HEADER_LINE = 65536
MAX_BODY = 32 * 1024 * 1024


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n".encode()


def json_response(status: int, payload: Any) -> bytes:
    data = json.dumps(payload, separators=(",", ":")).encode()
    head = f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n"
    return _status_line(status) + head.encode() + data


def error_response(status: int, message: str, type_: str = "invalid_request_error") -> bytes:
    return json_response(status, {"error": {"message": message, "type": type_, "param": None, "code": type_}})


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(payload: Any) -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    return _chunked(b"data: " + data + b"\n\n")


def stamped(event: bytes) -> bytes:
    """A content event with the time it is sent at the start of its text (`@1733000000.123456@`),
    so that a client can tell how late it arrived (bench/slow_streams.py)."""
    data = event.split(b"\r\n", 1)[1][:-2]
    if b'"content":"' not in data or b'"content":""' in data:
        return event
    return _chunked(data.replace(b'"content":"', b'"content":"@%.6f@' % time.time(), 1))


class Canned:
    """Pre-encoded answers per model id and length; only those vary between requests."""

    PROMPT_TOKENS = 120

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.created = int(time.time())
        self._json: dict[tuple[str, int], bytes] = {}
        self._events: dict[tuple[str, int], list[bytes]] = {}

    def usage(self, tokens: int) -> dict[str, Any]:
        prompt, completion = self.PROMPT_TOKENS, tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": prompt,
        }

    def completion(self, model: str, tokens: int) -> bytes:
        if (model, tokens) not in self._json:
            text = "".join(WORDS[i % len(WORDS)] for i in range(tokens))
            self._json[(model, tokens)] = json_response(
                200,
                {
                    "id": "bench-0001",
                    "object": "chat.completion",
                    "created": self.created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": self.usage(tokens),
                    "system_fingerprint": "fp_bench",
                },
            )
        return self._json[(model, tokens)]

    def stream(self, model: str, tokens: int) -> list[bytes]:
        if (model, tokens) not in self._events:
            self._events[(model, tokens)] = self._build_stream(model, tokens)
        return self._events[(model, tokens)]

    def _chunk(self, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "bench-0001",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }

    def _build_stream(self, model: str, tokens: int) -> list[bytes]:
        events = [_event(self._chunk(model, {"role": "assistant", "content": ""}))]
        events += [_event(self._chunk(model, {"content": WORDS[i % len(WORDS)]})) for i in range(tokens)]
        events.append(_event(self._chunk(model, {"content": ""}, finish="stop")))
        usage = {**self._chunk(model, {}), "choices": [], "usage": self.usage(tokens)}
        events.append(_event(usage))
        events.append(_event(b"[DONE]") + LAST_CHUNK)
        return events


class Handler:
    def __init__(self, api_key: str, canned: Canned, event_gap: float) -> None:
        self.auth = f"Bearer {api_key}".encode()
        self.canned = canned
        self.event_gap = event_gap
        self.stamp = event_gap > 0  # slow streams: each content event says when it was sent
        self.stats = {"answered": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def __call__(self, sock: Any, _address: Any) -> None:
        # One write per SSE event: without NODELAY, Nagle holds each small write for the peer's delayed ACK (40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = sock.makefile("rb")
        try:
            while self._serve_one(sock, rfile):
                pass
        except OSError:
            pass  # the client went away; nothing to clean up beyond the socket
        finally:
            rfile.close()
            sock.close()

    def _serve_one(self, sock: Any, rfile: Any) -> bool:
        """Answer one request; False when the connection should close."""
        request_line = rfile.readline(MAX_HEADER_LINE)
        if not request_line:
            return False
        headers = _read_headers(rfile)
        length = int(headers.get(b"content-length", b"0"))
        if b"transfer-encoding" in headers or length > MAX_BODY:
            sock.sendall(error_response(400, "The bench fake needs a Content-Length body"))
            return False
        body = rfile.read(length) if length else b""
        self._answer(sock, request_line, headers, body)
        return headers.get(b"connection", b"").lower() != b"close"

    def _answer(self, sock: Any, request_line: bytes, headers: dict[bytes, bytes], raw: bytes) -> None:
        method, _, rest = request_line.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method == b"GET" and path == b"/stats":
            sock.sendall(json_response(200, self.stats))
            return
        if method != b"POST" or not path.endswith(b"/chat/completions"):
            sock.sendall(error_response(404, "Not Found"))
            return
        if headers.get(b"authorization") != self.auth:
            sock.sendall(error_response(401, "Authentication Fails, Your api key is invalid", "authentication_error"))
            return
        try:
            body = json.loads(raw)
            model = str(body["model"])
            tokens = min(self.canned.tokens, int(body.get("max_tokens") or self.canned.tokens))
        except (ValueError, KeyError, TypeError):
            sock.sendall(error_response(400, "Failed to deserialize the JSON body into the target type"))
            return
        self._count(tokens)
        if body.get("stream") is True:
            self._send_stream(sock, model, tokens)
        else:
            sock.sendall(self.canned.completion(model, tokens))

    def _count(self, tokens: int) -> None:
        self.stats["answered"] += 1
        self.stats["prompt_tokens"] += self.canned.PROMPT_TOKENS
        self.stats["completion_tokens"] += tokens

    def _send_stream(self, sock: Any, model: str, tokens: int) -> None:
        events = self.canned.stream(model, tokens)
        sock.sendall(STREAM_HEAD + events[0])
        for event in events[1:]:
            if self.event_gap:
                gevent.sleep(self.event_gap)
            sock.sendall(stamped(event) if self.stamp else event)


def _read_headers(rfile: Any) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    while True:
        line = rfile.readline(MAX_HEADER_LINE)
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description="Lean fake DeepSeek upstream for the relay bench.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True, help="The only bearer key accepted.")
    parser.add_argument("--tokens", type=int, default=8, help="Content chunks per answer.")
    parser.add_argument(
        "--event-gap-ms", type=float, default=0.0, help="Pause between stream events (then each says when it was sent)."
    )
    args = parser.parse_args()
    handler = Handler(args.api_key, Canned(args.tokens), args.event_gap_ms / 1000)
    server = StreamServer(("127.0.0.1", args.port), handler, backlog=2048)
    server.start()
    print(f"fake upstream on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
