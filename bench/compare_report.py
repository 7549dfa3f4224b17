"""The comparison's markdown: one summary table with the RelayGate / LiteLLM ratios, every run, and notes."""

from __future__ import annotations

import os
import platform
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime

from loadgen import WrkResult
from relay_bench import cpu_model, source_line
from report import NON_STREAM, STREAM
from stack import Stack

REFERENCE = "fake upstream direct (the limit)"
RELAYGATE = "RelayGate (Redis mode, quota and rate limit on)"
RUNS = ((NON_STREAM, 1), (NON_STREAM, 50), (STREAM, 50))  # (kind, concurrency), in the order they run
OTHERS_WARNING = 0.15  # cores


@dataclass(frozen=True, slots=True)
class Run:
    wrk: WrkResult
    cpu_ms: float  # the target's processes, per request
    redis_ms: float  # redis-server, per request (RelayGate's work, and that of anything else using it)
    wrk_share: float  # wrk's CPU over the run, as a share of its one core
    others: float  # cores taken during the run by processes outside the comparison

    def summary(self) -> str:
        w = self.wrk
        return (
            f"{w.rps:8,.0f} req/s p50 {w.p50_ms:7.2f} ms CPU {self.cpu_ms:6.3f} ms/req "
            f"wrk {self.wrk_share:4.0%} others {self.others:.2f} errors {w.errors}"
        )


@dataclass(frozen=True, slots=True)
class TargetResult:
    label: str
    runs: dict[tuple[str, int], Run]
    rss_worker_mb: float  # the largest process: the one serving
    rss_total_mb: float  # the target's whole process tree

    def rps(self, kind: str) -> float:
        return self.runs[(kind, 50)].wrk.rps

    @property
    def p50_c1(self) -> float:
        return self.runs[(NON_STREAM, 1)].wrk.p50_ms

    @property
    def cpu_ms(self) -> float:
        return self.runs[(NON_STREAM, 50)].cpu_ms


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if abs(value) >= 0.1 else f"{value:.3f} ms"


def _times(ratio: float, less: bool = False) -> str:
    text = f"{ratio:.1f}×" if ratio < 10 else f"{ratio:.0f}×"
    return text + (" less" if less else "")


