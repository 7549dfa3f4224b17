"""Load for the bench: wrk for throughput and latency, a sequential Python client for time to first byte."""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"


class BenchError(RuntimeError):
    """The bench cannot give trustworthy numbers (a server failed, answers were wrong, a tool is missing)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect/read/write/timeouts plus answers outside 2xx/3xx
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_seconds: float  # wrk's own CPU, to show what the load generator took from the 2 cores

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pinned(cpus: str) -> list[str]:
    """A command prefix that keeps a process (and its children) on the cores in `cpus`, e.g. "0" or "0,1"."""
    return ["taskset", "-c", cpus] if cpus else []


def run_wrk(url: str, body_file: Path, key: str, concurrency: int, seconds: int, cpus: str = "") -> WrkResult:
    """One wrk run on one thread (wrk is event-driven; one thread keeps it off the gateway's cores)."""
    cmd = [*pinned(cpus), "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s"]
    cmd += ["-s", str(WRK_SCRIPT), url]
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_KEY": key}
    cpu_before = _children_cpu()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except FileNotFoundError:
        raise BenchError("wrk is not installed: apt-get install -y wrk") from None
    match = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    data = json.loads(match.group(1))
    errors = sum(data[name] for name in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50"] / 1000,
        p90_ms=data["p90"] / 1000,
        p99_ms=data["p99"] / 1000,
        max_ms=data["max"] / 1000,
        cpu_seconds=_children_cpu() - cpu_before,
    )


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Sequential requests on one keep-alive connection; times in milliseconds, medians and 99th percentiles."""

    requests: int
    headers_p50: float
    first_event_p50: float
    total_p50: float
    total_p99: float


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def _read_answer(resp: http.client.HTTPResponse, stream: bool) -> tuple[float, bytes]:
    """Reads the whole body; returns the time the first SSE event (or first body byte) arrived and the body."""
    first_at = 0.0
    parts: list[bytes] = []
    while True:
        data = resp.read1(65536)
        if not data:
            break
        parts.append(data)
        if not first_at and (not stream or b"data:" in b"".join(parts)):
            first_at = time.perf_counter()
    resp.read()  # marks the response finished so the connection can carry the next request
    return first_at, b"".join(parts)


def check_answer(status: int, body: bytes, stream: bool, model: str) -> None:
    """Raises BenchError unless the answer is a complete, successful chat completion for `model`."""
    if status != 200:
        raise BenchError(f"expected 200, got {status}: {body[:300]!r}")
    if stream:
        if not body.endswith(b"data: [DONE]\n\n") or b'"choices":[]' not in body:
            raise BenchError(f"stream did not end with the usage chunk and [DONE]: {body[-300:]!r}")
        if f'"model":"{model}"'.encode() not in body:
            raise BenchError(f"stream chunks do not carry the model id {model}")
        return
    answer = json.loads(body)
    if answer.get("model") != model or not answer.get("usage") or not answer.get("choices"):
        raise BenchError(f"unexpected answer: {body[:300]!r}")


def probe(
    port: int,
    path: str,
    body: bytes,
    key: str,
    count: int,
    *,
    stream: bool,
    model: str,
    check: Callable[[int, bytes, bool, str], None] = check_answer,
) -> ProbeResult:
    """`count` requests one after another; every answer is checked (by `check`), so a broken relay
    stops the bench."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    heads, firsts, totals = [], [], []
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            heads.append(time.perf_counter() - started)
            first_at, answer = _read_answer(resp, stream)
            totals.append(time.perf_counter() - started)
            firsts.append(first_at - started)
            check(resp.status, answer, stream, model)
    finally:
        conn.close()
    ms = 1000
    return ProbeResult(
        requests=count,
        headers_p50=statistics.median(heads) * ms,
        first_event_p50=statistics.median(firsts) * ms,
        total_p50=statistics.median(totals) * ms,
        total_p99=_percentile(totals, 99) * ms,
    )


def status_of(port: int, method: str, path: str, key: str, body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()
