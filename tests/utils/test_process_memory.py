"""dgl_rbgt.utils.memory: the resident set, its peak and its parts, read from /proc."""
import mmap
import sys

import numpy as np
import pytest

from dgl_rbgt.utils.memory import peak_rss_mb, reset_peak_rss, rss_mb, rss_parts_mb

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux_only
def test_a_touched_array_is_anonymous_memory_and_raises_the_peak():
    before, peak_before = rss_parts_mb(), peak_rss_mb()
    # 64 MB of fresh pages, every one written: a new mapping, not the allocator's, which may hand
    # back pages an earlier test freed but kept resident (then the anonymous set would not grow)
    block = np.frombuffer(mmap.mmap(-1, 64 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), dtype=np.uint8)
    block[:] = 1
    after = rss_parts_mb()
    assert after["anon"] - before["anon"] == pytest.approx(64, abs=8)
    assert after["shmem"] - before["shmem"] == pytest.approx(0, abs=2)
    assert sum(after.values()) == pytest.approx(rss_mb(), abs=2)  # the parts make up the resident set
    assert peak_rss_mb() >= max(peak_before, rss_mb() - 1)
    del block
    if reset_peak_rss():
        assert peak_rss_mb() < rss_mb() + 16
