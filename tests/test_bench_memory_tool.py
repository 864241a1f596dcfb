"""tools/bench_memory.py: the arithmetic floor, the summary lines and the pooling of rounds."""
import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dgl_rbgt.nn.functional.memory import MemoryWeights, memory_recurrence

_path = Path(__file__).resolve().parents[1] / "tools" / "bench_memory.py"
_spec = importlib.util.spec_from_file_location("bench_memory_tool", _path)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("p, m", [(64, 16), (32, 64), (128, 8)])
def test_arithmetic_ratio_counts_what_the_two_stacks_multiply(p, m):
    """The formula against torch's count of the matrix products of both benchmarked stacks (one
    layer, whole segments, forward), so the floor the table prints is the one the code runs."""
    torch.manual_seed(0)
    n = 6 * p
    x = torch.randn(n, bench.D_MODEL)
    w = bench._weights(1, m, torch.device("cpu"), grad=False)
    rba = _flops(lambda: bench._rba_stack(x, w, p))
    memory = _flops(lambda: memory_recurrence(x, MemoryWeights(*w), bench.HEADS, p))
    assert rba > 0 and memory / rba == pytest.approx(bench.arithmetic_ratio(p, m), rel=1e-9)


def test_the_compiled_variant_is_opt_in_and_compared_with_diagonal():
    """``compiled`` (torch.compile of the cell) is not in the default sweep, and where it ran the
    summary prints its time over the uncompiled diagonal schedule's."""
    assert "compiled" in bench.VARIANTS and "compiled" not in bench.DEFAULT_VARIANTS
    row = dict(mode="train", n=10_000, L=2, p=64, m=16, status="ok", runs=3)
    rows = [row | dict(variant="diagonal", median_ms=100.0), row | dict(variant="compiled", median_ms=125.0)]
    (line,) = [s for s in bench.summarise(rows) if "N=10000" in s]
    assert "compiled/diagonal 1.25x" in line


def test_chains_are_their_own_rows_and_rba_is_shared():
    """``--chains``: each chain count gets its own line against the same RBA row, and the schedule
    speed-up targets (set for one recurrence per graph) are judged on ``chains=1`` only."""
    base = dict(mode="train", n=100_000, L=4, p=64, m=16, status="ok", runs=3)
    rows = [base | dict(variant="rba", m="", chains="", median_ms=100.0)]
    for chains, diag, seq in ((1, 200.0, 400.0), (4, 130.0, 150.0)):
        rows += [base | dict(variant="diagonal", chains=chains, median_ms=diag),
                 base | dict(variant="sequential", chains=chains, median_ms=seq)]
    lines = [s for s in bench.summarise(rows) if "N=100000" in s]
    (one,) = [s for s in lines if "chains" not in s]
    (four,) = [s for s in lines if "chains=4" in s]
    assert "chains" not in one and "diagonal/rba 2.00x" in one and "target >= 1.3x: met" in one
    assert "chains=4" in four and "diagonal/rba 1.30x" in four and "target >= 1.3x" not in four


def test_rounds_pool_their_times_and_keep_the_largest_peak():
    """``--rounds``: a configuration's fresh processes give one row, the median over all their
    timed runs and the largest peak; a failed round makes the row failed, not silently shorter."""
    base = dict(variant="diagonal", mode="train", n=10_000, L=2, p=64, m=16, chains=1, status="ok", steps=158)
    rounds = [base | dict(times=[0.10, 0.30], peak_mb=5.0, work_mb=4.0),
              base | dict(times=[0.20], peak_mb=7.0, work_mb=6.0)]
    row = bench.pool_rounds(rounds)
    assert row["median_ms"] == pytest.approx(200.0) and row["runs"] == 3
    assert (row["min_ms"], row["max_ms"]) == (pytest.approx(100.0), pytest.approx(300.0))
    assert (row["peak_mb"], row["work_mb"]) == (7.0, 6.0) and "times" not in row
    failed = base | dict(status="timeout>900s")
    assert bench.pool_rounds([rounds[0], failed])["status"] == "timeout>900s"


@pytest.mark.parametrize("rounds", ["0", "-1"])
def test_rounds_below_one_are_refused_with_one_line(rounds, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--rounds", rounds])
    assert exc.value.code == 2 and f"--rounds must be >= 1, got {rounds}" in capsys.readouterr().err