def _ratio(numerator: float, denominator: float, less: bool = False) -> str:
    return _times(numerator / denominator, less) if denominator > 0 and numerator > 0 else "-"


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown: the first column left-aligned, the figures right-aligned."""
    align = ["---"] + ["---:"] * (len(columns) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in (columns, align, *rows)]


SUMMARY_COLUMNS = [
    "",
    "non-stream req/s, c=50",
    "stream req/s, c=50",
    "added p50, non-stream c=1",
    "CPU per request, non-stream c=50",
    "RSS (serving process; whole tree)",
]
RUN_COLUMNS = [
    "target",
    "kind, concurrency",
    "req/s",
    "p50 / p99 ms",
    "errors",
    "target CPU ms/req",
    "redis-server CPU ms/req",
    "wrk CPU (share of its core)",
    "other processes (cores)",
]


def summary_table(results: list[TargetResult]) -> list[str]:
    direct = results[0]
    rows = [
        [
            r.label,
            f"{r.rps(NON_STREAM):,.0f}",
            f"{r.rps(STREAM):,.0f}",
            _ms(r.p50_c1 - direct.p50_c1) if r is not direct else "0",
            _ms(r.cpu_ms),
            f"{r.rss_worker_mb:.0f} MB; {r.rss_total_mb:.0f} MB",
        ]
        for r in results
    ]
    if len(results) == 3:
        _, lite, ours = results
        rows.append(
            [
                "ratio RelayGate / LiteLLM",
                _ratio(ours.rps(NON_STREAM), lite.rps(NON_STREAM)),
                _ratio(ours.rps(STREAM), lite.rps(STREAM)),
                _ratio(lite.p50_c1 - direct.p50_c1, ours.p50_c1 - direct.p50_c1, less=True),
                _ratio(lite.cpu_ms, ours.cpu_ms, less=True),
                _ratio(lite.rss_worker_mb, ours.rss_worker_mb, less=True),
            ]
        )
    return _table(SUMMARY_COLUMNS, rows)


def runs_table(results: list[TargetResult]) -> list[str]:
    rows = []
    for kind, concurrency in RUNS:
        for r in results:
            run = r.runs[(kind, concurrency)]
            rows.append(
                [
                    r.label,
                    f"{kind}, {concurrency}",
                    f"{run.wrk.rps:,.0f}",
                    f"{run.wrk.p50_ms:.2f} / {run.wrk.p99_ms:.2f}",
                    str(run.wrk.errors),
                    f"{run.cpu_ms:.3f}",
                    f"{run.redis_ms:.3f}",
                    f"{run.wrk_share:.0%}",
                    f"{run.others:.2f}",
                ]
            )
    return _table(RUN_COLUMNS, rows)


def header(stack: Stack, argv: list[str]) -> list[str]:
    plan = stack.plan
    body = stack.bodies[NON_STREAM].stat().st_size
    return [
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}: "
        f"`{shlex.join(['.venv/bin/python', 'bench/compare.py', *argv])}` (`make bench-compare` runs it bare)",
        f"Machine: {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}. Each target runs ONE "
        f"worker pinned to core {plan.target_cpus} (taskset); the fake upstream and wrk (1 thread) are pinned to core "
        f"{plan.load_cpus}; redis-server is the machine's shared one, not pinned.",
        f"RelayGate: `gunicorn -c gunicorn.conf.py -k gevent -w 1`, APP_ENV=production, REDIS_URL={plan.redis_url}, "
        f"SQLite; the key has {plan.key_tokens:,} tokens and {plan.key_rpm:,} rpm, so quota and rate limit run on "
        f"every request and refuse nothing. Source: {source_line(plan.app_dir)}.",
        "LiteLLM: `litellm --config ... --num_workers 1` in bench/.litellm-venv (uvicorn with uvloop), no "
        "database, master key auth, telemetry off, `deepseek/` provider with `api_base` = the fake.",
        f"Upstream: bench/fake_upstream.py; a stream is role chunk, {plan.stream_tokens} content chunks, finish "
        "chunk, usage chunk, [DONE]. Every answer of every target was checked before the load.",
        f"Load: the same wrk script and the same {body}-byte body (model deepseek-v4-flash) for every target; each "
        f"run is {plan.warmup} s of warm-up (not measured) then {plan.duration} s measured, runs interleaved "
        "target by target.",
    ]


def notes(results: list[TargetResult], idle: float) -> list[str]:
    direct, targets = results[0], results[1:]
    target_runs = [run for r in targets for run in r.runs.values()]
    slowest = max((r.rps(NON_STREAM) for r in targets), default=0.0)
    worst_others = max(run.others for r in results for run in r.runs.values())
    lines = [
        f"The load generator is not the limit: wrk took at most {max(r.wrk_share for r in target_runs):.0%} of its "
        f"core during the targets' runs, and the fake upstream straight from the same wrk served "
        f"{_ratio(direct.rps(NON_STREAM), slowest)} the best target's non-stream req/s.",
        "CPU per request: utime + stime (/proc/PID/stat) of the target's processes over the measured run, divided "
        "by the requests wrk completed. RelayGate's live quota and rate-limit state is in redis-server, outside "
        "core 0: its CPU per request is in the redis-server column and not in RelayGate's figure (the server "
        "is shared: what it shows in the other targets' runs is other clients' work).",
        "Added p50 is the target's wrk p50 at c=1 minus the fake's; at c=50 wrk is closed-loop, so latency there "
        "is queueing at each target's throughput limit.",
        "RSS: VmRSS after all runs; the serving process (RelayGate's gevent worker, LiteLLM's one uvicorn "
        "process), then the whole process tree (RelayGate adds the gunicorn master).",
        f"Machine load before the runs (1 s, idle): {idle:.2f} cores.",
    ]
    if worst_others > OTHERS_WARNING:
        lines.append(
            f"WARNING: other processes took up to {worst_others:.2f} cores during the runs (they share core 0 and 1 "
            "with the targets): req/s and latency are pessimistic, CPU per request much less so. Re-run on a quiet "
            "machine for the record."
        )
    return lines


def render(stack: Stack, results: list[TargetResult], argv: list[str], idle: float) -> str:
    parts = ["# RelayGate beside LiteLLM's proxy, one worker each on one core", "", *header(stack, argv), ""]
    parts += summary_table(results)
    parts += ["", "## Every run", "", *runs_table(results)]
    parts += ["", "## Notes", "", *[f"- {n}" for n in notes(results, idle)]]
    return "\n".join(parts) + "\n"
