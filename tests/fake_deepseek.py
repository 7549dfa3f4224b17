"""A fake DeepSeek server speaking the real wire format, for tests and benchmarks.

A WSGI app served by gevent's WSGIServer, either in a thread of the test process (its own hub, so
the test process is never monkey-patched) or as a process: `python -m tests.fake_deepseek --port N`.

Behaviour is chosen per request by a `fake` object in the request body (the gateway passes unknown
fields through unchanged), or by `FakeDeepSeek.script(...)` for the next requests, else a default
answer. Options (all optional):
  status, error           answer with this HTTP status and an OpenAI-shaped error body
  tokens, delay           content tokens to stream and seconds between them
  reasoning               reasoning tokens streamed before the content
  keepalives              ": keep-alive" comments sent before the first token
  keepalive_every         seconds between comments while `silent` or `stall`
  crlf                    end lines with CRLF, split across writes
  silent                  send nothing but comments (first-event timeout)
  stall_after             stop after this many content tokens and send only comments
  drop_after              close the connection after this many content tokens
  no_usage                omit the usage chunk
  leading_blank_lines     non-stream: blank lines before the JSON (DeepSeek's queue keep-alive)
  error_event             stream: send an {"error": ...} event after the first token
  prompt_tokens           report this many prompt tokens (what DeepSeek's tokenizer would count)
  cache_hit_tokens        of those, report this many as cache hits (prompt_cache_hit_tokens; the
                          rest are prompt_cache_miss_tokens, as DeepSeek splits them)
  ignore_max_tokens       generate all `tokens` and `reasoning` whatever max_tokens says
  linger_after_done       stream: seconds to keep the connection open after [DONE] (a slow proxy)

The account endpoints (`GET /models`, `GET /user/balance`, what the pool probe asks) answer from
`FakeDeepSeek.set_account(...)`: status (an error status for both), available, total (the
balance, a decimal string as DeepSeek sends it), currency, freeze (seconds before answering).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer

WORDS = ("Hello", " there", ",", " traveller", ".", " The", " road", " is", " long", " and")


@dataclass
class Seen:
    """One request as the fake saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    started: float
    closed_early_at: float | None = None  # the client (the gateway) hung up mid-answer
    finished_at: float | None = None
    usage: dict[str, Any] | None = None  # what the fake reported, when it got as far as reporting it


