"""CPU time and memory of processes, read from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    # The command name (field 2) is in parentheses and may contain spaces; split after it.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # stat fields 14 and 15


def system_seconds(pid: int) -> float:
    """stime alone: the kernel's share (socket calls, wake-ups) of cpu_seconds."""
    return int(_stat_fields(pid)[12]) / CLOCK_TICKS


def total_cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def total_system_seconds(pids: list[int]) -> float:
    return sum(system_seconds(pid) for pid in pids)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children_of(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if int(_stat_fields(int(name))[1]) == pid:  # field 4: parent pid
                found.append(int(name))
        except (OSError, ValueError):
            continue  # the process ended while we looked
    return sorted(found)


def tree_of(pid: int) -> list[int]:
    """`pid` and every process below it (children, their children, ...)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue += children_of(current)
    return sorted(found)


@dataclass(frozen=True, slots=True)
class MachineTimes:
    busy: int
    total: int


def machine_times() -> MachineTimes:
    """Whole-machine jiffies from /proc/stat: busy (everything but idle and iowait) and total."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])  # guest time is already counted in user
    return MachineTimes(busy=total - idle, total=total)


def busy_fraction(before: MachineTimes, after: MachineTimes) -> float:
    """Share of all cores that was busy between two readings (0..1)."""
    total = after.total - before.total
    return (after.busy - before.busy) / total if total else 0.0


def busy_seconds(before: MachineTimes, after: MachineTimes) -> float:
    """CPU seconds used by everything on the machine between two readings."""
    return (after.busy - before.busy) / CLOCK_TICKS
