"""What the bench runs: its settings from the command line, and the request it sends."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import NON_STREAM, STREAM

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
MODEL = "deepseek-v4-flash"  # the public id routes to the same upstream id by default
KINDS = (NON_STREAM, STREAM)
DESCRIPTION = "Relay bench: the same load straight to a fake DeepSeek and through the gateway (gunicorn, gevent)."


@dataclass(frozen=True, slots=True)
class Plan:
    duration: int
    warmup: int
    concurrencies: tuple[int, ...]
    kinds: tuple[str, ...]
    workers: int
    probe_requests: int
    prompt_chars: int
    stream_tokens: int
    event_gap_ms: float
    redis_url: str
    key_tokens: int
    key_rpm: int
    profile: bool
    check: bool
    out: Path
    app_dir: Path  # the gateway's source tree (wsgi.py, gunicorn.conf.py); the venv stays this repo's
    target_cpus: str = ""  # taskset -c list for the gateway ("" = not pinned)
    load_cpus: str = ""  # taskset -c list for the fake upstream and wrk ("" = not pinned)

    def budget_seconds(self) -> int:
        """An upper bound for the whole run; the alarm stops the bench past it."""
        runs = len(self.kinds) * len(self.concurrencies) * 2
        profile = len(self.kinds) * (self.duration + 15) if self.profile else 0
        probes = len(self.kinds) * 2 * self.probe_requests * 0.05
        return int(90 + probes + runs * (self.duration + self.warmup + 5) + profile)


def parse_args(argv: list[str] | None = None) -> Plan:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up, 50 probe requests (about 1 min)")
    p.add_argument("--duration", type=int, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=int, help="seconds of warm-up before each run (default 1)")
    p.add_argument("--concurrency", default="1,10,50", help="comma-separated connection counts")
    p.add_argument("--kinds", default=",".join(KINDS), help="non-stream,stream or one of them")
    p.add_argument("--workers", type=int, default=2, help="gunicorn gevent workers")
    p.add_argument("--probe-requests", type=int, help="sequential requests for time to first byte (default 300)")
    p.add_argument("--prompt-chars", type=int, default=2000, help="size of the system prompt in the request")
    p.add_argument("--stream-tokens", type=int, default=8, help="content chunks per answer from the fake")
    p.add_argument("--event-gap-ms", type=float, default=0.0, help="pause between the fake's stream events")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="the bench FLUSHES this database")
    p.add_argument("--key-tokens", type=int, default=1_000_000_000_000, help="token quota of the bench key")
    p.add_argument("--key-rpm", type=int, default=100_000_000, help="rate limit of the bench key")
    p.add_argument("--profile", action="store_true", help="extra c=50 gateway runs under py-spy (not in the table)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "latest.md")
    p.add_argument(
        "--app-dir",
        type=Path,
        default=ROOT,
        help="gateway source tree to run (default: this repo);\n"
        "e.g. an export of a commit, to compare it with the working tree",
    )
    a = p.parse_args(argv)
    kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    if not kinds or set(kinds) - set(KINDS):
        p.error(f"--kinds takes {', '.join(KINDS)}")
    return Plan(
        duration=a.duration or (3 if a.quick else 10),
        warmup=a.warmup if a.warmup is not None else 1,
        concurrencies=tuple(int(c) for c in a.concurrency.split(",")),
        kinds=kinds,
        workers=a.workers,
        probe_requests=a.probe_requests or (50 if a.quick else 300),
        prompt_chars=a.prompt_chars,
        stream_tokens=a.stream_tokens,
        event_gap_ms=a.event_gap_ms,
        redis_url=a.redis_url,
        key_tokens=a.key_tokens,
        key_rpm=a.key_rpm,
        profile=a.profile,
        check=a.check,
        out=a.out,
        app_dir=a.app_dir.resolve(),
    )


def chat_body(kind: str, prompt_chars: int) -> bytes:
    """A SillyTavern-like request: a long character card as the system prompt and a few turns."""
    card = "You are Mira, a ranger of the northern woods. Stay in character; answer in vivid prose. "
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": (card * (prompt_chars // len(card) + 1))[:prompt_chars]},
            {"role": "user", "content": "We reach the old bridge at dusk. What do you see?"},
            {"role": "assistant", "content": "Mist coils over the water, and the planks are slick with moss."},
            {"role": "user", "content": "I step onto the bridge carefully."},
        ],
        "temperature": 0.8,
        "top_p": 0.95,
        "max_tokens": 400,
        "stream": kind == STREAM,
    }
    if kind == STREAM:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()
