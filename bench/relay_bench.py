"""Relay bench: the same load straight to a fake DeepSeek and through the gateway (gunicorn, gevent).

    .venv/bin/python bench/relay_bench.py [--quick] [--duration S] [--concurrency 1,10,50] [--profile]

Starts a lean fake upstream and the gateway on 127.0.0.1 with a fresh SQLite file and Redis database
15 (flushed), creates a key with a huge token quota and rpm (so quota and rate limit run but refuse
nothing), checks the answers, then drives both with wrk, non-stream and stream, at each concurrency.
Prints a markdown table with the targets of issue 2 and writes it to bench/results/latest.md.
Everything it started is stopped when it ends, and the whole run is bounded by an alarm.
"""

from __future__ import annotations

import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import procstat
from loadgen import BenchError, ProbeResult
from measure import run_loads, run_probes, sanity_checks
from plan import MODEL, Plan, parse_args
from profiling import run_profiles
from report import NON_STREAM, LoadRow, render, targets
from stack import Stack, start_stack


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        return "?"


def _redis_line(stack: Stack) -> str:
    parts = []
    for kind, commands in stack.redis_per_request.items():
        total = sum(commands.values())
        detail = ", ".join(f"{name} {count:.2f}" for name, count in commands.items() if count >= 0.05)
        scripted = stack.redis_scripted_per_request.get(kind, 0.0)
        parts.append(f"{kind} {total:.2f} sent ({detail or 'none'}) + {scripted:.2f} run inside Lua scripts")
    return "; ".join(parts) or "not measured"


def source_line(app_dir: Path) -> str:
    """Which code ran: the commit, and whether the working tree had uncommitted changes (read-only git calls)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(app_dir), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"{app_dir} (not a git checkout)"
    changed = len(git("status", "--porcelain", "--untracked-files=no").splitlines())
    return f"{app_dir} at {commit}" + (f" with {changed} uncommitted changed files" if changed else " (clean)")


def header_lines(stack: Stack, argv: list[str]) -> list[str]:
    plan = stack.plan
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Run {stamp}: `.venv/bin/python bench/relay_bench.py {shlex.join(argv)}`",
        f"Machine: {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, wrk (1 thread).",
        f"Mode: quota and rate limit ON: the bench key has {plan.key_tokens:,} tokens and {plan.key_rpm:,} rpm "
        "(huge, so nothing is refused, but the checks run on every request).",
        f"Redis commands per gateway request (MONITOR over 50 sequential requests): {_redis_line(stack)}.",
        f"Gateway source: {source_line(plan.app_dir)}.",
        f"Gateway: `gunicorn -c gunicorn.conf.py -k gevent -w {plan.workers}`, APP_ENV=production, "
        f"REDIS_URL={plan.redis_url} (no Celery worker runs: queued messages are dropped after each run and the "
        "database is flushed at the end), SQLite in a temporary file.",
        f"Upstream: bench/fake_upstream.py (gevent StreamServer, canned bytes, keep-alive); stream = role chunk, "
        f"{plan.stream_tokens} content chunks, finish chunk, usage chunk, [DONE], chunked, one write per event, "
        f"{plan.event_gap_ms:g} ms apart.",
        f"Request: {stack.bodies[NON_STREAM].stat().st_size if NON_STREAM in stack.bodies else '?'} bytes "
        f"(system prompt {plan.prompt_chars} chars), model {MODEL}. Each run: {plan.warmup} s warm-up, "
        f"{plan.duration} s measured.",
    ]


NOTES = [
    "Gateway CPU is utime+stime of the gunicorn workers (/proc/PID/stat) over the measured run, divided by "
    "the requests wrk completed; the fake's CPU is measured the same way.",
    "wrk is closed-loop: at c=10 and c=50 the direct runs go much faster than the gateway, so 'added' "
    "latency there is mostly queueing at the gateway's throughput limit; the per-request overhead is the c=1 row.",
    "'cores busy' is the whole machine (/proc/stat); '(others)' is the cores taken during the run by processes "
    "outside the bench (not the gateway, the fake, redis-server or wrk), e.g. a test suite running beside it.",
]


def load_notes(rows: list[LoadRow], idle_load: float) -> list[str]:
    worst = max((max(r.other_direct, r.other_gateway) for r in rows), default=0.0)
    notes = [f"Machine load before the runs (1 s, bench idle): {idle_load:.2f} cores."]
    if worst > 0.15:
        notes.append(
            f"WARNING: other processes took up to {worst:.2f} of the 2 cores during the runs; requests/s and "
            "latency are pessimistic (CPU per request much less so). Re-run on a quiet machine for the record."
        )
    return notes


def idle_load() -> float:
    """Cores busy over one second before the load starts: what else is running on the machine."""
    before = procstat.machine_times()
    time.sleep(1)
    return procstat.busy_seconds(before, procstat.machine_times())


def write_report(
    stack: Stack, rows: list[LoadRow], probes: dict[tuple[str, str], ProbeResult], notes: list[str]
) -> str:
    text = render(header_lines(stack, sys.argv[1:]), rows, probes, NOTES + notes)
    stack.plan.out.parent.mkdir(parents=True, exist_ok=True)
    stack.plan.out.write_text(text)
    return text


def run(plan: Plan) -> int:
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp, ExitStack() as stack_exit:
        print(f"Relay bench: up to {plan.budget_seconds()} s; gateway and fake upstream on 127.0.0.1", flush=True)
        stack = start_stack(plan, Path(tmp), stack_exit)
        sanity_checks(stack)
        probes = run_probes(stack)
        print("Answers checked; Redis commands per gateway request:", _redis_line(stack), flush=True)
        idle = idle_load()
        print(f"Machine load before the runs: {idle:.2f} cores", flush=True)
        rows = run_loads(stack)
        notes = load_notes(rows, idle)
        notes += run_profiles(stack, plan.out.parent) if plan.profile else []
        print("\n" + write_report(stack, rows, probes, notes))
        print(f"Written to {plan.out}")
        missed = [t for t in targets(rows) if t.verdict == "MISS"]
        return 1 if plan.check and missed else 0


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise BenchError("the bench ran past its time budget and was stopped")


def main() -> None:
    plan = parse_args()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up when stopped
    signal.alarm(plan.budget_seconds())
    try:
        sys.exit(run(plan))
    except BenchError as exc:
        print(f"relay bench failed: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
