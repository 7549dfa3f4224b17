"""Usage records that reached neither Redis nor SQL, kept on this machine's disk until SQL takes them.

Each process appends to its own file, `<host>-<pid>.jsonl` in USAGE_SPOOL_DIR: one JSON line per
record, written with one write() under an exclusive flock and fsynced before keep() returns.

replay() moves every file of the directory into SQL, those of processes that died included. It
claims a live file by renaming it to `*.claimed` while it holds the file's lock (an appender that
opened the old name sees the rename and starts a new file), writes the records with
ledger.write_batch (idempotent by request id, so a record already in SQL is skipped), and deletes
the file only after that committed, still holding the lock: two replays never take the same file,
and one that fails (SQL still down) or dies leaves the file to the next. A line torn by a crash
mid-write, and anything SQL refuses for good, goes to `<name>.rejected` for a human, with a warning.

Locks are only ever tried, never waited on in flock(): in a gevent worker a blocking flock() would
stop every greenlet of the process, the one holding the lock included.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError

from app.billing import ledger
from app.extensions import db

log = logging.getLogger(__name__)

LIVE, CLAIMED, REJECTED = ".jsonl", ".claimed", ".rejected"
_EXTENSION = "usage_spool"
_LOCK_WAIT_SECONDS = 5.0  # an append waits this long at most for another append or a claim
_LOCK_POLL_SECONDS = 0.005
_WHOLE_NUMBERS = ("api_key_id", "billed_tokens")


# -- pure: lines and records -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BadLine:
    number: int  # 1-based
    raw: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Decoded:
    records: tuple[dict[str, Any], ...]
    bad: tuple[BadLine, ...]


@dataclass(frozen=True, slots=True)
class Replayed:
    files: tuple[str, ...]  # the spool files written to SQL and deleted (their names when claimed)
    written: int  # records new to SQL (the others were there already)
    complete: bool  # False: SQL refused; what is left stays for the next replay


def file_name(host: str, pid: int) -> str:
    """The spool file of one process; the host name keeps machines apart on a shared volume."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', host) or 'host'}-{pid}{LIVE}"


