"""tools/accuracy.py: the seed-by-seed comparison that settings are chosen with."""
import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "tools" / "accuracy.py"
_spec = importlib.util.spec_from_file_location("accuracy_tool", _path)
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)


def _row(recipe, variant, seed, val, val_loss):
    return {"recipe": recipe, "variant": variant, "seed": seed, "val": val, "val_loss": val_loss}


def test_paired_differences_match_seeds_and_give_the_standard_error():
    rows = [_row("a", "off", 0, 0.50, 1.0), _row("a", "off", 1, 0.60, 2.0), _row("a", "off", 2, 0.70, 3.0),
            _row("a", "on", 0, 0.52, 0.9), _row("a", "on", 1, 0.61, 1.9), _row("a", "on", 2, 0.74, 3.1),
            _row("a", "on", 3, 0.99, 0.0),  # no baseline run for seed 3: left out
            _row("b", "on", 0, 0.10, 1.0)]  # no baseline for recipe b at all
    (p,) = accuracy.paired_differences(rows, "off")
    assert (p["recipe"], p["variant"], p["seeds"]) == ("a", "on", 3)
    diffs = [2.0, 1.0, 4.0]  # points
    assert p["val_diff"] == pytest.approx(7.0 / 3)
    mean = 7.0 / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
    assert p["val_diff_se"] == pytest.approx(se)
    assert p["val_loss_diff"] == pytest.approx((-0.1 - 0.1 + 0.1) / 3)