@dataclass
class FakeState:
    requests: list[Seen] = field(default_factory=list)
    scripts: deque[dict[str, Any]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    api_key: str | None = None  # when set, other bearer tokens get 401
    account: dict[str, Any] = field(default_factory=dict)  # see set_account
    account_requests: list[str] = field(default_factory=list)  # paths of GET /models and /user/balance


def prompt_tokens_of(body: dict[str, Any]) -> int:
    chars = sum(len(str(m.get("content", ""))) for m in body.get("messages") or () if isinstance(m, dict))
    return 5 + chars // 4


def within_max_tokens(body: dict[str, Any], tokens: int, reasoning: int) -> tuple[int, int]:
    """Like DeepSeek, never generate more than max_tokens (reasoning first, then content)."""
    cap = body.get("max_tokens")
    if not isinstance(cap, int) or tokens + reasoning <= cap:
        return tokens, reasoning
    reasoning = min(reasoning, cap)
    return cap - reasoning, reasoning


class FakeDeepSeek:
    def __init__(self, api_key: str | None = None) -> None:
        self.state = FakeState(api_key=api_key)

    # -- test helpers ------------------------------------------------------------------------------
    def script(self, **options: Any) -> None:
        with self.state.lock:
            self.state.scripts.append(options)

    def set_account(self, **options: Any) -> None:
        """How the account endpoints answer from now on (module docstring); no options: healthy."""
        with self.state.lock:
            self.state.account = dict(options)

    @property
    def requests(self) -> list[Seen]:
        return self.state.requests

    def reset(self) -> None:
        with self.state.lock:
            self.state.requests.clear()
            self.state.scripts.clear()
            self.state.account = {}
            self.state.account_requests.clear()

    # -- WSGI ------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.endswith(("/user/balance", "/models")):
            return self._account(path, environ, start_response)
        if not path.endswith("/chat/completions"):
            return self._json(start_response, 404, {"error": {"message": "Not Found", "type": "invalid_request_error"}})
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(start_response, 400, "Failed to deserialize the JSON body into the target type")
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        seen = Seen(path=path, headers=headers, body=body, started=time.monotonic())
        with self.state.lock:
            self.state.requests.append(seen)
            options = dict(self.state.scripts.popleft()) if self.state.scripts else {}
        options.update(body.get("fake") or {})
        if self.state.api_key and headers.get("authorization") != f"Bearer {self.state.api_key}":
            return self._error(
                start_response, 401, "Authentication Fails, Your api key is invalid", type_="authentication_error"
            )
        if options.get("status"):
            return self._error(
                start_response,
                int(options["status"]),
                options.get("error", "Upstream failure"),
                retry_after=options.get("retry_after"),
            )
        if body.get("stream"):
            start_response(
                "200 OK", [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]
            )
            return self._stream(seen, body, options)
        return self._complete(start_response, seen, body, options)

    def _account(self, path: str, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with self.state.lock:
            self.state.account_requests.append(path)
            options = dict(self.state.account)
        if options.get("freeze"):
            gevent.sleep(float(options["freeze"]))
        if self.state.api_key and environ.get("HTTP_AUTHORIZATION") != f"Bearer {self.state.api_key}":
            options["status"] = 401
        if options.get("status"):
            status = int(options["status"])
            message = "Insufficient Balance" if status == 402 else "Authentication Fails, Your api key is invalid"
            return self._error(start_response, status, message, type_="authentication_error")
        if path.endswith("/models"):
            models = [
                {"id": m, "object": "model", "owned_by": "deepseek"} for m in ("deepseek-v4-flash", "deepseek-v4-pro")
            ]
            return self._json(start_response, 200, {"object": "list", "data": models})
        total = str(options.get("total", "12.34"))
        info = {"currency": options.get("currency", "USD"), "total_balance": total, "granted_balance": "0.00"}
        info["topped_up_balance"] = total
        return self._json(
            start_response, 200, {"is_available": options.get("available", True), "balance_infos": [info]}
        )

    @staticmethod
    def _json(start_response: Any, status: int, payload: Any) -> list[bytes]:
        data = json.dumps(payload).encode()
        start_response(f"{status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def _error(
        self,
        start_response: Any,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        retry_after: Any = None,
    ) -> list[bytes]:
        payload = {"error": {"message": message, "type": type_, "param": None, "code": "invalid_request_error"}}
        data = json.dumps(payload).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        start_response(f"{status} Error", headers)
        return [data]

    # -- answers ---------------------------------------------------------------------------------
    def _chunk(self, cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }

    def _usage(self, body: dict[str, Any], completion: int, reasoning: int, options: dict[str, Any]) -> dict[str, Any]:
        prompt = int(options.get("prompt_tokens") or prompt_tokens_of(body))
        hit = min(int(options.get("cache_hit_tokens") or 0), prompt)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion + reasoning,
            "total_tokens": prompt + completion + reasoning,
            "prompt_tokens_details": {"cached_tokens": hit},
            "prompt_cache_hit_tokens": hit,
            "prompt_cache_miss_tokens": prompt - hit,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }

    def _stream(self, seen: Seen, body: dict[str, Any], options: dict[str, Any]) -> Iterator[bytes]:
        try:
            yield from self._stream_events(seen, body, options)
            seen.finished_at = time.monotonic()
        except GeneratorExit:
            seen.closed_early_at = time.monotonic()
            raise

    def _stream_events(self, seen: Seen, body: dict[str, Any], options: dict[str, Any]) -> Iterator[bytes]:
        end = b"\r\n" if options.get("crlf") else b"\n"
        model, cid = body.get("model", ""), str(uuid.uuid4())
        tokens, reasoning = self._lengths(body, options)

        def event(payload: Any) -> bytes:
            data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
            return b"data: " + data + end + end

        for _ in range(int(options.get("keepalives", 0))):
            yield b": keep-alive" + end + end
        if options.get("silent"):
            yield from self._comments_forever(options, end)
        yield event(self._chunk(cid, model, {"role": "assistant", "content": None, "reasoning_content": ""}))
        for i in range(reasoning):
            gevent.sleep(float(options.get("delay", 0)))
            yield event(self._chunk(cid, model, {"content": None, "reasoning_content": f"think{i} "}))
        for i in range(tokens):
            yield from self._content_token(
                i, event(self._chunk(cid, model, {"content": WORDS[i % len(WORDS)]})), options, end
            )
            if i == 0 and options.get("error_event"):
                yield event({"error": {"message": options["error_event"], "type": "server_error"}})
                return
        yield event(self._chunk(cid, model, {"content": ""}, finish="stop"))
        if not options.get("no_usage"):
            usage = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": self._usage(body, tokens, reasoning, options),
            }
            seen.usage = usage["usage"]
            yield event(usage)
        yield event(b"[DONE]")
        if options.get("linger_after_done"):
            gevent.sleep(float(options["linger_after_done"]))

    @staticmethod
    def _lengths(body: dict[str, Any], options: dict[str, Any]) -> tuple[int, int]:
        tokens, reasoning = int(options.get("tokens", 5)), int(options.get("reasoning", 0))
        return (tokens, reasoning) if options.get("ignore_max_tokens") else within_max_tokens(body, tokens, reasoning)

    @staticmethod
    def _comments_forever(options: dict[str, Any], end: bytes) -> Iterator[bytes]:
        while True:
            gevent.sleep(float(options.get("keepalive_every", 0.2)))
            yield b": keep-alive" + end + end

    def _content_token(self, i: int, data: bytes, options: dict[str, Any], end: bytes) -> Iterator[bytes]:
        if options.get("delay"):
            gevent.sleep(float(options["delay"]))
        if options.get("stall_after") is not None and i == int(options["stall_after"]):
            yield from self._comments_forever(options, end)
        if options.get("drop_after") is not None and i == int(options["drop_after"]):
            raise ConnectionAbortedError("fake drops the connection")
        if options.get("crlf"):
            yield data[: len(data) - 3]  # split inside the CRLF pair that ends the event
            yield data[len(data) - 3 :]
        else:
            yield data

    def _complete(self, start_response: Any, seen: Seen, body: dict[str, Any], options: dict[str, Any]) -> list[bytes]:
        tokens, reasoning = self._lengths(body, options)
        if options.get("delay"):
            gevent.sleep(float(options["delay"]) * tokens)
        message = {"role": "assistant", "content": "".join(WORDS[i % len(WORDS)] for i in range(tokens))}
        if reasoning:
            message["reasoning_content"] = " ".join(f"think{i}" for i in range(reasoning))
        payload = {
            "id": str(uuid.uuid4()),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": self._usage(body, tokens, reasoning, options),
            "system_fingerprint": "fp_fake",
        }
        data = b"\n" * int(options.get("leading_blank_lines", 0)) + json.dumps(payload).encode()
        seen.finished_at = time.monotonic()
        seen.usage = payload["usage"]
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


class FakeServer:
    """Runs a FakeDeepSeek on 127.0.0.1 in a thread with its own gevent hub."""

    def __init__(self, fake: FakeDeepSeek, port: int = 0, ssl_context: Any = None) -> None:
        self.fake = fake
        self._port = port
        self._ssl = {"ssl_context": ssl_context} if ssl_context is not None else {}
        self._ready = threading.Event()
        self._server: WSGIServer | None = None
        self._thread = threading.Thread(target=self._run, name="fake-deepseek", daemon=True)

    def _run(self) -> None:
        self._server = WSGIServer(("127.0.0.1", self._port), self.fake, log=None, error_log=None, **self._ssl)
        self._server.start()
        self._ready.set()
        self._server.serve_forever()

    def start(self) -> FakeServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_port

    @property
    def base_url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            server = self._server
            hub = server.loop
            hub.run_callback_threadsafe(server.stop) if hasattr(hub, "run_callback_threadsafe") else server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    from gevent import monkey

    monkey.patch_all()
    server = WSGIServer(("127.0.0.1", args.port), FakeDeepSeek(), log=None, error_log=None, backlog=2048)
    print(f"fake DeepSeek on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
