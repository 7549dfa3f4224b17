"""The bench's markdown report: targets from issue 2 next to the measured numbers."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from loadgen import ProbeResult, WrkResult

NON_STREAM = "non-stream"
STREAM = "stream"


@dataclass(frozen=True, slots=True)
class LoadRow:
    """One kind and concurrency: the same load straight to the fake upstream and through the gateway."""

    kind: str
    concurrency: int
    direct: WrkResult
    gateway: WrkResult
    gateway_cpu_ms: float  # gunicorn workers' CPU per gateway request
    gateway_sys_share: float  # the kernel's part (stime) of gateway_cpu_ms
    fake_cpu_direct_ms: float  # the fake's CPU per request, straight
    fake_cpu_gateway_ms: float  # the fake's CPU per request, through the gateway
    rss_mb: float  # the largest worker after the gateway run
    busy_direct: float  # share of both cores busy during the run
    busy_gateway: float
    other_direct: float  # cores used by processes outside the bench during the run
    other_gateway: float
    bench_cpu_gateway_ms: float  # gateway + fake + redis-server + wrk CPU per gateway request

    def ceiling_rps(self, cores: int) -> float:
        """Requests/s if the bench had every core to itself and stayed CPU-bound: a model, not a measurement."""
        return cores * 1000 / self.bench_cpu_gateway_ms if self.bench_cpu_gateway_ms else 0.0

    @property
    def added_p50(self) -> float:
        return self.gateway.p50_ms - self.direct.p50_ms

    @property
    def added_p99(self) -> float:
        return self.gateway.p99_ms - self.direct.p99_ms


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    goal: str
    measured: float | None
    unit: str
    check: Callable[[float], bool]

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "not run"
        return "PASS" if self.check(self.measured) else "MISS"


def _row(rows: list[LoadRow], kind: str, concurrency: int) -> LoadRow | None:
    return next((r for r in rows if r.kind == kind and r.concurrency == concurrency), None)


def targets(rows: list[LoadRow]) -> list[Target]:
    c50, c1 = _row(rows, NON_STREAM, 50), _row(rows, NON_STREAM, 1)
    rss = max((r.rss_mb for r in rows), default=None)
    return [
        Target(
            "gateway CPU per non-stream request (c=50)",
            "<= 1.5 ms",
            c50.gateway_cpu_ms if c50 else None,
            "ms",
            lambda v: v <= 1.5,
        ),
        Target("added latency p50, non-stream, c=1", "<= 2 ms", c1.added_p50 if c1 else None, "ms", lambda v: v <= 2),
        Target(
            "non-stream requests/s, c=50, 2 gevent workers",
            ">= 800",
            c50.gateway.rps if c50 else None,
            "req/s",
            lambda v: v >= 800,
        ),
        Target("worker RSS, largest worker over all runs", "< 120 MB", rss, "MB", lambda v: v < 120),
    ]


def _targets_table(items: list[Target], rows: list[LoadRow], cores: int) -> list[str]:
    lines = ["| target | goal | measured | result |", "|---|---|---|---|"]
    for t in items:
        measured = "-" if t.measured is None else f"{t.measured:.2f} {t.unit}"
        lines.append(f"| {t.name} | {t.goal} | {measured} | {t.verdict} |")
    c50 = _row(rows, NON_STREAM, 50)
    if c50 is not None:
        lines.append(
            f"| (context) non-stream req/s ceiling on a quiet machine: {cores} cores / "
            f"{c50.bench_cpu_gateway_ms:.2f} ms of gateway + fake + redis + wrk CPU per request | >= 800 "
            f"| {c50.ceiling_rps(cores):.0f} req/s | model |"
        )
    return lines


def _load_table(rows: list[LoadRow]) -> list[str]:
    lines = [
        "| kind | conc | direct req/s | gateway req/s | direct p50 / p99 ms | gateway p50 / p99 ms "
        "| added p50 / p99 ms | gateway CPU ms/req (kernel) | fake CPU ms/req direct / via gw | worker RSS MB "
        "| cores busy (others) direct / gw | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, g = r.direct, r.gateway
        lines.append(
            f"| {r.kind} | {r.concurrency} | {d.rps:,.0f} | {g.rps:,.0f} | {d.p50_ms:.2f} / {d.p99_ms:.2f} "
            f"| {g.p50_ms:.2f} / {g.p99_ms:.2f} | {r.added_p50:.2f} / {r.added_p99:.2f} "
            f"| {r.gateway_cpu_ms:.3f} ({r.gateway_sys_share:.0%}) "
            f"| {r.fake_cpu_direct_ms:.3f} / {r.fake_cpu_gateway_ms:.3f} | {r.rss_mb:.1f} "
            f"| {r.busy_direct:.0%} ({r.other_direct:.2f}) / {r.busy_gateway:.0%} ({r.other_gateway:.2f}) "
            f"| {d.errors} / {g.errors} |"
        )
    return lines


def _probe_table(probes: dict[tuple[str, str], ProbeResult]) -> list[str]:
    lines = [
        "| kind | requests | direct headers / first event / total p50 ms "
        "| gateway headers / first event / total p50 ms | added first event p50 ms | added total p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in (NON_STREAM, STREAM):
        d, g = probes.get(("direct", kind)), probes.get(("gateway", kind))
        if d is None or g is None:
            continue
        lines.append(
            f"| {kind} | {g.requests} | {d.headers_p50:.2f} / {d.first_event_p50:.2f} / {d.total_p50:.2f} "
            f"| {g.headers_p50:.2f} / {g.first_event_p50:.2f} / {g.total_p50:.2f} "
            f"| {g.first_event_p50 - d.first_event_p50:.2f} "
            f"| {g.total_p50 - d.total_p50:.2f} / {g.total_p99 - d.total_p99:.2f} |"
        )
    return lines


def render(header: list[str], rows: list[LoadRow], probes: dict[tuple[str, str], ProbeResult], notes: list[str]) -> str:
    cores = os.cpu_count() or 1
    parts = ["# RelayGate relay bench", "", *header, "", "## Targets (issue 2)", ""]
    parts += _targets_table(targets(rows), rows, cores)
    parts += ["", "## Load (wrk, one thread; same body straight to the fake upstream and through the gateway)", ""]
    parts += _load_table(rows)
    if probes:
        parts += ["", "## Time to first byte, concurrency 1 (sequential Python client, one keep-alive connection)", ""]
        parts += _probe_table(probes)
    if notes:
        parts += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(parts) + "\n"
