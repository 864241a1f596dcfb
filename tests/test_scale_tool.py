"""tools/bench_scale.py: every stage of a scale recipe measured, in the recipe's own builders."""
import csv
import importlib.util
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "tools" / "bench_scale.py"
_spec = importlib.util.spec_from_file_location("bench_scale_tool", _path)
bench_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_scale)

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "scale"
STAGES_ONE = ["data", "model", "sampler", "step", "eval"]
STAGES_TWO = ["data", "model", "stage1 step", "stage1 eval", "stage1 scores", "sampler", "step", "eval"]


@pytest.mark.parametrize("recipe,stages", [("rbtransformer_csbm10m.yaml", STAGES_ONE),
                                           ("spexphormer_csbm10m.yaml", STAGES_TWO)])
def test_worker_measures_every_stage(recipe, stages):
    rows = bench_scale.worker(str(RECIPES / recipe), 3000, steps=2)
    assert [r["stage"] for r in rows] == stages
    data = rows[0]
    assert data["nodes"] == 3000 and data["edges"] > 3000 * 5  # the recipe's average degree is 10
    # resident_mb may be below 0 here: this process freed earlier tests' memory (the tool runs each
    # size in a fresh process)
    assert data["peak_mb"] >= data["resident_mb"] and all(r["seconds"] >= 0 and r["transient_mb"] >= 0 for r in rows)


def test_worker_overrides_a_mini_batched_stage1_and_half_features():
    rows = bench_scale.worker(str(RECIPES / "spexphormer_csbm10m.yaml"), 3000, steps=2, overrides=[
        "stage1.train.batching=neighbor", "stage1.train.fanouts=[3,3,3]", "stage1.train.batch_size=64",
        "transforms=[{name: cast_features, dtype: float16}, {name: expander, degree: 3}, {name: self_loops}]"])
    assert [r["stage"] for r in rows] == STAGES_TWO
    assert all(isinstance(r["anon_mb"], int) for r in rows)


def test_slope():
    assert bench_scale.slope([1e6, 1e7], [100.0, 1000.0]) == pytest.approx(1.0)
    assert bench_scale.slope([1e6, 3e6, 1e7], [50.0, 50.0, 50.0]) == pytest.approx(0.0)


def test_main_writes_table_csv_and_plot(tmp_path, capsys):
    code = bench_scale.main([str(RECIPES / "rbtransformer_csbm10m.yaml"), "--sizes", "2000", "4000",
                             "--steps", "1", "--out", str(tmp_path)])
    assert code == 0
    with open(tmp_path / "scale.csv") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["nodes"]) for r in rows} == {2000, 4000}
    assert (tmp_path / "scale.png").stat().st_size > 0
    assert "log-log slope" in capsys.readouterr().out
    (tmp_path / "scale.csv").unlink()
    assert bench_scale.main(["--report-only", "--out", str(tmp_path)]) == 0  # from the saved per-run files
    with open(tmp_path / "scale.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert bench_scale.main(["--report-only", "--out", str(tmp_path / "empty")]) == 2


def test_missing_recipe_exits_2(tmp_path):
    assert bench_scale.main([str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