def test_paired_with_an_unknown_label_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        accuracy.main([str(tmp_path / "r.yaml"), "--variant", "on:model.attn_gate=true",
                       "--paired-with", "off", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--paired-with 'off' is not one of the variants' labels (on)" in capsys.readouterr().err


def _recipe(tmp_path, dataset: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\ndataset:\n{dataset}model:\n  name: gcn\n")
    return path


@pytest.mark.parametrize("dataset, description, run_3", [
    ("  name: minesweeper\n", "10 fixed splits", ["seed=3", "dataset.split=3"]),
    ("  name: photo\n", "10 seeded random splits", ["seed=3", "dataset.seed=3"]),
    ("  name: cora\n  seed: 123\n  params: {split_type: random}\n", "10 training seeds", ["seed=3"]),
    ("  name: tolokers\n  params: {split_type: random}\n", "10 training seeds", ["seed=3"]),
])
def test_protocol_runs_follow_the_dataset(tmp_path, dataset, description, run_3):
    """Fixed splits vary the split, seeded splits the split seed, the rest only the training seed."""
    got, runs = accuracy.protocol_runs(_recipe(tmp_path, dataset))
    assert got == description and [i for i, _ in runs] == list(range(10))
    assert runs[3][1] == run_3


def test_protocol_follows_the_split_that_set_chooses(tmp_path):
    """A recipe with a drawn split runs the fixed splits' protocol when --set chooses those."""
    recipe = _recipe(tmp_path, "  name: actor\n  params: {split_type: class_balanced, train_frac: 0.5}\n")
    assert accuracy.protocol_runs(recipe)[0] == "10 training seeds"
    got, runs = accuracy.protocol_runs(recipe, overrides=["dataset.params={split_type: fixed}"])
    assert got == "10 fixed splits" and runs[3][1] == ["seed=3", "dataset.split=3"]


def test_side_by_side_puts_models_in_columns(tmp_path, capsys):
    summary = [
        {"recipe": "gcn_a", "variant": "default", "metric": "accuracy", "protocol": "p", "test_mean": 80.0,
         "test_std": 1.0, "published": "81.5"},
        {"recipe": "gps_a", "variant": "default", "metric": "accuracy", "protocol": "p", "test_mean": 82.0,
         "test_std": 0.5, "published": "85.1"},
        {"recipe": "gcn_b", "variant": "default", "metric": "roc_auc", "protocol": "q", "test_mean": 97.0,
         "test_std": 0.2, "published": ""},
    ]
    identity = {"gcn_a": ("cora", "gcn"), "gps_a": ("cora", "gps"), "gcn_b": ("minesweeper", "gcn")}
    accuracy.side_by_side(summary, identity, tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "dataset,metric,protocol,gcn,gps,best published"
    assert lines[1] == "cora,accuracy,p,80.00 ± 1.00,82.00 ± 0.50,85.1"
    assert lines[2] == "minesweeper,roc_auc,q,97.00 ± 0.20,,"
    assert "| cora | accuracy | p | 80.00 ± 1.00 | 82.00 ± 0.50 | 85.1 |" in capsys.readouterr().out


def test_run_ids_outside_the_protocol_are_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        accuracy.main([str(_recipe(tmp_path, "  name: minesweeper\n")), "--protocol", "--run-ids", "3", "10",
                       "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--run-ids [10] are not runs of the protocol (0 to 9)" in capsys.readouterr().err


def test_a_run_made_by_other_library_code_is_not_reused(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    cmd = ["python", "-m", "dgl_rbgt", "train", str(recipe), "--run-dir", "d", "--no-progress", "--set", "seed=0"]
    before = accuracy.run_key(recipe, cmd, accuracy.source_digest(package))
    assert before == accuracy.run_key(recipe, cmd[:6] + ["elsewhere"] + cmd[7:], accuracy.source_digest(package))
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert accuracy.run_key(recipe, cmd, accuracy.source_digest(package)) != before


@pytest.mark.parametrize("mode", [["--protocol"], ["--seeds", "0"]])
def test_a_missing_recipe_is_a_usage_error(tmp_path, capsys, mode):
    with pytest.raises(SystemExit) as exit_:
        accuracy.main([str(tmp_path / "missing.yaml"), *mode, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_published_number_and_dataset_follow_set(tmp_path):
    """A recipe run on another dataset with --set is labelled with that dataset and does not
    quote the number published for its own."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# GCN on Actor. Published: 37.9\nname: r\ndataset:\n  name: actor\nmodel:\n  name: gcn\n")
    assert accuracy.published(recipe) == "37.9"
    assert accuracy.published(recipe, ["seed=1"]) == "37.9"
    assert accuracy.published(recipe, ["dataset.name=texas"]) == ""
    assert accuracy.recipe_identity(recipe, ["dataset.name=texas"]) == ("texas", "gcn")


def _fake_training(calls: list):
    """A stand-in for the training subprocess: writes a run's summary.json and records its folder."""
    def run(cmd, **kwargs):
        run_dir = Path(cmd[cmd.index("--run-dir") + 1])
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps({
            "metric": "accuracy", "test_metric": 0.5, "val_metric": 0.5, "val_loss": 1.0, "best_epoch": 1,
            "median_epoch_seconds": 0.1, "peak_memory_mb": 1.0}))
        calls.append(run_dir)
        return subprocess.CompletedProcess(cmd, 0, stdout="ok", stderr="")
    return run


def test_runs_under_other_set_options_keep_their_own_folders(tmp_path, monkeypatch):
    """Two invocations sharing --out with different --set (another dataset) never replace each
    other's runs; the same options find and reuse theirs."""
    calls = []
    monkeypatch.setattr(accuracy.subprocess, "run", _fake_training(calls))
    recipe = _recipe(tmp_path, "  name: actor\n")
    for sets in (["dataset.name=texas"], ["dataset.name=cornell"], ["dataset.name=texas"]):
        accuracy.main([str(recipe), "--seeds", "0", "--out", str(tmp_path / "out"),
                       *[arg for s in sets for arg in ("--set", s)]])
    assert len(calls) == 2 and calls[0] != calls[1]  # the third call reused the first's run
    assert all((d / "summary.json").is_file() for d in calls)


def test_a_finished_run_that_cannot_be_reused_is_kept_aside(tmp_path, monkeypatch, capsys):
    """A finished run made from another recipe text is moved to replaced/, not deleted; an
    unfinished one is removed."""
    monkeypatch.setattr(accuracy.subprocess, "run", _fake_training([]))
    recipe = _recipe(tmp_path, "  name: actor\n")
    out = tmp_path / "out"
    accuracy.main([str(recipe), "--seeds", "0", "--out", str(out)])
    (run_dir,) = [d for d in (out / "runs").iterdir() if d.name != "replaced"]
    (run_dir / "metrics.csv").write_text("epoch\n0\n")
    recipe.write_text(recipe.read_text() + "# edited\n")
    accuracy.main([str(recipe), "--seeds", "0", "--out", str(out)])
    (kept,) = (out / "runs" / "replaced").iterdir()
    assert kept.name.startswith(run_dir.name) and (kept / "metrics.csv").is_file()
    assert (run_dir / "summary.json").is_file() and not (run_dir / "metrics.csv").exists()
    assert "kept at" in capsys.readouterr().out
    (run_dir / "summary.json").unlink()  # an unfinished run is not kept
    accuracy.main([str(recipe), "--seeds", "0", "--out", str(out)])
    assert len(list((out / "runs" / "replaced").iterdir())) == 1


def test_a_variant_splits_its_settings_at_commas_outside_brackets():
    assert accuracy.parse_variant("deep:model.layers=6,neighbour_tables.ks=[12,5,5],train.lr=0.01") == (
        "deep", ["model.layers=6", "neighbour_tables.ks=[12,5,5]", "train.lr=0.01"])
    assert accuracy.parse_variant("base:") == ("base", [])
    assert accuracy.parse_variant("t:dataset.params={split_type: fixed, seed: 1}") == (
        "t", ["dataset.params={split_type: fixed, seed: 1}"])


def test_a_variant_with_an_unclosed_bracket_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        accuracy.main([str(tmp_path / "r.yaml"), "--variant", "deep:neighbour_tables.ks=[12,5,model.layers=6",
                       "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--variant 'deep:neighbour_tables.ks=[12,5,model.layers=6': unbalanced brackets" in capsys.readouterr().err
