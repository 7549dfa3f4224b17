"""Many slow streams held by ONE gevent worker: its memory, and how late each chunk reaches the client.

A SillyTavern shop's load is not short requests but long answers trickling out: hundreds of
streams at once, each a chunk every ~100 ms for half a minute. This starts the bench's fake
upstream with a pause between stream events, RelayGate with one gevent worker, and opens
`--streams` streams at once, first straight to the fake and then through the gateway, from one
gevent client in this process. The fake writes the time it sends each content chunk into its
text (bench/fake_upstream.py does so whenever events are paced); a chunk's delay is its arrival
minus that. The direct run is the baseline (the client and the loopback alone); the difference is
the gateway's. It also samples the worker's RSS (the peak is reported) and its CPU over the run.

    .venv/bin/python bench/slow_streams.py                      # 1,000 streams of 30 s, ~2 minutes
    .venv/bin/python bench/slow_streams.py --streams 200 --seconds 10

Uses Redis database 15 (flushed; `--redis-url` changes it) and SQLite in a temporary directory.
Not part of `make test`.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.socket  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat  # noqa: E402
from plan import STREAM, chat_body, parse_args  # noqa: E402
from stack import start_stack  # noqa: E402

_STAMP = re.compile(rb'"content":"@([0-9.]+)@')


@dataclass
class StreamLog:
    delays: list[float] = field(default_factory=list)  # seconds, one per content chunk
    done: bool = False
    error: str = ""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=30.0, help="length of each stream")
    p.add_argument("--gap-ms", type=float, default=100.0, help="pause between the fake's events")
    p.add_argument("--ramp", type=float, default=2.0, help="seconds over which the streams are opened")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="the bench FLUSHES this database")
    p.add_argument("--app-dir", type=Path, default=Path(__file__).resolve().parent.parent)
    return p.parse_args(argv)


def one_stream(port: int, path: str, key: str, body: bytes, log: StreamLog, deadline: float) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.settimeout(max(5.0, deadline - time.monotonic()))
        sock.sendall(head + body)
        pending = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            now = time.time()
            pending += data
            *events, pending = pending.split(b"\n\n")
            for event in events:
                stamp = _STAMP.search(event)
                if stamp:
                    log.delays.append(now - float(stamp.group(1)))
                if b"[DONE]" in event:
                    log.done = True
        sock.close()
    except OSError as exc:
        log.error = type(exc).__name__


def run(port: int, path: str, key: str, body: bytes, args: argparse.Namespace, worker: int | None) -> dict:
    logs = [StreamLog() for _ in range(args.streams)]
    deadline = time.monotonic() + args.seconds * 3 + 30
    rss_peak, cpu_before = 0.0, procstat.cpu_seconds(worker) if worker else 0.0
    greenlets = []
    for i, log in enumerate(logs):
        greenlets.append(gevent.spawn(one_stream, port, path, key, body, log, deadline))
        gevent.sleep(args.ramp / args.streams if i % 10 == 9 else 0)
    while not all(g.ready() for g in greenlets):
        if worker:
            rss_peak = max(rss_peak, procstat.rss_mb(worker))
        gevent.sleep(0.5)
    late = sorted(delay * 1000 for log in logs for delay in log.delays)
    return {
        "complete": sum(log.done for log in logs),
        "errors": sum(bool(log.error) for log in logs),
        "chunks": len(late),
        "p50": statistics.median(late) if late else float("nan"),
        "p99": late[int(len(late) * 0.99)] if late else float("nan"),
        "max": late[-1] if late else float("nan"),
        "rss": rss_peak,
        "cpu": procstat.cpu_seconds(worker) - cpu_before if worker else 0.0,
    }


def main() -> None:
    args = parse()
    tokens = max(1, int(args.seconds * 1000 / args.gap_ms))
    plan = parse_args(
        ["--workers", "1", "--stream-tokens", str(tokens), "--event-gap-ms", str(args.gap_ms), "--kinds", STREAM]
        + ["--redis-url", args.redis_url, "--app-dir", str(args.app_dir)]
    )
    body = chat_body(STREAM, plan.prompt_chars).replace(b'"max_tokens": 400', f'"max_tokens": {tokens}'.encode())
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stop:
        stack = start_stack(plan, Path(tmp), stop)
        worker = stack.workers[0]
        print(f"{args.streams} streams of {tokens} chunks, {args.gap_ms:.0f} ms apart, opened over {args.ramp} s")
        direct = run(stack.fake_port, "/chat/completions", stack.upstream_key, body, args, None)
        rss_idle = procstat.rss_mb(worker)
        gateway = run(stack.gateway_port, "/v1/chat/completions", stack.key, body, args, worker)
        stack.check_workers()
    print()
    print(
        "| target | streams complete | errors | chunks | chunk delay p50 / p99 / max ms "
        "| worker RSS idle / peak MB | worker CPU s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in (("fake upstream direct", direct), ("RelayGate, one gevent worker", gateway)):
        rss = f"{rss_idle:.0f} / {r['rss']:.0f}" if name.startswith("RelayGate") else "-"
        cpu = f"{r['cpu']:.1f}" if name.startswith("RelayGate") else "-"
        print(
            f"| {name} | {r['complete']:,} of {args.streams:,} | {r['errors']} | {r['chunks']:,} | "
            f"{r['p50']:.1f} / {r['p99']:.1f} / {r['max']:.1f} | {rss} | {cpu} |"
        )
    print(f"\nadded by the gateway at the median: {gateway['p50'] - direct['p50']:.1f} ms")


if __name__ == "__main__":
    main()
