"""The local usage spool: lines and records (tables), appends that survive a torn line, and replays
into the real SQL ledger that are idempotent, resumable and exclusive between processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.billing import spool
from app.extensions import db
from app.models import ApiKey, UsageRecord
from tests.conftest import wait_until

FIELDS = {
    "model": "deepseek-v4-flash",
    "upstream_model": "deepseek-v4-flash",
    "stream": True,
    "prompt_tokens": 11,
    "completion_tokens": 5,
    "reasoning_tokens": 0,
    "cached_tokens": 0,
    "outcome": "done",
    "status_code": 200,
    "latency_ms": 40,
    "ttft_ms": 9,
    "created_at": 1_800_000_000.25,
}


def record(request_id: str = "r1", key_id: int = 1, billed: int = 16, **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "api_key_id": key_id, "billed_tokens": billed, **FIELDS, **extra}


def without(name: str) -> dict[str, Any]:
    value = record()
    del value[name]
    return value


# -- the pure parts ------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize(
    ("host", "pid", "name"),
    [
        ("web-1", 42, "web-1-42.jsonl"),
        ("web1.example.com", 7, "web1.example.com-7.jsonl"),
        ("odd/host name", 3, "odd_host_name-3.jsonl"),
        ("", 1, "host-1.jsonl"),
    ],
)
def test_each_process_has_its_own_file(host, pid, name):
    assert spool.file_name(host, pid) == name


@pytest.mark.unit
@pytest.mark.parametrize("model", ["plain", "two\nlines", "line\u2028separator", "emoji \U0001f600", 'quote " and \\'])
def test_a_record_is_one_line_whatever_its_strings_hold(model):
    line = spool.encode(record(model=model))
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and "\u2028".encode() not in line
    assert spool.decode(line).records == (record(model=model),)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (record(), None),
        (record(ttft_ms=None), None),
        ({k: v for k, v in record().items() if k != "created_at"}, None),  # the ledger dates it
        # record() is what an older release spooled; this release adds the multipliers billed at
        (record(prompt_multiplier_e4=10_000, cache_hit_multiplier_e4=200, completion_multiplier_e4=10_000), None),
        ([1, 2], "not a JSON object"),
        ("text", "not a JSON object"),
        (without("billed_tokens"), "missing billed_tokens"),
        (
            {"request_id": "r"},
            "missing api_key_id, model, upstream_model, stream, prompt_tokens, completion_tokens, "
            "reasoning_tokens, cached_tokens, billed_tokens, outcome, status_code, latency_ms, ttft_ms",
        ),
        (record(request_id=""), "no request id"),
        (record(request_id=7), "no request id"),
        (record(key_id="3"), "api_key_id is not a whole number"),
        (record(billed=True), "billed_tokens is not a whole number"),
        (record(billed=1.5), "billed_tokens is not a whole number"),
    ],
)
def test_what_a_line_must_hold_to_be_written(value, problem):
    assert spool.problem_of(value) == problem


A, B = spool.encode(record("a")), spool.encode(record("b"))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "kept", "bad"),
    [
        (b"", [], []),
        (A + B, ["a", "b"], []),
        (A + b"\n\n" + B, ["a", "b"], []),
        (A + B[:-20], ["a"], [(2, "torn")]),  # the writer died mid-line
        (A + B[:-1], ["a"], [(2, "torn")]),  # only the newline is missing: still torn
        (A + b'{"request_id": "x", "api' + b"\n" + B, ["a", "b"], [(2, "not JSON")]),  # torn, then appended to
        (A + b"[1]\n" + B, ["a", "b"], [(2, "not a JSON object")]),
        (b"\xff\xfe\n" + A, ["a"], [(1, "not JSON")]),
    ],
)
def test_decoding_keeps_whole_records_and_names_every_bad_line(data, kept, bad):
    decoded = spool.decode(data)
    assert [r["request_id"] for r in decoded.records] == kept
    assert [(line.number, line.reason.split(":")[0]) for line in decoded.bad] == bad


def test_an_append_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "spool" / "web-1.jsonl"
    spool.append_line(path, A)
    with path.open("ab") as torn:
        torn.write(B[:30])  # a process that died mid-write, whose pid came back
    spool.append_line(path, spool.encode(record("c")))
    decoded = spool.decode(path.read_bytes())
    assert [r["request_id"] for r in decoded.records] == ["a", "c"]
    assert [line.number for line in decoded.bad] == [2]


# -- replay into the real ledger -----------------------------------------------------------------
@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def app_extra(db_url: str, spool_dir: Path) -> dict[str, Any]:
    """The spool in a temporary folder, and a database that gives up on a lock within a second."""
    if db_url.startswith("sqlite"):
        return {"USAGE_SPOOL_DIR": str(spool_dir), "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"timeout": 0.5}}}
    return {"USAGE_SPOOL_DIR": str(spool_dir), "DATABASE_STATEMENT_TIMEOUT": 1.0}


@contextmanager
def locked_database(db_url: str) -> Iterator[None]:
    """Hold the usage table (PostgreSQL) or the whole database file (SQLite) in a transaction of this
    process's own, so that the gateway's writes wait and then fail as they would on a busy server."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=10, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
    else:
        conn = psycopg.connect(db_url, options="-c lock_timeout=10000")
        conn.execute("LOCK TABLE usage_records IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def write_spool(directory: Path, name: str, records: list[dict[str, Any]], tail: bytes = b"") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"".join(spool.encode(r) for r in records) + tail)
    return path


def records_of(key_id: int) -> dict[str, int]:
    db.session.rollback()
    rows = db.session.execute(db.select(UsageRecord).filter_by(api_key_id=key_id)).scalars()
    return {row.request_id: row.billed_tokens for row in rows}


def used(key_id: int) -> int:
    db.session.rollback()
    return db.session.get(ApiKey, key_id).tokens_used


def test_a_torn_last_line_is_set_aside_and_the_rest_is_written(app, make_key, spool_dir, caplog):
    key, _ = make_key(10_000)
    torn = spool.encode(record("r4", key.id, 100))[:25]
    write_spool(spool_dir, "web-1.jsonl", [record(f"r{i}", key.id, 10 * i) for i in (1, 2, 3)], tail=torn)
    with caplog.at_level(logging.WARNING, logger="app.billing.spool"):
        result = spool.replay(spool_dir)
    assert (len(result.files), result.written, result.complete) == (1, 3, True)
    assert records_of(key.id) == {"r1": 10, "r2": 20, "r3": 30}
    assert used(key.id) == 60
    assert sorted(p.name for p in spool_dir.iterdir()) == ["web-1.rejected"]
    assert (spool_dir / "web-1.rejected").read_bytes() == torn + b"\n"
    assert "line 4 skipped (torn" in caplog.text


def test_replaying_the_same_records_twice_bills_them_once(app, make_key, spool_dir):
    key, _ = make_key(10_000)
    batch = [record(f"r{i}", key.id, 7) for i in range(5)]
    write_spool(spool_dir, "web-1.jsonl", batch)
    assert spool.replay(spool_dir).written == 5
    # A replay that died after its commit and before deleting the file leaves it for the next.
    write_spool(spool_dir, "web-1.0123456789ab.claimed", batch + [record("r5", key.id, 3)])
    again = spool.replay(spool_dir)
    assert (again.files, again.written, again.complete) == (("web-1.0123456789ab.claimed",), 1, True)
    assert len(records_of(key.id)) == 6 and used(key.id) == 38
    assert list(spool_dir.iterdir()) == []


def test_a_spool_that_sql_refuses_stays_for_the_next_replay(app, db_url, make_key, spool_dir):
    key, _ = make_key(10_000)
    write_spool(spool_dir, "web-1.jsonl", [record("r1", key.id, 9)])
    db.session.remove()
    with locked_database(db_url):
        refused = spool.replay(spool_dir)
    assert (refused.files, refused.written, refused.complete) == ((), 0, False)
    [left] = spool_dir.iterdir()
    assert left.suffix == ".claimed"  # no one appends to it any more; the next replay takes it
    assert spool.replay(spool_dir).written == 1
    assert records_of(key.id) == {"r1": 9} and used(key.id) == 9


def test_a_record_sql_refuses_for_good_is_kept_for_a_human(app, make_key, spool_dir):
    key, _ = make_key(10_000)
    # a NOT NULL column left empty: refused by SQLite and PostgreSQL alike, however often it is tried
    write_spool(spool_dir, "web-1.jsonl", [record("r1", key.id, 4), record("gone", key.id, 5, outcome=None)])
    result = spool.replay(spool_dir)
    assert (result.written, records_of(key.id)) == (1, {"r1": 4})
    [kept] = spool.decode((spool_dir / "web-1.rejected").read_bytes()).records
    assert kept["request_id"] == "gone"


def test_what_a_process_keeps_it_replays_in_the_background_after_its_next_settlement(app, make_key, spool_dir):
    key, _ = make_key(10_000)
    assert spool.keep(record("r1", key.id, 12)) is True
    [path] = spool_dir.iterdir()
    assert path.name == spool.file_name(socket.gethostname(), os.getpid())
    assert spool.decode(path.read_bytes()).records == (record("r1", key.id, 12),)
    kept = app.extensions["usage_spool"]
    assert kept.has_unreplayed
    spool.replay_soon()
    wait_until(lambda: not kept.has_unreplayed and not kept.start_replay(), timeout=10)
    assert records_of(key.id) == {"r1": 12} and list(spool_dir.iterdir()) == []


def _replay_in_child(db_url: str, directory: str, start: Any, results: Any) -> None:
    from app import create_app
    from config import TestingConfig

    app = create_app(TestingConfig, {"SQLALCHEMY_DATABASE_URI": db_url})
    with app.app_context():
        start.wait(30)
        results.put(spool.replay(Path(directory)))


def test_two_processes_replaying_at_once_never_take_the_same_file(app, db_url, make_key, spool_dir):
    keys = [make_key(1_000_000)[0].id for _ in range(2)]
    files = {}
    for f in range(24):
        batch = [record(f"f{f}-r{i}", keys[(f + i) % 2], f + i + 1) for i in range(25)]
        files[write_spool(spool_dir, f"host{f % 3}-{100 + f}.jsonl", batch).stem] = batch
    db.session.remove()
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    children = [
        context.Process(target=_replay_in_child, args=(db_url, str(spool_dir), start, results)) for _ in range(2)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(10)
    assert all(o.complete for o in outcomes)
    taken = [name.split(".")[0] for o in outcomes for name in o.files]
    assert sorted(taken) == sorted(files)  # every file once, by one of the two
    assert sum(o.written for o in outcomes) == 24 * 25
    expected = {k: sum(r["billed_tokens"] for b in files.values() for r in b if r["api_key_id"] == k) for k in keys}
    assert {k: used(k) for k in keys} == expected
    assert sum(len(records_of(k)) for k in keys) == 24 * 25
    assert list(spool_dir.iterdir()) == []
