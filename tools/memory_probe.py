"""Process memory probes shared by the benchmarks (Linux /proc): resident set size, and a peak
counter that can be reset so that it covers only the code run since."""
from __future__ import annotations

import os


def rss_mb() -> float:
    """Current resident set size (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM; Linux >= 4.0), so that a later
    :func:`peak_mb` is the peak of what ran in between. False where it is not supported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak resident set size (MB) since the process started or the last :func:`reset_peak`."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return float("nan")
