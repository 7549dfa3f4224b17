"""What Flask, gevent and gunicorn cost per request before any gateway logic: the floor under
every figure of `make bench-compare`.

    .venv/bin/python bench/stack_floor.py [--duration 10] [--warmup 3]

Runs bench/floor_app.py under gunicorn (one gevent worker, pinned to core 0; the fake upstream and
wrk on core 1) in each of its modes, then RelayGate itself (bench/stack.py's gateway: Redis mode,
quota and rate limit on), with the same wrk load (non-stream, c=50, the relay bench's body) after
an unmeasured warm-up. Prints req/s and the worker's CPU per request for each. Uses Redis database
8 (flushed). Not part of `make test`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import procstat
from loadgen import BenchError, run_wrk, status_of
from plan import BENCH, ROOT, VENV_BIN, chat_body, parse_args
from report import NON_STREAM
from stack import Server, flush_redis, free_port, start_stack, wait_for

TARGET_CPUS, LOAD_CPUS = "0", "1"
MODES = ("flask", "upstream", "upstream+redis2", "upstream+redis3")
REDIS_URL = "redis://127.0.0.1:6379/8"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    flush_redis(REDIS_URL)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stop:
        tmp = Path(tmp_name)
        body = tmp / "body.json"
        body.write_bytes(chat_body(NON_STREAM, 2000))
        plan = parse_args(["--redis-url", REDIS_URL, "--workers", "1", "--stream-tokens", "20"])
        plan = dataclasses.replace(plan, target_cpus=TARGET_CPUS, load_cpus=LOAD_CPUS)
        stack = start_stack(plan, tmp, stop)  # the fake upstream (core 1) and RelayGate (core 0)
        upstream = f"http://127.0.0.1:{stack.fake_port}/chat/completions"
        for mode in MODES:
            port = free_port()
            env = {
                **os.environ,
                "FLOOR_MODE": mode,
                "FLOOR_UPSTREAM": upstream,
                "FLOOR_UPSTREAM_KEY": stack.upstream_key,
                "FLOOR_REDIS_URL": REDIS_URL,
                "PYTHONPATH": f"{ROOT}:{BENCH}",
            }
            cmd = ["taskset", "-c", TARGET_CPUS, str(VENV_BIN / "gunicorn"), "-k", "gevent", "-w", "1"]
            cmd += ["--worker-connections", "1000", "-b", f"127.0.0.1:{port}", "floor_app:app"]
            with Server(f"floor {mode}", cmd, env, tmp / f"floor-{mode}.log", cwd=BENCH) as server:
                ask = (port, "POST", "/v1/chat/completions", "x", body.read_bytes())
                wait_for(lambda ask=ask: status_of(*ask) == 200, mode, 20)
                rows.append((mode, measure(port, body, "x", server.pid, args)))
        rows.append(("RelayGate", measure(stack.gateway_port, body, stack.key, stack.gateway.pid, args)))
    print("\n| stack, one gevent worker on one core, non-stream c=50 | req/s | worker CPU ms per request |")
    print("|---|---:|---:|")
    for name, (rate, cpu) in rows:
        print(f"| {name} | {rate:,.0f} | {cpu:.3f} |")


def measure(port: int, body: Path, key: str, root_pid: int, args: argparse.Namespace) -> tuple[float, float]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    run_wrk(url, body, key, 50, args.warmup, LOAD_CPUS)
    pids = procstat.tree_of(root_pid)
    before = procstat.total_cpu_seconds(pids)
    result = run_wrk(url, body, key, 50, args.duration, LOAD_CPUS)
    used = procstat.total_cpu_seconds(pids) - before
    if result.errors:
        raise BenchError(f"{result.errors} failed requests on port {port}")
    return result.requests / result.seconds, used / max(result.requests, 1) * 1000


if __name__ == "__main__":
    sys.exit(main())
