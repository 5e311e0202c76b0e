"""This process's peak memory, for the figures runs and benchmarks report."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

PROC_STATUS = Path("/proc/self/status")


def peak_rss_bytes() -> int:
    """The peak resident set of this process's own address space (Linux: VmHWM). Not
    `getrusage`'s ru_maxrss, which Linux carries across exec: a process that subprocess starts
    (vfork, then exec) from a large parent reports the parent's peak as its own. Elsewhere,
    ru_maxrss is the best there is."""
    if PROC_STATUS.exists():
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
