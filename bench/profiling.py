"""Optional: extra gateway runs under py-spy, summarized as CPU per request by package, function and step."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from loadgen import BenchError
from measure import measure
from plan import VENV_BIN
from profile_summary import breakdown, parse, summarize
from stack import Stack

PROFILE_STEPS = (
    "AsyncWorker.handle_request",
    "Flask.wsgi_app",
    "chat_completions ",
    "_complete ",
    "_stream ",
    "StreamRelay.__iter__",
    "Celery.send_task",
    "open_upstream",
)


def _start_spies(stack: Stack, files: list[Path]) -> list[subprocess.Popen[bytes]]:
    # Blocking mode (py-spy pauses the worker for each sample) gives consistent stacks; 200 Hz costs ~1-2%.
    seconds = stack.plan.warmup + stack.plan.duration + 1
    return [
        subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "-p", str(pid), "-r", "200", "-d", str(seconds), "-f", "raw"]
            + ["-o", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, path in zip(stack.workers, files, strict=True)
    ]


def profile_kind(stack: Stack, kind: str, out_dir: Path) -> Path:
    """One extra c=50 gateway run with py-spy on every worker; writes and returns profile-<kind>.md."""
    stem = f"{stack.plan.out.stem}-profile-{kind}"
    files = [out_dir / f"{stem}-w{i}.txt" for i in range(len(stack.workers))]
    spies = _start_spies(stack, files)
    time.sleep(0.5)  # let py-spy attach before the load starts
    measured = measure(stack, "gateway", kind, 50)
    for spy in spies:
        spy.wait(stack.plan.duration + 30)
    stacks = [s for path in files if path.exists() for s in parse(path)]
    title = f"py-spy, {kind}, c=50, {measured.wrk.rps:,.0f} req/s under the profiler"
    lines = [
        title,
        *summarize(stacks, measured.server_cpu_ms),
        *breakdown(stacks, PROFILE_STEPS, measured.server_cpu_ms),
    ]
    out = out_dir / f"{stem}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines[:12]) + f"\n  ... full profile in {out}", flush=True)
    return out


def run_profiles(stack: Stack, out_dir: Path) -> list[str]:
    if not (VENV_BIN / "py-spy").exists():
        raise BenchError(f"--profile needs py-spy: {VENV_BIN / 'pip'} install py-spy==0.4.3")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [profile_kind(stack, kind, out_dir) for kind in stack.plan.kinds]
    return [
        f"py-spy profile of an extra c=50 gateway run ({kind}): {p}"
        for kind, p in zip(stack.plan.kinds, paths, strict=True)
    ]
