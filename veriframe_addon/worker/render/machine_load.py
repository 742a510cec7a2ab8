"""How busy this computer is with other people's work: the CPU share that processes other than the worker
use, so ``PAUSE_WHEN_BUSY`` can leave the machine to its owner.

Linux: the machine's busy time from ``/proc/stat`` between two samples, less the CPU time of this
process and its finished children (the worker, its probes and renders, which have exited by the time a
new job is considered), over the wall time of all cores. macOS: the load average per core (there is no
cheap per-process split; the worker is idle while it decides). Elsewhere the share is unknown (None) and
the caller says so.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def _busy_seconds(proc_stat: Path = PROC_STAT) -> float | None:
    """Seconds all cores spent on anything but idle and I/O wait since boot (None without /proc)."""
    try:
        first = proc_stat.read_text(encoding="ascii").splitlines()[0].split()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    if first[:1] != ["cpu"]:
        return None
    ticks = [int(value) for value in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    steal = ticks[7] if len(ticks) > 7 else 0  # another guest's time on a VM: not this machine's work
    busy = sum(ticks[:8]) - idle - steal
    return busy / os.sysconf("SC_CLK_TCK")


class CpuLoad:
    """Samples the share of all cores that other processes use; ``share()`` covers the time since the
    previous call (the first call primes it and returns None)."""

    def __init__(self, proc_stat: Path = PROC_STAT) -> None:
        self.proc_stat = proc_stat
        self.cores = os.cpu_count() or 1
        self._last: tuple[float, float, float] | None = None  # wall, machine busy, own CPU

    def share(self) -> float | None:
        busy = _busy_seconds(self.proc_stat)
        if busy is None:
            return _load_average_share(self.cores)
        sample = (time.monotonic(), busy, _own_cpu_seconds())
        last, self._last = self._last, sample
        if last is None:
            return None
        wall = (sample[0] - last[0]) * self.cores
        if wall <= 0:
            return None
        others = (sample[1] - last[1]) - (sample[2] - last[2])
        return min(1.0, max(0.0, others / wall))


def _own_cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the Blender probes, the renders)."""
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system


def _load_average_share(cores: int) -> float | None:
    try:
        return min(1.0, os.getloadavg()[0] / cores)
    except (AttributeError, OSError):  # Windows has no load average
        return None
