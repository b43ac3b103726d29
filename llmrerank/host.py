"""What this host is, for measurements kept per CPU (the int8 check, the backend timing, the
benchmarks): a figure measured on one CPU model is not trusted on another."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["host_cpu"]


def host_cpu() -> str:
    """This host's CPU model name, as ``lscpu`` shows it (``platform`` where there is no
    ``/proc/cpuinfo``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
