"""Peak memory of this process: CUDA's allocator statistics, or the resident set size on CPU."""
from __future__ import annotations

import resource
import sys

import torch

__all__ = ["peak_rss_bytes", "reset_peak", "peak_memory_bytes"]


def peak_rss_bytes() -> int:
    """Maximum resident set size of this process so far (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated CUDA memory on a GPU; on CPU the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return peak_rss_bytes()
