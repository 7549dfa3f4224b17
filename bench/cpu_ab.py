"""Gateway CPU per request, in process, for A/B comparisons of source trees.

wrk against gunicorn measures everything at once, and on a machine doing other work its req/s
moves by 20% from run to run. This tool measures the one figure a code change moves: the CPU time
the gateway's own process spends per request (time.process_time, so other processes do not count).
Each variant runs in a fresh child process with gevent's monkey patching (as under gunicorn's
gevent worker), the real Redis and the bench's fake upstream; the child calls the WSGI app directly
with a prepared environ (gunicorn's own parsing is not in the figure), `--concurrency` greenlets at
a time, warms up, then times `--requests` requests of each kind. Variants are interleaved round by
round and the median is reported, so that a slow minute on the machine hits both sides alike.

    .venv/bin/python bench/cpu_ab.py                                  # this tree alone
    git archive HEAD~1 | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    .venv/bin/python bench/cpu_ab.py --app-dir /tmp/base --app-dir .  # before / after

Uses Redis database 8 (flushed by each child; `--redis-url` changes it) and SQLite in a temporary
directory. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

KINDS = ("non-stream", "stream")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app-dir", action="append", type=Path, help="a source tree to measure (repeatable)")
    p.add_argument("--rounds", type=int, default=3, help="children per variant, interleaved")
    p.add_argument("--requests", type=int, default=3000, help="timed requests per kind per child")
    p.add_argument("--warmup", type=int, default=300, help="untimed requests per kind per child first")
    p.add_argument("--concurrency", type=int, default=50, help="greenlets sending at once")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fake-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upstream-key", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- the parent: the fake upstream, then children round by round ---------------------------------


def main() -> None:
    args = parse()
    if args.child:
        child(args)
        return
    from loadgen import status_of
    from stack import Server, flush_redis, free_port, wait_for

    flush_redis(args.redis_url)  # refuses database 0 and anything not on loopback
    variants = [d.resolve() for d in (args.app_dir or [BENCH.parent])]
    kinds = [k for k in args.kinds.split(",") if k]
    upstream_key = "sk-bench-upstream-" + secrets.token_hex(8)
    port = free_port()
    results: dict[tuple[Path, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stop:
        cmd = [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(port), "--api-key", upstream_key]
        stop.enter_context(Server("fake upstream", cmd, dict(os.environ), Path(tmp) / "fake.log"))
        wait_for(lambda: status_of(port, "GET", "/", "x") == 404, "the fake upstream", 20)
        for round_no in range(args.rounds):
            for variant in variants:
                for row in run_child(args, variant, port, upstream_key):
                    results.setdefault((variant, row["kind"]), []).append(row)
                    print(f"round {round_no + 1} {variant} {row['kind']}: {row['cpu_us']:.0f} us/req", flush=True)
    print(report(results, variants, kinds, args))


def run_child(args: argparse.Namespace, app_dir: Path, port: int, upstream_key: str) -> list[dict[str, Any]]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--fake-port", str(port)]
    cmd += ["--upstream-key", upstream_key, "--requests", str(args.requests), "--warmup", str(args.warmup)]
    cmd += ["--concurrency", str(args.concurrency), "--kinds", args.kinds, "--redis-url", args.redis_url]
    cmd += ["--app-dir", str(app_dir)]
    done = subprocess.run(cmd, cwd=app_dir, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"cpu_ab: the child for {app_dir} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def report(results: dict[tuple[Path, str], list[dict[str, float]]], variants: list[Path], kinds: list[str], args):
    head = f"requests {args.requests} per kind per child, concurrency {args.concurrency}, {args.rounds} rounds"
    columns = "| variant | kind | CPU us/req (median) | each round | req/s (median) |"
    lines = [head, "", columns, "|---|---|---:|---|---:|"]
    for kind in kinds:
        for variant in variants:
            rows = results[(variant, kind)]
            cpu = [r["cpu_us"] for r in rows]
            rate = statistics.median(r["rps"] for r in rows)
            each = " ".join(f"{c:.0f}" for c in cpu)
            lines.append(f"| {variant} | {kind} | {statistics.median(cpu):.0f} | {each} | {rate:.0f} |")
    if len(variants) > 1:
        lines.append("")
        for kind in kinds:
            base = statistics.median(r["cpu_us"] for r in results[(variants[0], kind)])
            for variant in variants[1:]:
                now = statistics.median(r["cpu_us"] for r in results[(variant, kind)])
                lines.append(f"{kind}: {variant.name or variant} uses {now / base:.2f}x the CPU of {variants[0]}")
    return "\n".join(lines)


# -- the child: one source tree, measured in its own process --------------------------------------


def child(args: argparse.Namespace) -> None:
    from gevent import monkey

    monkey.patch_all()
    import socket

    import gevent.pool
    import redis
    from plan import parse_args
    from stack import create_key, gateway_env

    app_dir: Path = args.app_dir[0]
    plan = parse_args(
        ["--redis-url", args.redis_url, "--app-dir", str(app_dir), "--key-tokens", str(10**13), "--key-rpm", str(10**8)]
    )
    env = gateway_env(plan, Path(tempfile.mkdtemp(prefix="cpu-ab-")), args.fake_port, args.upstream_key)
    os.environ.update(env)
    redis.Redis.from_url(args.redis_url).flushdb()
    key = create_key(plan, env)  # a fresh database and a key with room for every request
    sys.path.insert(0, str(app_dir))
    os.chdir(app_dir)
    from plan import chat_body

    import wsgi

    app = wsgi.app
    held, _peer = socket.socketpair()  # the "client connection" the relay watches for a hang-up
    pool = gevent.pool.Pool(args.concurrency)
    for kind in [k for k in args.kinds.split(",") if k]:
        body = chat_body(kind, 2000)
        environ = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/v1/chat/completions",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Bearer {key}",
            "HTTP_HOST": "127.0.0.1:8000",
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "gunicorn.socket": held,
        }
        errors = [0]

        def one(environ: dict[str, Any] = environ, body: bytes = body, errors: list[int] = errors) -> None:
            import io

            status: list[str] = []
            env = dict(environ, **{"wsgi.input": io.BytesIO(body)})
            out = app(env, lambda s, h, exc=None: status.append(s))
            try:
                for _ in out:
                    pass
            finally:
                getattr(out, "close", lambda: None)()
            if not status or not status[0].startswith("200"):
                errors[0] += 1

        for _ in range(args.warmup):
            pool.spawn(one)
        pool.join()
        errors[0] = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.requests):
            pool.spawn(one)
        pool.join()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if errors[0]:
            raise SystemExit(f"{errors[0]} of {args.requests} {kind} requests failed")
        row = {"kind": kind, "cpu_us": cpu / args.requests * 1e6, "rps": args.requests / wall}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
