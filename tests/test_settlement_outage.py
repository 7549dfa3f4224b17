"""A stream whose answer is delivered while Redis is frozen or dead and the database refuses writes
still ends on time: its usage waits in the local spool and lands in SQL exactly once, with the key
charged once and not left holding anything, when both are back. Real gunicorn gevent workers, a
Redis of the test's own (never the shared one) and the test's own database, locked from here."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests

from app import create_app
from app.billing import quota, spool
from app.extensions import db
from app.models import ApiKey, UsageRecord
from app.relay.sse import StreamDecoder
from config import TestingConfig
from tests.api.helpers import chat_body, content_of, json_events, post_stream
from tests.billing.test_spool import locked_database
from tests.conftest import CeleryWorker, app_overrides, time_limit, wait_for_port, wait_until
from tests.fake_deepseek import WORDS, prompt_tokens_of
from tests.test_outages import OwnRedis

TIME_LIMIT = 150  # seconds for one whole test, outage and recovery included
TOKENS, DELAY = 12, 0.25  # a three-second answer, so the outage begins while it streams
DEPENDENCY_TIMEOUT = 1.0  # the gateway's REDIS_SOCKET_TIMEOUT and DATABASE_STATEMENT_TIMEOUT
SQLITE_BUSY_WAIT = 5.0  # pysqlite's default wait for a lock (DATABASE_STATEMENT_TIMEOUT is PostgreSQL's)
P = "rg"


class PersistentRedis(OwnRedis):
    """OwnRedis with an append-only file, so that one killed mid-request comes back with its holds,
    as a production Redis (appendonly yes) does."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    def start(self) -> PersistentRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)]
        self.proc = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    with time_limit(TIME_LIMIT):
        yield


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PersistentRedis]:
    server = PersistentRedis(tmp_path / "redis").start()
    yield server
    server.stop()


class Outage:
    """Redis frozen (SIGSTOP) or killed, and the database locked, from begin() to end()."""

    def __init__(self, kind: str, redis_server: PersistentRedis, db_url: str) -> None:
        self.kind, self.redis_server, self.db_url = kind, redis_server, db_url
        self._lock = ExitStack()

    def begin(self) -> None:
        db.session.remove()  # nothing of this process may hold the tables the lock wants
        self._lock.enter_context(locked_database(self.db_url))
        if self.kind == "frozen":
            self.redis_server.signal(signal.SIGSTOP)
        else:
            self.redis_server.stop()

    def end(self) -> None:
        self._lock.close()
        if self.kind == "frozen":
            self.redis_server.signal(signal.SIGCONT)
        else:
            self.redis_server.start()  # same port, same append-only file


def stream_through(server_url: str, key: str, body: dict[str, Any], outage: Outage) -> tuple[list[bytes], float]:
    """The stream's events, with the outage begun after the first word; and when [DONE] arrived."""
    decoder, events, done_at = StreamDecoder(), [], 0.0
    with post_stream(server_url, key, body, timeout=30) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(chunk_size=None):
            for data in decoder.feed(chunk):
                events.append(data)
                if len(events) == 2:
                    outage.begin()
                if data == b"[DONE]":
                    done_at = time.monotonic()
    return events, done_at


def spooled(directory: Path) -> list[dict[str, Any]]:
    return [r for path in sorted(directory.glob("*.jsonl")) for r in spool.decode(path.read_bytes()).records]


def usage_rows(key_id: int) -> list[UsageRecord]:
    db.session.rollback()
    return list(db.session.execute(db.select(UsageRecord).filter_by(api_key_id=key_id)).scalars())


def sql_used(key_id: int) -> int:
    db.session.rollback()
    return db.session.get(ApiKey, key_id).tokens_used


def usage_of(usage: dict[str, Any]) -> tuple[int, int]:
    return usage["prompt_tokens"], usage["completion_tokens"]


def live(redis: Any, key_id: int) -> dict[str, int]:
    state = redis.hgetall(quota.acct_key(P, key_id))
    return {name: int(state.get(name.encode(), 0)) for name in ("synced", "pending", "held")}


