"""tools/bench_allocator.py: each allocator's settings reach its worker, and the table is written."""
import csv
import importlib.util
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "tools" / "bench_allocator.py"
_spec = importlib.util.spec_from_file_location("bench_allocator_tool", _path)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_tunables_per_allocator():
    assert bench.tunables("adaptive", 16) is None
    assert bench.tunables("fixed", 16) == "glibc.malloc.mmap_threshold=16777216"
    assert bench.tunables("fixed+thp", 4) == "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=4194304"


@pytest.mark.parametrize("argv, message", [
    (["--steps", "1"], "--steps must be at least 2"),
    (["--nodes", "0"], "--nodes must be at least 1"),
    (["--threshold-mb", "-1"], "--threshold-mb must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
])
def test_bad_options_are_usage_errors(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        bench.main([*argv, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_small_run_writes_a_row_per_allocator(tmp_path, capsys):
    """A 3,000-node batch: every allocator runs in its own process and reports a sane step."""
    assert bench.main(["--nodes", "3000", "--steps", "2", "--threads", "1", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "allocator.csv")))
    assert [r["allocator"] for r in rows] == list(bench.ALLOCATORS)
    for r in rows:
        assert 0 < float(r["step_s"]) < 60 and float(r["step_peak_mb"]) >= 0
    assert (tmp_path / "allocator.png").stat().st_size > 0
    assert "time / adaptive" in capsys.readouterr().out
