"""The measured phases: checked answers, time to first byte, and wrk runs with CPU and memory read from /proc."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import procstat
from loadgen import BenchError, ProbeResult, WrkResult, probe, run_wrk, status_of
from plan import MODEL
from redis_watch import CommandCounter, drop_celery_queue
from report import NON_STREAM, STREAM, LoadRow
from stack import Stack


def sanity_checks(stack: Stack) -> None:
    body = stack.bodies[NON_STREAM].read_bytes()
    if status_of(stack.fake_port, "POST", "/chat/completions", "sk-wrong", body) != 401:
        raise BenchError("the fake upstream accepted a wrong bearer key")
    if status_of(stack.gateway_port, "POST", "/v1/chat/completions", "sk-gateway-wrong", body) != 401:
        raise BenchError("the gateway accepted a wrong key")


REDIS_SAMPLE_REQUESTS = 50


def _probe_target(stack: Stack, name: str, kind: str, count: int) -> ProbeResult:
    _, key, path = stack.target(name)
    port = stack.fake_port if name == "direct" else stack.gateway_port
    body = stack.bodies[kind].read_bytes()
    return probe(port, path, body, key, count, stream=kind == STREAM, model=MODEL)


def count_redis_commands(stack: Stack, kind: str) -> None:
    """Redis commands per gateway request, from MONITOR over a few sequential requests (not timed:
    MONITOR slows Redis down)."""
    counter = CommandCounter(stack.redis, stack.redis.connection_pool.connection_kwargs.get("db", 0))
    n = REDIS_SAMPLE_REQUESTS
    counter.watch(functools.partial(_probe_target, stack, "gateway", kind, n))
    stack.redis_per_request[kind] = {command: count / n for command, count in counter.commands.most_common()}
    stack.redis_scripted_per_request[kind] = sum(counter.scripted.values()) / n


def run_probes(stack: Stack) -> dict[tuple[str, str], ProbeResult]:
    """Sequential requests, every answer checked: time to first byte, and the gateway's Redis commands."""
    results = {}
    for kind in stack.plan.kinds:
        count_redis_commands(stack, kind)
        for name in ("direct", "gateway"):
            results[(name, kind)] = _probe_target(stack, name, kind, stack.plan.probe_requests)
    drop_celery_queue(stack.redis)
    return results


@dataclass(frozen=True, slots=True)
class Measured:
    wrk: WrkResult
    server_cpu_ms: float  # per request: gateway workers, or the fake for direct runs
    server_sys_share: float  # kernel (stime) share of server_cpu_ms
    fake_cpu_ms: float
    busy: float
    other_cores: float
    bench_cpu_ms: float  # per request: gateway, fake, redis-server and wrk together
    rss_mb: float


def measure(stack: Stack, name: str, kind: str, concurrency: int) -> Measured:
    plan = stack.plan
    url, key, _ = stack.target(name)
    body = stack.bodies[kind]
    if plan.warmup:
        run_wrk(url, body, key, concurrency, plan.warmup, plan.load_cpus)
    drop_celery_queue(stack.redis)
    servers = stack.workers if name == "gateway" else [stack.fake.pid]
    before = _cpu_snapshot(stack, servers)
    result = run_wrk(url, body, key, concurrency, plan.duration, plan.load_cpus)
    after = _cpu_snapshot(stack, servers)
    drop_celery_queue(stack.redis)
    stack.check_workers()
    stack.fake.check_alive()
    per_request = 1000 / max(result.requests, 1)
    cpu = after.servers - before.servers
    return Measured(
        wrk=result,
        server_cpu_ms=cpu * per_request,
        server_sys_share=(after.servers_sys - before.servers_sys) / cpu if cpu else 0.0,
        fake_cpu_ms=(after.fake - before.fake) * per_request,
        busy=procstat.busy_fraction(before.machine, after.machine),
        other_cores=_other_cores(before, after, result),
        bench_cpu_ms=(after.ours - before.ours + result.cpu_seconds) * per_request,
        rss_mb=max(procstat.rss_mb(pid) for pid in stack.workers),
    )


def _other_cores(before: _CpuSnapshot, after: _CpuSnapshot, result: WrkResult) -> float:
    """Cores used during the run by processes that are not part of the bench (other work on the machine)."""
    ours = after.ours - before.ours + result.cpu_seconds
    everything = procstat.busy_seconds(before.machine, after.machine)
    return max(0.0, everything - ours) / result.seconds if result.seconds else 0.0


@dataclass(frozen=True, slots=True)
class _CpuSnapshot:
    servers: float
    servers_sys: float
    fake: float
    ours: float  # gateway (master and workers), fake upstream and redis-server together
    machine: procstat.MachineTimes


def _cpu_snapshot(stack: Stack, servers: list[int]) -> _CpuSnapshot:
    ours = [stack.gateway.pid, *stack.workers, stack.fake.pid] + ([stack.redis_pid] if stack.redis_pid else [])
    return _CpuSnapshot(
        servers=procstat.total_cpu_seconds(servers),
        servers_sys=procstat.total_system_seconds(servers),
        fake=procstat.cpu_seconds(stack.fake.pid),
        ours=procstat.total_cpu_seconds(ours),
        machine=procstat.machine_times(),
    )


def run_loads(stack: Stack) -> list[LoadRow]:
    rows = []
    for kind in stack.plan.kinds:
        for concurrency in stack.plan.concurrencies:
            direct = measure(stack, "direct", kind, concurrency)
            gateway = measure(stack, "gateway", kind, concurrency)
            row = LoadRow(
                kind=kind,
                concurrency=concurrency,
                direct=direct.wrk,
                gateway=gateway.wrk,
                gateway_cpu_ms=gateway.server_cpu_ms,
                gateway_sys_share=gateway.server_sys_share,
                fake_cpu_direct_ms=direct.server_cpu_ms,
                fake_cpu_gateway_ms=gateway.fake_cpu_ms,
                rss_mb=gateway.rss_mb,
                busy_direct=direct.busy,
                busy_gateway=gateway.busy,
                other_direct=direct.other_cores,
                other_gateway=gateway.other_cores,
                bench_cpu_gateway_ms=gateway.bench_cpu_ms,
            )
            rows.append(row)
            _progress(row)
    return rows


def _progress(row: LoadRow) -> None:
    print(
        f"  {row.kind:<10} c={row.concurrency:<3} direct {row.direct.rps:8,.0f} req/s p50 {row.direct.p50_ms:6.2f} ms"
        f" | gateway {row.gateway.rps:7,.0f} req/s p50 {row.gateway.p50_ms:6.2f} ms"
        f" CPU {row.gateway_cpu_ms:.3f} ms/req ({row.gateway_sys_share:.0%} kernel)"
        f" RSS {row.rss_mb:.0f} MB errors {row.gateway.errors}",
        flush=True,
    )
