"""Where a gunicorn worker's CPU goes, from py-spy's raw (collapsed stack) output.

Each line of `py-spy record --format raw` is `frame;frame;...;frame COUNT`, outermost first, with
frames like `handle_request (gunicorn/workers/base_async.py:106)`. Percentages are of the sampled
(non-idle) time, and microseconds per request spread the measured CPU per request over them.

    python bench/profile_summary.py PROFILE.txt [--cpu-ms-per-request 1.9]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>.*?)(?::\d+)?\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "/lib/python3" else rest
    return path


def frame_name(frame: str) -> str:
    """`func (short/path.py)`: line numbers dropped so that one function is one row."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['func']} ({_short_path(match['path'])})"


def area_of(frame: str) -> str:
    """The package (or app module) a frame belongs to: `gevent`, `app.relay.stream`, `json`, ..."""
    match = _FRAME.match(frame)
    if match is None:
        return "?"
    short = _short_path(match["path"])
    if short.startswith("app/"):
        return short.removesuffix(".py").replace("/", ".")
    return short.split("/", 1)[0].removesuffix(".py")


# Samples that py-spy counts as busy although the thread is waiting, set apart so that shares are of CPU:
# - a send() on loopback wakes the receiver (Redis, the fake upstream, wrk), the scheduler runs it at
#   once on the same core, and the worker waits, runnable, inside send(): perf shows the kernel at about
#   5% of worker CPU while py-spy shows send() in 20-30% of samples;
# - gevent's threadpool thread (used for DNS look-ups) idles in a timed lock wait between jobs.
OFF_CPU_LEAVES = ("SocketMixin.send (", "acquire_with_timeout (gevent/")


def split_off_cpu(stacks: list[tuple[list[str], int]]) -> tuple[list[tuple[list[str], int]], int]:
    on_cpu = [(frames, n) for frames, n in stacks if not frames[-1].startswith(OFF_CPU_LEAVES)]
    return on_cpu, sum(n for _, n in stacks) - sum(n for _, n in on_cpu)


def summarize(stacks: list[tuple[list[str], int]], cpu_ms_per_request: float | None, top: int = 25) -> list[str]:
    stacks, waiting = split_off_cpu(stacks)
    total = sum(count for _, count in stacks)
    if not total:
        return ["(no samples)"]
    own, inclusive, areas = Counter(), Counter(), Counter()
    for frames, count in stacks:
        own[frame_name(frames[-1])] += count
        areas[area_of(frames[-1])] += count
        for name in {frame_name(f) for f in frames}:
            inclusive[name] += count

    def cost(count: int) -> str:
        share = count / total
        per_request = f"{share * cpu_ms_per_request * 1000:7.0f} us/req  " if cpu_ms_per_request else ""
        return f"{share:6.1%}  {per_request}"

    lines = [
        f"{total} on-CPU samples ({waiting} more were waiting in send() or an idle thread, left out)"
        + (f", {cpu_ms_per_request:.3f} ms CPU per request" if cpu_ms_per_request else "")
    ]
    lines += ["", "Own time by package / app module:"]
    lines += [f"  {cost(c)}{name}" for name, c in areas.most_common(top)]
    lines += ["", "Own time by function:"]
    lines += [f"  {cost(c)}{name}" for name, c in own.most_common(top)]
    lines += ["", "Inclusive time by function:"]
    lines += [f"  {cost(c)}{name}" for name, c in inclusive.most_common(top * 2)]
    return lines


def callees(stacks: list[tuple[list[str], int]], parent: str) -> Counter[str]:
    """Inclusive samples of each function called directly by `parent` (a frame_name prefix), plus its own."""
    found: Counter[str] = Counter()
    for frames, count in stacks:
        names = [frame_name(f) for f in frames]
        index = next((i for i, name in enumerate(names) if name.startswith(parent)), None)
        if index is not None:
            found[names[index + 1] if index + 1 < len(names) else "(own time)"] += count
    return found


def breakdown(stacks: list[tuple[list[str], int]], parents: tuple[str, ...], cpu_ms: float | None) -> list[str]:
    """The callees of each parent in turn: where one step of the request spends its time."""
    stacks, _ = split_off_cpu(stacks)
    total = sum(count for _, count in stacks) or 1
    lines = []
    for parent in parents:
        found = callees(stacks, parent)
        if not found:
            continue
        lines += ["", f"Inside {parent}:"]
        for name, count in found.most_common(12):
            per_request = f"{count / total * cpu_ms * 1000:7.0f} us/req  " if cpu_ms else ""
            lines.append(f"  {count / total:6.1%}  {per_request}{name}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="Summarize a py-spy raw profile of a gateway worker.")
    parser.add_argument("profile", type=Path, nargs="+")
    parser.add_argument("--cpu-ms-per-request", type=float)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--inside", action="append", default=[], help="show the callees of this function")
    args = parser.parse_args()
    stacks = [s for path in args.profile for s in parse(path)]
    print("\n".join(summarize(stacks, args.cpu_ms_per_request, args.top)))
    print("\n".join(breakdown(stacks, tuple(args.inside), args.cpu_ms_per_request)))


if __name__ == "__main__":
    main()
