"""Dependency faults under the real serving stack, measured: what a client sees and after how long,
and afterwards the usage ledger against what the upstream reported.

    .venv/bin/python bench/faults.py [--freeze 8] [--workers 2]

It starts its own redis-server on a free port (never the shared one), the full-featured fake
DeepSeek from tests/, gunicorn (gevent workers) and a Celery worker with beat, all on 127.0.0.1,
with a fresh SQLite database; then, one after the other:

- Redis frozen (SIGSTOP) while new requests arrive, then thawed;
- Redis frozen while streams are running;
- Redis killed while streams are running, restarted empty later;
- a database that accepts connections and never answers (a second gateway pointed at it);
- a request body that stops arriving, and a chunked body over the limit.

It prints one table row per request it sent, then the ledger check. Exit status 1 when the ledger
and the upstream disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_deepseek import FakeDeepSeek, FakeServer  # noqa: E402

BIN = ROOT / ".venv" / "bin"
ROWS: list[tuple[str, str, str, str]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout:.0f} s")


class Proc:
    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.cmd, self.env, self.log = cmd, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.proc.wait(10)


def record(fault: str, request: str, saw: str, seconds: float) -> None:
    ROWS.append((fault, request, saw, f"{seconds:.2f}"))
    print(f"  {fault:<34} {request:<26} {saw:<44} {seconds:6.2f} s", flush=True)


def chat(base: str, key: str, stream: bool, **fake: Any) -> tuple[str, float, float | None]:
    """(what the client saw, seconds to the end, monotonic time the client saw [DONE] or None)."""
    body = {"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "Tell me a story"}]}
    body.update(stream=stream, fake=fake)
    started = time.monotonic()
    try:
        response = requests.post(
            f"{base}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            stream=stream,
            timeout=90,
        )
        if response.status_code != 200:
            error = response.json().get("error", {})
            return f"{response.status_code} {error.get('code') or error.get('type')}", time.monotonic() - started, None
        if not stream:
            response.json()
            return "200 answer", time.monotonic() - started, None
        done_at = None
        for line in response.iter_lines():
            if line == b"data: [DONE]":
                done_at = time.monotonic()
            elif line.startswith(b"data: ") and b'"error"' in line:
                return "200 then error event", time.monotonic() - started, None
        return ("200 stream to [DONE]" if done_at else "200 stream cut"), time.monotonic() - started, done_at
    except requests.RequestException as exc:
        return f"no answer ({type(exc).__name__})", time.monotonic() - started, None


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.redis_port = free_port()
        self.redis = Proc(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            dict(os.environ),
            tmp / "redis.log",
        )
        self.fake = FakeDeepSeek(api_key="sk-faults-upstream")
        self.fake_server = FakeServer(self.fake).start()
        self.db_path = tmp / "faults.sqlite3"
        self.env = {
            **{k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ},
            "APP_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "PUBLIC_BASE_URL": "https://faults.invalid",
            "DATABASE_URL": f"sqlite:///{self.db_path}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "UPSTREAM_BASE_URL": self.fake_server.base_url,
            "UPSTREAM_API_KEY": "sk-faults-upstream",
            "REDIS_SOCKET_TIMEOUT": "2",
            "REDIS_CONNECT_TIMEOUT": "1",
            "REQUEST_BODY_TIMEOUT": "3",
            "RELAY_MAX_BODY_BYTES": str(256 * 1024),
            "USAGE_RECONCILE_SECONDS": "3",
            "USAGE_DRAIN_SECONDS": "1",
            "USAGE_SPOOL_DIR": str(tmp / "spool"),
            "LOG_LEVEL": "warning",
        }
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def flask(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(BIN / "flask"), "--app", "wsgi", *args],
            cwd=ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise SystemExit(f"flask {' '.join(args)} failed: {done.stderr[-1500:]}")
        return done.stdout

    def start(self) -> None:
        self.redis.start()
        wait_port(self.redis_port)
        self.flask("db", "upgrade")
        self.key = self.flask("keys", "create", "--tokens", "50000000", "--rpm", "10000").strip().splitlines()[-1]
        gunicorn = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-k", "gevent", "-w", str(self.args.workers)]
        self.gateway = Proc([*gunicorn, "-b", f"127.0.0.1:{self.port}", "wsgi:app"], self.env, self.tmp / "gw.log")
        self.gateway.start()
        celery = [str(BIN / "celery"), "-A", "workers.celery_app", "worker", "-B", "--pool=solo", "--loglevel=WARNING"]
        self.worker = Proc(celery + ["-s", str(self.tmp / "beat")], self.env, self.tmp / "worker.log").start()
        wait_port(self.port)
        assert chat(self.base, self.key, False)[0] == "200 answer"

    def stop(self) -> None:
        for proc in (getattr(self, "worker", None), getattr(self, "gateway", None), self.redis):
            if proc is not None:
                proc.stop()

    # -- faults ------------------------------------------------------------------------------------
    def redis_frozen_for_new_requests(self) -> None:
        fault = f"Redis frozen {self.args.freeze:g} s"
        self.redis.signal(signal.SIGSTOP)
        thawed = threading.Timer(self.args.freeze, lambda: self.redis.signal(signal.SIGCONT))
        thawed.start()
        for stream in (False, True):
            saw, took, _ = chat(self.base, self.key, stream)
            record(fault, "new " + ("stream" if stream else "request"), saw, took)
        started = time.monotonic()
        health = requests.get(f"{self.base}/readyz", timeout=30)
        record(fault, "GET /readyz", f"{health.status_code}", time.monotonic() - started)
        thawed.join()
        saw, took, _ = chat(self.base, self.key, True)
        record(fault + ", thawed", "new stream", saw, took)

    def running_streams(self, fault: str, act: Any, undo: Any) -> None:
        """Start streams that run ~3 s, do `act` one second in, measure upstream end -> client [DONE]."""
        before = len(self.fake.requests)
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(chat, self.base, self.key, True, tokens=60, delay=0.05) for _ in range(4)]
            time.sleep(1.0)
            act()
            results = [future.result() for future in futures]
        seen = self.fake.requests[before:]
        upstream_end = max((s.finished_at or 0.0) for s in seen)
        for saw, took, done_at in results:
            after = f" ([DONE] {done_at - upstream_end:+.2f} s after upstream end)" if done_at else ""
            record(fault, "running stream", saw + after, took)
        undo()
        saw, took, _ = chat(self.base, self.key, True)
        record(fault + ", back", "new stream", saw, took)

    def redis_frozen_mid_stream(self) -> None:
        self.running_streams(
            "Redis frozen mid-stream", lambda: self.redis.signal(signal.SIGSTOP), self._thaw_after_streams
        )

    def _thaw_after_streams(self) -> None:
        self.redis.signal(signal.SIGCONT)

    def redis_killed_mid_stream(self) -> None:
        def restart() -> None:
            time.sleep(2)
            self.redis.start()
            wait_port(self.redis_port)

        self.running_streams("Redis killed mid-stream", self.redis.stop, restart)

    def silent_database(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        held: list[socket.socket] = []

        def accept_and_stay_silent() -> None:
            with contextlib.suppress(OSError):
                while True:
                    held.append(listener.accept()[0])

        threading.Thread(target=accept_and_stay_silent, daemon=True).start()
        port = free_port()
        env = {**self.env, "DATABASE_URL": f"postgresql://x@127.0.0.1:{listener.getsockname()[1]}/x"}
        env["DATABASE_CONNECT_TIMEOUT"] = "2"
        gateway = Proc(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-w", "1", "-b", f"127.0.0.1:{port}", "wsgi:app"],
            env,
            self.tmp / "gw-silent-db.log",
        ).start()
        try:
            wait_port(port)
            saw, took, _ = chat(f"http://127.0.0.1:{port}", self.key, True)
            record("database never answers", "new stream", saw, took)
            started = time.monotonic()
            page = requests.get(f"http://127.0.0.1:{port}/", timeout=60)
            record("database never answers", "GET / (store)", str(page.status_code), time.monotonic() - started)
        finally:
            gateway.stop()
            listener.close()

    def hostile_bodies(self) -> None:
        payload = json.dumps({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]})
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Authorization: Bearer {self.key}\r\n"
        )
        cases = {
            "body stops arriving": f"{head}Content-Length: {len(payload) + 50}\r\n\r\n{payload}".encode(),
            "chunked body over limit": f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()
            + b"".join(b"8000\r\n" + b"x" * 0x8000 + b"\r\n" for _ in range(9))
            + b"0\r\n\r\n",
        }
        for name, data in cases.items():
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                threading.Thread(target=_send_quietly, args=(sock, data), daemon=True).start()
                first = sock.recv(200).split(b"\r\n", 1)[0].decode()
            record("hostile body", name, first.removeprefix("HTTP/1.1 "), time.monotonic() - started)

    # -- the ledger ----------------------------------------------------------------------------------
    def ledger_check(self) -> bool:
        upstream = [s.usage for s in self.fake.requests if s.usage is not None]
        reported = (sum(u["prompt_tokens"] for u in upstream), sum(u["completion_tokens"] for u in upstream))
        deadline = time.monotonic() + 60
        while True:
            with sqlite3.connect(self.db_path, timeout=10) as conn:
                count, prompt, completion, billed = conn.execute(
                    "SELECT count(*), coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0), "
                    "coalesce(sum(billed_tokens),0) FROM usage_records"
                ).fetchone()
                used = conn.execute("SELECT tokens_used FROM api_keys").fetchone()[0]
            if (count >= len(upstream) and used == billed) or time.monotonic() > deadline:
                break
            time.sleep(1)
        print()
        print(f"upstream answered with usage: {len(upstream)} requests, prompt {reported[0]}, completion {reported[1]}")
        print(
            f"ledger (usage_records):       {count} records, prompt {prompt}, completion {completion}, billed {billed}"
        )
        print(f"key's tokens_used:            {used}")
        return count == len(upstream) and (prompt, completion) == reported and used == billed


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the gateway may answer and close before the whole body is sent
        sock.sendall(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--freeze", type=float, default=8.0, help="seconds Redis stays frozen")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relaygate-faults-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.start()
            print(f"  {'fault':<34} {'request':<26} {'client saw':<44} {'after':>8}")
            bench.redis_frozen_for_new_requests()
            bench.redis_frozen_mid_stream()
            bench.redis_killed_mid_stream()
            bench.silent_database()
            bench.hostile_bodies()
            ok = bench.ledger_check()
        finally:
            bench.stop()
    print("ledger matches the upstream" if ok else "LEDGER AND UPSTREAM DISAGREE")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
