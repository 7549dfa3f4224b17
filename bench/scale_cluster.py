"""The scale test's cluster on 127.0.0.1: a PostgreSQL database of its own, one Redis database, the lean
fake upstream, N gateway nodes (gunicorn, gevent), two Celery workers and beat.

Only what it created is touched: its Redis database (never 0) is flushed at the start and the end,
and its PostgreSQL database (never `test`, `postgres` or a template) is dropped and created afresh,
and dropped at the end unless kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import re
import secrets
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import redis
from loadgen import BenchError, status_of
from plan import VENV_BIN, Plan
from stack import Server, create_key, flush_redis, free_port, gateway_env, start_fake, start_gateway, wait_for

PROTECTED_DATABASES = {"test", "postgres", "template0", "template1"}


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    plan: Plan  # the bench's settings: redis_url, app_dir, the fake's answer length
    postgres: str  # server URL without a database, e.g. postgresql://postgres@127.0.0.1:5432
    database: str
    nodes: int
    reconcile_seconds: float
    keep_database: bool


class Database:
    """The test's own PostgreSQL database."""

    def __init__(self, server: str, name: str) -> None:
        if name in PROTECTED_DATABASES or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise BenchError(f"refusing database {name!r}: give --database a name of its own")
        self.server, self.name = server.rstrip("/"), name

    def _admin(self, sql: str) -> None:
        with psycopg.connect(f"{self.server}/postgres", autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # the name was checked against a strict pattern above

    def create(self) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        self._admin(f"CREATE DATABASE {self.name}")

    def drop(self) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    @property
    def url(self) -> str:
        """For the app: SQLAlchemy with psycopg 3, the driver requirements.txt installs."""
        return f"{self.server.replace('postgresql://', 'postgresql+psycopg://', 1)}/{self.name}"

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(f"{self.server}/{self.name}", connect_timeout=10) as conn:
            return conn.execute(sql, params).fetchall()


class Cluster:
    def __init__(self, settings: Settings, tmp: Path, stack_exit: ExitStack) -> None:
        self.settings, self.plan, self.tmp, self.exit = settings, settings.plan, tmp, stack_exit
        self.database = Database(settings.postgres, settings.database)
        self.redis: redis.Redis = flush_redis(self.plan.redis_url)
        stack_exit.callback(self.redis.flushdb)
        self.upstream_key = "sk-scale-upstream-" + secrets.token_hex(8)
        self.fake_port = free_port()
        self.ports = [free_port() for _ in range(settings.nodes)]
        self.nodes: dict[int, Server] = {}
        self.services: list[Server] = []  # Celery workers and beat
        self.restarts = 0
        self.env = {
            **gateway_env(self.plan, tmp, self.fake_port, self.upstream_key),
            "DATABASE_URL": self.database.url,
            "USAGE_RECONCILE_SECONDS": str(settings.reconcile_seconds),
            "USAGE_DRAIN_SECONDS": "1",
            "USAGE_SPOOL_DIR": str(tmp / "spool"),
        }

    def start(self) -> None:
        self.database.create()
        if not self.settings.keep_database:
            self.exit.callback(self.database.drop)
        self.fake = start_fake(self.plan, self.tmp, self.exit, self.fake_port, self.upstream_key)
        for port in self.ports:
            self.nodes[port] = start_gateway(self.plan, self.tmp, self.exit, port, self.env, f"node-{port}")
        celery = [str(VENV_BIN / "celery"), "-A", "workers.celery_app"]
        for n in (1, 2):
            cmd = [*celery, "worker", "--pool=solo", "-n", f"scale{n}@%h", "--loglevel=INFO"]
            self.services.append(self._run(f"worker{n}", cmd))
        beat = [*celery, "beat", "-s", str(self.tmp / "beat-schedule"), "--loglevel=INFO"]
        self.services.append(self._run("beat", beat))

    def check_alive(self) -> None:
        for server in [self.fake, *self.nodes.values(), *self.services]:
            server.check_alive()

    def _run(self, name: str, cmd: list[str]) -> Server:
        return self.exit.enter_context(Server(name, cmd, self.env, self.tmp / f"{name}.log", self.plan.app_dir))

    def create_key(self, tokens: int, rpm: int) -> tuple[str, int]:
        """A new key (plaintext, row id); runs `flask db upgrade` first, which is a no-op after the first."""
        key = create_key(dataclasses.replace(self.plan, key_tokens=tokens, key_rpm=rpm), self.env)
        digest = hashlib.sha256(key.encode()).hexdigest()
        return key, self.database.rows("SELECT id FROM api_keys WHERE key_hash = %s", digest)[0][0]

    def wait_ready(self, key: str, ports: list[int] | None = None) -> None:
        for port in ports or self.ports:
            node = self.nodes[port]

            def ready(node: Server = node, port: int = port) -> bool:
                node.check_alive()
                return status_of(port, "GET", "/v1/models", key) == 200

            wait_for(ready, f"gateway node on port {port}", 60)

    def restart(self, port: int, key: str) -> None:
        """Stops a node the way an operator's deploy does (SIGTERM: gunicorn finishes what it has
        in flight) and starts it again on the same port."""
        self.nodes[port].__exit__(None, None, None)
        self.restarts += 1
        name = f"node-{port}-restart{self.restarts}"
        self.nodes[port] = start_gateway(self.plan, self.tmp, self.exit, port, self.env, name)
        self.wait_ready(key, [port])

    def worker_logs(self) -> str:
        return "".join((self.tmp / f"worker{n}.log").read_text(errors="replace") for n in (1, 2))

    def reconcile_runs(self) -> int:
        return len(re.findall(r"Task usage\.reconcile\[[^\]]+\] succeeded", self.worker_logs()))

    def fake_stats(self) -> dict[str, int]:
        conn = http.client.HTTPConnection("127.0.0.1", self.fake_port, timeout=10)
        try:
            conn.request("GET", "/stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()