@pytest.mark.parametrize("kind", ["frozen", "killed"])
def test_a_stream_ends_on_time_while_redis_and_the_database_are_down_and_is_billed_once_when_they_are_back(
    app, db_url, fake_server, fake, make_key, gunicorn_factory, redis_server, tmp_path, kind
):
    spool_dir = tmp_path / "spool"
    env = {
        "TEST_REDIS_URL": redis_server.url,
        "REDIS_SOCKET_TIMEOUT": str(DEPENDENCY_TIMEOUT),
        "REDIS_CONNECT_TIMEOUT": str(DEPENDENCY_TIMEOUT),
        "DATABASE_STATEMENT_TIMEOUT": str(DEPENDENCY_TIMEOUT),
        "USAGE_SPOOL_DIR": str(spool_dir),
    }
    server = gunicorn_factory(workers=1, **env)  # one process: the one that spooled replays
    row, key = make_key(1_000_000)
    key_id = row.id
    body = chat_body(stream=True, stream_options={"include_usage": True}, fake={"tokens": TOKENS, "delay": DELAY})
    outage = Outage(kind, redis_server, db_url)

    # 1. The whole answer and [DONE] arrive within the time the dependencies take to fail.
    try:
        events, done_at = stream_through(server.url, key, body, outage)
        upstream_end = fake.requests[-1].finished_at
        assert events[-1] == b"[DONE]" and upstream_end is not None
        chunks = json_events(events)
        assert content_of(chunks) == "".join(WORDS[i % len(WORDS)] for i in range(TOKENS))
        usage = chunks[-1]["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt_tokens_of(body), TOKENS)
        took = done_at - upstream_end
        database_wait = SQLITE_BUSY_WAIT if db_url.startswith("sqlite") else DEPENDENCY_TIMEOUT
        redis_wait = DEPENDENCY_TIMEOUT if kind == "frozen" else 0.0
        print(f"\n{kind} Redis, locked {db_url.split(':')[0]}: [DONE] {took:.2f} s after the upstream ended")
        assert took < redis_wait + database_wait + 1.5, took

        # 2. The usage is on this machine's disk.
        [kept] = spooled(spool_dir)
        billed = usage["prompt_tokens"] + usage["completion_tokens"]
        assert (kept["api_key_id"], kept["prompt_tokens"], kept["completion_tokens"]) == (key_id, *usage_of(usage))
        assert (kept["billed_tokens"], kept["outcome"]) == (billed, "done")
        saved = b"".join(path.read_bytes() for path in spool_dir.glob("*.jsonl"))
    finally:
        outage.end()
    assert usage_rows(key_id) == []

    # 3. The next request this process settles replays the spool in the background.
    second = chat_body(fake={"tokens": 3})
    response = requests.post(
        f"{server.url}/v1/chat/completions", json=second, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert response.status_code == 200
    [record] = wait_until(lambda: usage_rows(key_id), timeout=15)
    assert (record.request_id, record.prompt_tokens, record.completion_tokens) == (kept["request_id"], *usage_of(usage))
    assert record.billed_tokens == billed and sql_used(key_id) == billed
    wait_until(lambda: not list(spool_dir.iterdir()), timeout=10)

    # 4. Replayed again (as if a replay died before deleting its file), by the beat's reconcile job
    # on a real worker: still one record, the key charged once, and no hold left behind.
    (spool_dir / "otherhost-1.jsonl").write_bytes(saved)
    worker_app = create_app(
        TestingConfig,
        app_overrides(db_url, fake_server.base_url, REDIS_URL=redis_server.url, USAGE_SPOOL_DIR=str(spool_dir)),
    )
    live_redis = worker_app.extensions["redis"]
    if kind == "killed":  # Redis never saw the settlement: the stream's hold came back with it
        held = live_redis.zrange(quota.holds_key(P, key_id), 0, -1)
        assert [m.decode().split("|")[0] for m in held] == [kept["request_id"]]
    worker = CeleryWorker(worker_app, db_url, **env)
    try:
        worker_app.extensions["celery"].send_task("usage.reconcile")
        second_billed = prompt_tokens_of(second) + 3
        settled = {"synced": billed + second_billed, "pending": 0, "held": 0}
        wait_until(lambda: live(live_redis, key_id) == settled and not list(spool_dir.iterdir()), timeout=20)
    finally:
        worker.stop()
    assert sorted((r.request_id == kept["request_id"], r.billed_tokens) for r in usage_rows(key_id)) == [
        (False, second_billed),
        (True, billed),
    ]
    assert sql_used(key_id) == billed + second_billed
    assert live_redis.zcard(quota.holds_key(P, key_id)) == 0
    balance = requests.get(f"{server.url}/api/key", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert balance.json()["tokens_used"] == billed + second_billed
