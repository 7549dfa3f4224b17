"""The processes under test: a fake upstream and the gateway on 127.0.0.1, with a fresh database and key.

Each process runs in its own session, so that stopping it stops its children (gunicorn's workers) too;
the bench ends only what it started, by process group id.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import procstat
import redis
from loadgen import BenchError, pinned, status_of
from plan import BENCH, KINDS, ROOT, VENV_BIN, Plan, chat_body

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} did not come up within {timeout:.0f} s")


class Server:
    """A process the bench started, in its own session so that it and its children stop together."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.name, self.cmd, self.env, self.log, self.cwd = name, cmd, env, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.name} exited; its log ends with:\n{tail}")


def gateway_env(plan: Plan, tmp: Path, fake_port: int, upstream_key: str) -> dict[str, str]:
    # A clean environment: only what the gateway needs, so that a developer's settings cannot leak in.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ") if k in os.environ}
    return {
        **base,
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(24),
        "PUBLIC_BASE_URL": "https://bench.invalid",
        "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
        "REDIS_URL": plan.redis_url,
        "UPSTREAM_BASE_URL": f"http://127.0.0.1:{fake_port}",
        "UPSTREAM_API_KEY": upstream_key,
        "LOG_LEVEL": "warning",
    }


def create_key(plan: Plan, env: dict[str, str]) -> str:
    flask = [str(VENV_BIN / "flask"), "--app", "wsgi"]
    limits = ["--tokens", str(plan.key_tokens), "--rpm", str(plan.key_rpm), "--name", "bench"]
    for cmd in (flask + ["db", "upgrade"], flask + ["keys", "create", *limits]):
        done = subprocess.run(cmd, cwd=plan.app_dir, env=env, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BenchError(f"{shlex.join(cmd[1:])} failed: {done.stderr.strip()[-1500:]}")
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Stack:
    plan: Plan
    fake: Server
    gateway: Server
    fake_port: int
    gateway_port: int
    upstream_key: str
    key: str
    bodies: dict[str, Path]
    redis: redis.Redis
    workers: list[int] = field(default_factory=list)
    redis_per_request: dict[str, dict[str, float]] = field(default_factory=dict)
    redis_scripted_per_request: dict[str, float] = field(default_factory=dict)
    redis_pid: int | None = None  # redis-server, when it runs on this machine, to tell its CPU from others'

    def target(self, name: str) -> tuple[str, str, str]:
        """(url, key, path) for "direct" or "gateway"."""
        if name == "direct":
            return f"http://127.0.0.1:{self.fake_port}/chat/completions", self.upstream_key, "/chat/completions"
        return f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions", self.key, "/v1/chat/completions"

    def check_workers(self) -> None:
        self.gateway.check_alive()
        if procstat.children_of(self.gateway.pid) != self.workers:
            raise BenchError("a gateway worker restarted during the run; see the gunicorn log")


def wait_gateway_ready(stack: Stack) -> None:
    plan, port = stack.plan, stack.gateway_port

    def ready() -> bool:
        stack.gateway.check_alive()
        models_ok = status_of(port, "GET", "/v1/models", stack.key) == 200
        return models_ok and len(procstat.children_of(stack.gateway.pid)) == plan.workers

    wait_for(ready, "the gateway", 60)
    stack.workers = procstat.children_of(stack.gateway.pid)


def flush_redis(url: str) -> redis.Redis:
    if urlsplit(url).hostname not in LOOPBACK:
        raise BenchError("the bench talks to 127.0.0.1 only; give --redis-url a loopback address")
    client = redis.Redis.from_url(url)
    if client.connection_pool.connection_kwargs.get("db", 0) == 0:
        raise BenchError("refusing to flush Redis database 0; give --redis-url a database of its own")
    client.ping()
    client.flushdb()
    return client


def _local_redis_pid(client: redis.Redis) -> int | None:
    pid = int(client.info("server").get("process_id", 0))
    return pid if pid and Path(f"/proc/{pid}/stat").exists() else None


def start_fake(plan: Plan, tmp: Path, stack_exit: ExitStack, port: int, api_key: str) -> Server:
    cmd = [*pinned(plan.load_cpus), sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(port)]
    cmd += ["--api-key", api_key]
    cmd += ["--tokens", str(plan.stream_tokens), "--event-gap-ms", str(plan.event_gap_ms)]
    fake = stack_exit.enter_context(Server("fake upstream", cmd, dict(os.environ), tmp / "fake.log"))
    wait_for(lambda: status_of(port, "GET", "/", "x") == 404, "the fake upstream", 20)
    return fake


def start_gateway(
    plan: Plan, tmp: Path, stack_exit: ExitStack, port: int, env: dict[str, str], name: str = "gateway"
) -> Server:
    cmd = [*pinned(plan.target_cpus), str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-k", "gevent"]
    cmd += ["-w", str(plan.workers)]
    cmd += ["-b", f"127.0.0.1:{port}", "wsgi:app"]
    return stack_exit.enter_context(Server(name, cmd, env, tmp / f"{name}.log", plan.app_dir))


def start_stack(plan: Plan, tmp: Path, stack_exit: ExitStack) -> Stack:
    """Fake upstream, fresh database and key, gateway; all stopped (and Redis flushed) by `stack_exit`."""
    upstream_key = "sk-bench-upstream-" + secrets.token_hex(8)
    fake_port, gateway_port = free_port(), free_port()
    client = flush_redis(plan.redis_url)
    stack_exit.callback(client.flushdb)
    fake = start_fake(plan, tmp, stack_exit, fake_port, upstream_key)
    env = gateway_env(plan, tmp, fake_port, upstream_key)
    key = create_key(plan, env)
    gateway = start_gateway(plan, tmp, stack_exit, gateway_port, env)
    bodies = {kind: tmp / f"{kind}.json" for kind in KINDS}
    for kind, path in bodies.items():
        path.write_bytes(chat_body(kind, plan.prompt_chars))
    stack = Stack(plan, fake, gateway, fake_port, gateway_port, upstream_key, key, bodies, client)
    stack.redis_pid = _local_redis_pid(client)
    wait_gateway_ready(stack)
    return stack
