"""RelayGate beside LiteLLM's proxy: one run, one table (issue 13).

    .venv/bin/python bench/compare.py [--quick] [--duration S] [--warmup S] [--litellm PATH]

Starts the lean fake upstream (20 content chunks a stream), RelayGate as bench/stack.py starts it
(Redis mode, quota and rate limit on) with one gevent worker, and LiteLLM's proxy with one worker,
both pinned to core 0; the fake and wrk run on core 1. It checks every target's answers, then runs
the same wrk load with the same body against the fake directly, LiteLLM and RelayGate, interleaved:
non-stream at c=1 and c=50, stream at c=50, each after a warm-up that is not measured. Prints a
markdown table with the ratios and writes it to bench/results/compare.md. Exit status 2 when the
comparison itself failed (a target died or answered wrong, LiteLLM is not installed, time ran out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import litellm_proxy
import procstat
from compare_report import REFERENCE, RELAYGATE, RUNS, Run, TargetResult, render
from loadgen import BenchError, probe, run_wrk, status_of
from plan import BENCH, MODEL, ROOT, Plan, parse_args
from redis_watch import drop_celery_queue
from relay_bench import idle_load
from report import STREAM
from stack import Server, Stack, start_stack

TARGET_CPUS, LOAD_CPUS = "0", "1"
STREAM_TOKENS = 20
PROBE_REQUESTS = 30
DEFAULT_LITELLM = BENCH / ".litellm-venv" / "bin" / "litellm"
LITELLM_LOG = BENCH / "results" / "litellm.log"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    label: str
    port: int
    path: str
    key: str
    root_pid: int  # this process and everything below it are the target's CPU and memory

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def check_complete(status: int, body: bytes, stream: bool, _model: str) -> None:
    """A whole answer with the fake's usage; looser than loadgen.check_answer, because LiteLLM's usage
    chunk carries a choice with an empty delta where DeepSeek and RelayGate send "choices": []."""
    usage = b'"completion_tokens":%d' % STREAM_TOKENS
    if status != 200:
        raise BenchError(f"expected 200, got {status}: {body[:300]!r}")
    if stream and (not body.endswith(b"data: [DONE]\n\n") or usage not in body.replace(b" ", b"")):
        raise BenchError(f"stream did not end with usage and [DONE]: {body[-300:]!r}")
    if not stream and json.loads(body).get("usage", {}).get("completion_tokens") != STREAM_TOKENS:
        raise BenchError(f"answer without the fake's usage: {body[:300]!r}")


def check_targets(stack: Stack, targets: list[Target]) -> None:
    for target in targets:
        body = stack.bodies[STREAM].read_bytes()
        if status_of(target.port, "POST", target.path, "sk-compare-wrong", body) == 200:
            raise BenchError(f"{target.label} accepted a wrong key")
        for kind, path in stack.bodies.items():
            answers = (target.port, target.path, path.read_bytes(), target.key, PROBE_REQUESTS)
            probe(*answers, stream=kind == STREAM, model=MODEL, check=check_complete)


class Comparison:
    def __init__(self, stack: Stack, targets: list[Target], others: list[Server]) -> None:
        self.stack, self.plan, self.targets, self.others = stack, stack.plan, targets, others

    def measure(self, target: Target, kind: str, concurrency: int) -> Run:
        plan, body = self.plan, self.stack.bodies[kind]
        if plan.warmup:
            run_wrk(target.url, body, target.key, concurrency, plan.warmup, plan.load_cpus)
        drop_celery_queue(self.stack.redis)
        pids = procstat.tree_of(target.root_pid)
        redis = [self.stack.redis_pid] if self.stack.redis_pid else []
        ours = sorted({*pids, self.stack.fake.pid, *redis})
        before = [procstat.total_cpu_seconds(p) for p in (pids, redis, ours)], procstat.machine_times()
        result = run_wrk(target.url, body, target.key, concurrency, plan.duration, plan.load_cpus)
        after = [procstat.total_cpu_seconds(p) for p in (pids, redis, ours)], procstat.machine_times()
        drop_celery_queue(self.stack.redis)
        (cpu, redis_cpu, ours_cpu) = (b - a for a, b in zip(before[0], after[0], strict=True))
        everything = procstat.busy_seconds(before[1], after[1])
        per_request = 1000 / max(result.requests, 1)
        return Run(
            wrk=result,
            cpu_ms=cpu * per_request,
            redis_ms=redis_cpu * per_request,
            wrk_share=result.cpu_seconds / result.seconds if result.seconds else 0.0,
            others=max(0.0, everything - ours_cpu - result.cpu_seconds) / max(result.seconds, 1e-9),
        )

    def run(self) -> list[TargetResult]:
        runs: dict[str, dict[tuple[str, int], Run]] = {t.label: {} for t in self.targets}
        for kind, concurrency in RUNS:
            for target in self.targets:  # interleaved, so drifting load on the machine hits every target alike
                run = self.measure(target, kind, concurrency)
                runs[target.label][(kind, concurrency)] = run
                self._alive()
                name = target.label.split(" (")[0]
                print(f"  {kind:<10} c={concurrency:<3} {name:<22} {run.summary()}", flush=True)
        return [self._result(t, runs[t.label]) for t in self.targets]

    def _alive(self) -> None:
        self.stack.check_workers()
        self.stack.fake.check_alive()
        for server in self.others:
            server.check_alive()

    @staticmethod
    def _result(target: Target, runs: dict[tuple[str, int], Run]) -> TargetResult:
        rss = [procstat.rss_mb(pid) for pid in procstat.tree_of(target.root_pid)]
        return TargetResult(target.label, runs, rss_worker_mb=max(rss), rss_total_mb=sum(rss))


def _plan(args: argparse.Namespace) -> Plan:
    argv = ["--workers", "1", "--stream-tokens", str(STREAM_TOKENS), "--redis-url", args.redis_url]
    argv += ["--duration", str(args.duration or (3 if args.quick else 10)), "--warmup", str(args.warmup)]
    argv += ["--out", str(args.out), "--app-dir", str(args.app_dir)]
    return dataclasses.replace(parse_args(argv), target_cpus=TARGET_CPUS, load_cpus=LOAD_CPUS)


def budget_seconds(plan: Plan) -> int:
    return 240 + len(RUNS) * 3 * (plan.warmup + plan.duration + 10)


def compare(args: argparse.Namespace, plan: Plan) -> str:
    version = litellm_proxy.version(args.litellm)
    with tempfile.TemporaryDirectory(prefix="relay-compare-") as tmp, ExitStack() as stack_exit:
        stack = start_stack(plan, Path(tmp), stack_exit)
        proxy, port, master = litellm_proxy.start(
            args.litellm, Path(tmp), stack_exit, stack.fake_port, stack.upstream_key, plan.target_cpus, LITELLM_LOG
        )
        targets = [
            Target(REFERENCE, stack.fake_port, "/chat/completions", stack.upstream_key, stack.fake.pid),
            Target(f"LiteLLM {version} proxy", port, "/v1/chat/completions", master, proxy.pid),
            Target(RELAYGATE, stack.gateway_port, "/v1/chat/completions", stack.key, stack.gateway.pid),
        ]
        check_targets(stack, targets)
        print(f"Answers checked ({PROBE_REQUESTS} per target and kind)", flush=True)
        idle = idle_load()
        results = Comparison(stack, targets, [proxy]).run()
        text = render(stack, results, sys.argv[1:], idle)
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    plan.out.write_text(text)
    return text


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s runs (about 1.5 minutes)")
    p.add_argument("--duration", type=int, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run, not measured")
    p.add_argument("--litellm", type=Path, default=DEFAULT_LITELLM, help="the litellm command to run")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/10", help="RelayGate's; FLUSHED")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "compare.md")
    p.add_argument("--app-dir", type=Path, default=ROOT, help="RelayGate source tree to run (as relay_bench.py)")
    return p.parse_args(argv)


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise BenchError("the comparison ran past its time budget and was stopped")


def main() -> None:
    args = parse()
    plan = _plan(args)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up when stopped
    signal.alarm(budget_seconds(plan))
    print(f"Comparison: up to {budget_seconds(plan)} s; targets on core {TARGET_CPUS}, fake and wrk on {LOAD_CPUS}")
    try:
        print("\n" + compare(args, plan))
    except BenchError as exc:
        print(f"bench-compare failed: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"Written to {plan.out}")


if __name__ == "__main__":
    main()
