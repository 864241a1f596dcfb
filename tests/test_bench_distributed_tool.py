"""tools/bench_distributed.py: a bad allocator option is a usage error before anything runs."""
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_distributed.py"


def test_bad_malloc_threshold_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, str(TOOL), "--malloc-mmap-threshold-mb", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--malloc-mmap-threshold-mb must be at least 1, got 0" in done.stderr
    assert not any(tmp_path.iterdir())  # nothing was generated or partitioned
