"""tools/bench_backbone.py: the backbone, RBTransformer and the tuned GNNs at the same width."""
import csv
import importlib.util
import math
from pathlib import Path

import pytest

from dgl_rbgt.config import parse_recipe

_path = Path(__file__).resolve().parents[1] / "tools" / "bench_backbone.py"
_spec = importlib.util.spec_from_file_location("bench_backbone_tool", _path)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("model", sorted(bench.MODELS))
@pytest.mark.parametrize("dataset", sorted(bench.DATASETS))
def test_every_configuration_is_a_valid_recipe_at_the_given_width(dataset, model):
    recipe = parse_recipe(bench.recipe_dict(dataset, model, hidden=96, layers=3, attention_every=2,
                                            csbm_nodes=1000))
    assert recipe.model.hidden == 96
    depth = recipe.model.gnn_layers if recipe.model.name == "rbtransformer" else recipe.model.layers
    assert depth == 3
    if recipe.model.name == "gps":
        assert recipe.model.attention == model.split("-", 1)[1]
        assert recipe.model.block == "tuned" and recipe.model.ego
        if recipe.model.attention != "none":
            assert recipe.model.attention_every == 2


def test_ratios_are_relative_to_the_first_model_of_each_dataset():
    rows = [{"dataset": "a", "status": "ok", "step_s": 2.0, "peak_mb": 100.0},
            {"dataset": "a", "status": "failed: x"},
            {"dataset": "a", "status": "ok", "step_s": 5.0, "peak_mb": 150.0},
            {"dataset": "b", "status": "ok", "step_s": 1.0, "peak_mb": 0.0}]
    bench.add_ratios(rows)
    assert [rows[0]["step_ratio"], rows[2]["step_ratio"], rows[2]["peak_ratio"]] == [1.0, 2.5, 1.5]
    assert rows[3]["step_ratio"] == 1.0 and math.isnan(rows[3]["peak_ratio"])
    assert "step_ratio" not in rows[1]


def test_a_run_writes_its_table_csv_and_plot(tmp_path, capsys):
    code = bench.main(["--datasets", "csbm", "--csbm-nodes", "600", "--models", "gcn", "gps-rba",
                       "--layers", "2", "--repeats", "1", "--out", str(tmp_path)])
    assert code == 0
    with open(tmp_path / "bench_backbone.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["status"]) for r in rows] == [("gcn", "ok"), ("gps-rba", "ok")]
    assert float(rows[0]["step_ratio"]) == 1.0 and float(rows[1]["step_s"]) > 0
    assert int(rows[0]["nodes"]) == 600 and int(rows[1]["params"]) > int(rows[0]["params"])
    assert (tmp_path / "bench_backbone.png").stat().st_size > 0
    assert "gps-rba" in capsys.readouterr().out


def test_bad_arguments_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--hidden", "0", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--hidden must be >= 1, got 0" in capsys.readouterr().err