def encode(record: Mapping[str, Any]) -> bytes:
    # ensure_ascii: the line holds no raw newline or U+2028, whatever the strings contain.
    return json.dumps(dict(record), separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def problem_of(value: Any) -> str | None:
    """Why a decoded line cannot be written to the ledger, or None."""
    if not isinstance(value, dict):
        return "not a JSON object"
    missing = [name for name in ledger.REQUIRED_FIELDS if name not in value]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(value["request_id"], str) or not value["request_id"]:
        return "no request id"
    for name in _WHOLE_NUMBERS:
        if not isinstance(value[name], int) or isinstance(value[name], bool):
            return f"{name} is not a whole number"
    return None


def decode(data: bytes) -> Decoded:
    """The records of a spool file. A last line without its newline was torn by a crash mid-write."""
    *lines, tail = data.split(b"\n")
    records, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            bad.append(BadLine(number, line, "not JSON"))
            continue
        problem = problem_of(value)
        if problem:
            bad.append(BadLine(number, line, problem))
        else:
            records.append(value)
    if tail.strip():
        bad.append(BadLine(len(lines) + 1, tail, "torn: the line has no end (a crash while writing it)"))
    return Decoded(tuple(records), tuple(bad))


# -- this process's side: keep, and replay what it kept -------------------------------------------
class Spool:
    """What this process appended and whether a replay has taken it since; app.extensions["usage_spool"].
    Only memory is read to answer has_unreplayed, so asking costs nothing on the hot path."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.appended = 0
        self._replayed = 0
        self._replaying = False
        self._lock = threading.Lock()

    @property
    def has_unreplayed(self) -> bool:
        return self.appended > self._replayed

    def append(self, record: Mapping[str, Any]) -> Path:
        path = self.directory / file_name(socket.gethostname(), os.getpid())
        append_line(path, encode(record))
        with self._lock:
            self.appended += 1
        return path

    def start_replay(self) -> bool:
        with self._lock:
            if self._replaying or not self.has_unreplayed:
                return False
            self._replaying = True
            return True

    def end_replay(self, covered: int | None) -> None:
        """`covered`: the appends the replay took (its start's count), or None if it failed."""
        with self._lock:
            self._replaying = False
            if covered is not None:
                self._replayed = max(self._replayed, covered)


def keep(record: Mapping[str, Any]) -> bool:
    """Append a usage record to this process's spool file, durably. Never raises: False (and the
    record in the log, the last place left) when the disk refuses it too."""
    try:
        path = _spool(current_app._get_current_object()).append(record)  # type: ignore[attr-defined]
    except OSError:
        log.exception("usage record %s could not be spooled: %s", record.get("request_id"), encode(record).decode())
        return False
    log.warning("usage record %s kept in %s until SQL answers", record.get("request_id"), path)
    return True


def replay_soon() -> None:
    """If this process spooled records no replay has taken yet, replay the spool in the background
    (a greenlet under gevent): the caller, a stream about to send its last frame, never waits on SQL."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    spool = app.extensions.get(_EXTENSION)
    if spool is None or not spool.start_replay():
        return
    threading.Thread(target=_replay_in_background, args=(app, spool), name="usage-spool", daemon=True).start()


def _replay_in_background(app: Flask, spool: Spool) -> None:
    covered, result = spool.appended, None
    try:
        with app.app_context():
            result = replay(spool.directory)
    except Exception:  # noqa: BLE001 - a thread of its own: nobody above to tell
        log.exception("replaying the usage spool in %s failed", spool.directory)
    finally:
        spool.end_replay(covered if result is not None and result.complete else None)


def replay_spool() -> Replayed:
    """Replay the spool of this machine (USAGE_SPOOL_DIR); for the periodic usage job."""
    return replay(Path(current_app.config["USAGE_SPOOL_DIR"]))


def _spool(app: Flask) -> Spool:
    spool = app.extensions.get(_EXTENSION)
    if spool is None:
        spool = app.extensions.setdefault(_EXTENSION, Spool(Path(app.config["USAGE_SPOOL_DIR"])))
    return spool


# -- the files -----------------------------------------------------------------------------------
def replay(directory: Path) -> Replayed:
    """Write every spool file in `directory` to SQL and delete it once committed. Needs an app context.
    A file another process holds (appending, or replaying it) is left to it."""
    files: list[str] = []
    written = 0
    for path in _spool_files(directory):
        claim = _claim(path)
        if claim is None:
            continue
        fd, claimed = claim
        try:
            written += _replay_file(fd, claimed)
        except SQLAlchemyError as exc:
            db.session.rollback()
            log.warning("usage spool %s stays until SQL answers: %s", claimed, exc.__class__.__name__)
            return Replayed(tuple(files), written, complete=False)
        finally:
            os.close(fd)  # releases the lock, after the file was deleted
        files.append(claimed.name)
    return Replayed(tuple(files), written, complete=True)


def _spool_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (LIVE, CLAIMED))


def _claim(path: Path) -> tuple[int, Path] | None:
    """Lock a spool file and, if it is a live one, rename it so that no one appends to it any more."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        if not (_try_lock(fd) and _is_at(fd, path)):
            os.close(fd)
            return None
        if path.suffix == LIVE:
            claimed = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:12]}{CLAIMED}")
            os.rename(path, claimed)
            path = claimed
    except BaseException:
        os.close(fd)
        raise
    return fd, path


def _replay_file(fd: int, path: Path) -> int:
    decoded = decode(b"".join(_read(fd)))
    rejected = [line.raw for line in decoded.bad]
    for line in decoded.bad:
        log.warning("usage spool %s line %d skipped (%s); kept in %s", path.name, line.number, line.reason, REJECTED)
    written = 0
    if decoded.records:
        result = ledger.write_batch(decoded.records)
        written = result.written
        for request_id in result.rejected:
            log.error("usage record %s cannot be written to SQL; kept in %s", request_id, REJECTED)
        refused = set(result.rejected)
        rejected += [encode(r).rstrip(b"\n") for r in decoded.records if r["request_id"] in refused]
    if rejected:
        append_line(path.with_name(_origin(path) + REJECTED), b"\n".join(rejected) + b"\n")
    os.unlink(path)
    return written


def _origin(claimed: Path) -> str:
    """The name a claimed file had while it was live, without its suffix."""
    return claimed.stem.rpartition(".")[0] or claimed.stem


def _read(fd: int) -> Iterator[bytes]:
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        offset += len(chunk)
        yield chunk


def append_line(path: Path, data: bytes) -> None:
    """Append `data` (whole lines) with one write() under the file's lock, and fsync it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn line before ours must not swallow it
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
        if size == 0:
            _fsync_directory(path.parent)  # the new file's name must survive a crash too
    finally:
        os.close(fd)


def _open_locked(path: Path) -> int:
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if _try_lock(fd) and _is_at(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # locked by someone else, or renamed by a replay meanwhile: open the name again
        if time.monotonic() > deadline:
            raise OSError(f"{path} stayed locked for {_LOCK_WAIT_SECONDS} s")
        time.sleep(_LOCK_POLL_SECONDS)  # yields to other greenlets under gevent


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _is_at(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (a replay may have renamed or deleted it)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
