"""Scale-out test (issue 13): gateway nodes sharing one Redis and one PostgreSQL keep limits and the
ledger global, with one node restarted mid-run.

    .venv/bin/python bench/scale_test.py [--nodes 3] [--clients 6] [--database scale13] [--keep-database]

Starts on 127.0.0.1: the lean fake upstream, three gateway nodes (gunicorn, one gevent worker each,
different ports), two Celery workers and beat, with Redis database 9 (flushed; never 0) and a
PostgreSQL database of its own (dropped and created; never `test`). Then, for about 65 seconds,
steady load from a few clients spread round-robin over the nodes, while:

- a key at 30 rpm is sent a burst of 60 requests over all nodes, then a few requests every 2 s
  until the minute is nearly over, then a burst of 40 once the window has passed: exactly 30 may
  succeed in the first minute and 30 in the next (the window is app/billing/ratelimit.py's fixed
  60 s in Redis, so the test runs the full minute);
- a key with a small balance gets three waves of 40 concurrent requests over all nodes: SQL must
  never show it used past its quota;
- 20 s in, the second node is stopped (SIGTERM, as a deploy does) and started again.

Then it waits for the workers to drain, checks that the ledger has every request the fake upstream
answered exactly once, knocks two live balances out of line in Redis, waits for two Celery
reconcile runs and checks that Redis and SQL agree for every key. Prints the figures; exit status 1
when a check fails, 2 when the test itself could not run. Bounded by an alarm (5 minutes).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from loadgen import BenchError
from plan import ROOT, chat_body, parse_args
from report import NON_STREAM, STREAM
from scale_cluster import Cluster, Settings
from scale_traffic import Spread, Tally, steady_load

sys.path.insert(0, str(ROOT))
from app.billing import quota  # noqa: E402  (key names are built there only)

BUDGET_SECONDS = 300
PREFIX = "rg"  # BILLING_REDIS_PREFIX's default; the cluster does not set it
RATE_RPM, WINDOW_SECONDS = 30, 60
QUOTA_TOKENS = 6_000
HUGE = 1_000_000_000_000
RESTART_AT, QUOTA_WAVES_AT = 20.0, (5.0, 25.0, 45.0)


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    secret: str
    id: int


@dataclass
class Check:
    name: str
    ok: bool
    figures: str


class ScaleTest:
    def __init__(self, cluster: Cluster, clients: int) -> None:
        self.cluster, self.clients = cluster, clients
        self.spread = Spread(cluster.ports)
        self.bodies = {False: chat_body(NON_STREAM, 2000), True: chat_body(STREAM, 2000)}
        self.quota_body = chat_body(NON_STREAM, 800)
        self.tallies = {name: Tally() for name in ("load", "rate first", "rate probes", "rate next", "quota")}
        self.checks: list[Check] = []
        self.restart_seconds = 0.0

    def create_keys(self) -> None:
        limits = {"load": (HUGE, 100_000_000), "rate": (HUGE, RATE_RPM), "quota": (QUOTA_TOKENS, 100_000)}
        self.keys = {name: Key(name, *self.cluster.create_key(*limit)) for name, limit in limits.items()}

    # -- traffic ---------------------------------------------------------------------------------
    def traffic(self) -> None:
        stop, started = threading.Event(), time.monotonic()
        load = (self.spread, self.keys["load"].secret, self.bodies, stop, self.tallies["load"])
        threads = [threading.Thread(target=steady_load, args=load) for _ in range(self.clients)]
        threads.append(threading.Thread(target=self._restart_later, args=(started,)))
        threads.append(threading.Thread(target=self._quota_waves, args=(started,)))
        for thread in threads:
            thread.start()
        try:
            self._rate_minute()
        finally:
            stop.set()
            for thread in threads:
                thread.join(90)
        self.cluster.check_alive()
        print(f"traffic done after {time.monotonic() - started:.0f} s", flush=True)

    def _rate_minute(self) -> None:
        key, body = self.keys["rate"].secret, self.bodies[False]
        started = time.monotonic()
        self.spread.burst(key, body, 2 * RATE_RPM, self.tallies["rate first"])
        burst_done = time.monotonic()
        # Every admission of the burst came after `started`, so none leaves the window before
        # started + 60 s: a request sent before started + 58 s must be refused.
        with requests.Session() as session:
            while time.monotonic() < started + WINDOW_SECONDS - 2:
                for _ in self.cluster.ports:
                    self.spread.send(session, key, body, False, self.tallies["rate probes"])
                time.sleep(2)
        # Every admission came before burst_done: all of them have left the window 61 s later.
        time.sleep(max(0.0, burst_done + WINDOW_SECONDS + 1 - time.monotonic()))
        self.spread.burst(key, body, RATE_RPM + 10, self.tallies["rate next"])

    def _restart_later(self, started: float) -> None:
        time.sleep(max(0.0, started + RESTART_AT - time.monotonic()))
        began = time.monotonic()
        self.cluster.restart(self.cluster.ports[1], self.keys["load"].secret)
        self.restart_seconds = time.monotonic() - began
        print(f"node on port {self.cluster.ports[1]} restarted in {self.restart_seconds:.1f} s", flush=True)

    def _quota_waves(self, started: float) -> None:
        for offset in QUOTA_WAVES_AT:
            time.sleep(max(0.0, started + offset - time.monotonic()))
            self.spread.burst(self.keys["quota"].secret, self.quota_body, 40, self.tallies["quota"])

    # -- checks ----------------------------------------------------------------------------------
    def check_rate(self) -> None:
        first, probes, later = (self.tallies[n].outcomes for n in ("rate first", "rate probes", "rate next"))
        in_minute = first["200"] + probes["200"]
        ok = in_minute == RATE_RPM and set(first) | set(probes) <= {"200", "429"}
        ok = ok and later["200"] == RATE_RPM and set(later) <= {"200", "429"}
        nodes = len(self.cluster.ports)
        self.checks.append(
            Check(
                f"rate limit: a key at {RATE_RPM} rpm gets exactly {RATE_RPM} a minute across {nodes} nodes",
                ok,
                f"first minute: burst of {2 * RATE_RPM} -> {dict(first)}, then {sum(probes.values())} requests "
                f"until +58 s -> {dict(probes)}: {in_minute} admitted; next minute: burst of {RATE_RPM + 10} -> "
                f"{dict(later)}",
            )
        )

    def check_quota(self) -> None:
        key = self.keys["quota"]
        quota_sql, used = self.cluster.database.rows(
            "SELECT tokens_quota, tokens_used FROM api_keys WHERE id = %s", key.id
        )[0]
        outcomes = self.tallies["quota"].outcomes
        ok = used <= quota_sql and outcomes["402"] > 0 and set(outcomes) <= {"200", "402"}
        self.checks.append(
            Check(
                f"quota: a key with {QUOTA_TOKENS:,} tokens is never overspent across nodes",
                ok,
                f"3 waves of 40 concurrent requests -> {dict(outcomes)}; SQL tokens_used {used:,} of {quota_sql:,} "
                f"({quota_sql - used:,} left)",
            )
        )

    def wait_for_ledger(self, timeout: float = 90) -> tuple[dict[str, int], tuple[int, ...]]:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.cluster.fake_stats()
            rows = self.cluster.database.rows(
                "SELECT count(*), count(DISTINCT request_id), coalesce(sum(prompt_tokens), 0), "
                "coalesce(sum(completion_tokens), 0) FROM usage_records"
            )[0]
            outbox = self.cluster.redis.hlen(quota.outbox_key(PREFIX))
            if (rows[0] >= stats["answered"] and outbox == 0) or time.monotonic() > deadline:
                return stats, tuple(int(v) for v in rows)
            time.sleep(1)

    def check_ledger(self) -> None:
        stats, (count, distinct, prompt, completion) = self.wait_for_ledger()
        per_key = self.cluster.database.rows(
            "SELECT k.id, k.tokens_used, coalesce(sum(u.billed_tokens), 0) FROM api_keys k "
            "LEFT JOIN usage_records u ON u.api_key_id = k.id GROUP BY k.id, k.tokens_used ORDER BY k.id"
        )
        answered = (stats["answered"], stats["prompt_tokens"], stats["completion_tokens"])
        ok = (count, prompt, completion) == answered and distinct == count
        ok = ok and all(used == billed for _, used, billed in per_key)
        self.checks.append(
            Check(
                "ledger: every request the upstream answered is in usage_records exactly once",
                ok,
                f"fake upstream answered {answered[0]} requests ({answered[1]:,} prompt, {answered[2]:,} completion "
                f"tokens); usage_records: {count} rows, {distinct} distinct request ids ({prompt:,} prompt, "
                f"{completion:,} completion); per key tokens_used vs sum(billed_tokens): "
                + ", ".join(f"#{k} {used:,}/{billed:,}" for k, used, billed in per_key),
            )
        )

    def check_reconcile(self) -> None:
        """Knock two balances out of line, let Celery reconcile twice, then compare Redis with SQL."""
        redis, load, limited = self.cluster.redis, self.keys["load"], self.keys["quota"]
        redis.hincrby(quota.acct_key(PREFIX, load.id), "synced", -1000)
        redis.hincrby(quota.acct_key(PREFIX, limited.id), "held", 777)
        runs = self.cluster.reconcile_runs()
        deadline = time.monotonic() + 6 * self.cluster.settings.reconcile_seconds + 30
        while self.cluster.reconcile_runs() < runs + 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        rows = [self._balances(key) for key in self.keys.values()]
        ok = self.cluster.reconcile_runs() >= runs + 2 and all(row["agree"] for row in rows)
        self.checks.append(
            Check(
                "reconcile: Redis and SQL agree for every key after Celery's reconcile",
                ok,
                f"drift injected: synced -1,000 on key #{load.id}, held +777 on key #{limited.id}; "
                f"{self.cluster.reconcile_runs() - runs} reconcile runs later:\n"
                + "\n".join(_balance_line(row) for row in rows),
            )
        )

    def _balances(self, key: Key) -> dict[str, Any]:
        quota_sql, used = self.cluster.database.rows(
            "SELECT tokens_quota, tokens_used FROM api_keys WHERE id = %s", key.id
        )[0]
        live = self.cluster.redis.hmget(quota.acct_key(PREFIX, key.id), "synced", "pending", "held")
        synced, pending, held = (int(v or 0) for v in live)
        cached = self.cluster.redis.get(quota.quota_key(PREFIX, key.id))
        live_quota = int(cached) if cached is not None else None  # None: not cached; the next request loads SQL's
        live_left = (quota_sql if live_quota is None else live_quota) - synced - pending - held
        agree = synced == used and pending == 0 and held == 0 and live_quota in (None, quota_sql)
        redis = (live_quota, synced, pending, held)
        return {"key": key, "sql": (quota_sql, used), "redis": redis, "left": live_left, "agree": agree}

    def report(self) -> bool:
        load = self.tallies["load"]
        nodes = ", ".join(f"{port}: {load.by_node[port]}" for port in self.cluster.ports)
        print()
        print(
            f"steady load ({self.clients} clients, stream and non-stream): {load.text()}; 200s by node {nodes}; "
            f"{load.retried} connections refused and retried on the next node while port {self.cluster.ports[1]} "
            f"restarted ({self.restart_seconds:.1f} s)"
        )
        for check in self.checks:
            print(f"\n{'PASS' if check.ok else 'FAIL'}  {check.name}\n      {check.figures}")
        return all(check.ok for check in self.checks)


def _balance_line(row: dict[str, Any]) -> str:
    quota_sql, used = row["sql"]
    live_quota, synced, pending, held = row["redis"]
    key = row["key"]
    return (
        f"      key #{key.id} ({key.name}): SQL quota {quota_sql:,} used {used:,} left {quota_sql - used:,}"
        f" | Redis quota {'not cached' if live_quota is None else f'{live_quota:,}'} synced {synced:,} "
        f"pending {pending} held {held} left {row['left']:,}"
        f" | {'agree' if row['agree'] else 'DISAGREE'}"
    )


def run(args: argparse.Namespace) -> bool:
    plan = parse_args(["--workers", "1", "--redis-url", args.redis_url, "--app-dir", str(args.app_dir)])
    settings = Settings(plan, args.postgres, args.database, args.nodes, args.reconcile_seconds, args.keep_database)
    with tempfile.TemporaryDirectory(prefix="relaygate-scale-") as tmp, ExitStack() as stack_exit:
        cluster = Cluster(settings, Path(tmp), stack_exit)
        cluster.start()
        test = ScaleTest(cluster, args.clients)
        test.create_keys()
        cluster.wait_ready(test.keys["load"].secret)
        print(f"{args.nodes} nodes on ports {cluster.ports}, 2 Celery workers and beat: up", flush=True)
        test.traffic()
        test.check_rate()
        test.check_ledger()
        test.check_quota()
        test.check_reconcile()
        return test.report()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=3, help="gateway instances")
    p.add_argument("--clients", type=int, default=6, help="threads sending the steady load")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="FLUSHED at start and end; not db 0")
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432", help="server, no database")
    p.add_argument("--database", default="scale13", help="dropped and created afresh (never `test`)")
    p.add_argument("--keep-database", action="store_true", help="leave the database for inspection")
    p.add_argument("--reconcile-seconds", type=float, default=5.0, help="USAGE_RECONCILE_SECONDS for beat")
    p.add_argument("--app-dir", type=Path, default=ROOT, help="gateway source tree to run")
    args = p.parse_args(argv)
    if args.nodes < 2:
        p.error("--nodes must be at least 2 (the second one is restarted)")
    return args


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise BenchError(f"the scale test ran past {BUDGET_SECONDS} s and was stopped")


def main() -> None:
    args = parse()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up when stopped
    signal.alarm(BUDGET_SECONDS)
    print(f"Scale test: about 2 minutes, at most {BUDGET_SECONDS} s", flush=True)
    try:
        ok = run(args)
    except BenchError as exc:
        print(f"scale test failed to run: {exc}", file=sys.stderr)
        sys.exit(2)
    print("\nall checks passed" if ok else "\nA CHECK FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
