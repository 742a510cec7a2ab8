"""What this machine is, for the backend's record of the worker (``hardware_specs``).

Read from the OS without any extra package: the CPU model (``/proc/cpuinfo`` on Linux, the platform
string elsewhere), cores and memory. GPUs are what each Blender's Cycles sees (``inventory.py``).
"""

from __future__ import annotations

import platform
from pathlib import Path

from ..limits import machine_memory_bytes


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's name, e.g. ``AMD EPYC 7B13``; the platform's own string where there is no cpuinfo."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def ram_gb() -> float | None:
    """The machine's memory in GB (None where the OS does not say)."""
    total = machine_memory_bytes()
    return round(total / 1e9, 1) if total else None
