"""Memory of this process: resident set size, its peak (resettable on Linux), and the peak a
training device reports (CUDA's allocator statistics, or the resident peak on CPU).

The one place benchmarks, the training loop and the distributed trainer read memory from.
"""
from __future__ import annotations

import os
import resource
import sys

__all__ = ["rss_mb", "rss_parts_mb", "peak_rss_bytes", "peak_rss_mb", "reset_peak_rss", "reset_peak", "peak_memory_bytes"]


def rss_mb() -> float:
    """Current resident set size (MB; Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_parts_mb() -> dict[str, float]:
    """The resident set by kind (MB; Linux ``/proc/self/status``, empty elsewhere): ``anon``
    (this process's own heap: private), ``file`` (mapped files and libraries) and ``shmem``
    (shared memory, e.g. a DistDGL server's partition that the trainers of its host map)."""
    parts = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "RssShmem"):
                    parts[key[3:].lower()] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return parts


def peak_rss_bytes() -> int:
    """Peak resident set size since the process started or the last :func:`reset_peak_rss`
    (bytes): the kernel's VmHWM where readable, else ``getrusage``'s lifetime maximum."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def peak_rss_mb() -> float:
    """:func:`peak_rss_bytes` in MB."""
    return peak_rss_bytes() / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM; Linux >= 4.0), so that a later
    :func:`peak_rss_bytes` is the peak of what ran in between. False where it is not supported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def reset_peak(device) -> None:
    """Reset the peak counter :func:`peak_memory_bytes` reads for ``device`` (CUDA only)."""
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device) -> int:
    """Peak allocated CUDA memory on a GPU; on CPU the process's peak resident set size."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device)
    return peak_rss_bytes()
