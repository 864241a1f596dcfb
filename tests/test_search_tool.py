"""tools/search.py: an Optuna search over a recipe that selects on validation only."""
import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

import dgl_rbgt.train.pipeline as pipeline

_path = Path(__file__).resolve().parents[1] / "tools" / "search.py"
_spec = importlib.util.spec_from_file_location("search_tool", _path)
search = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(search)

RECIPE = {"name": "tiny", "seed": 0,
          "dataset": {"name": "csbm", "params": {"num_nodes": 200, "num_classes": 3, "feature_dim": 8}},
          "model": {"name": "gcn", "hidden": 8},
          "train": {"epochs": 3, "threads": 1},
          "output": {"plot": False}}
SPACE = {"search": {"model.dropout": {"float": [0.0, 0.7]}, "train.lr": {"log_float": [1e-3, 1e-1]},
                    "model.norm": {"choice": ["none", "layer"]}, "model.layers": {"int": [1, 2]}}}


class NoTest(dict):
    """A run summary whose test numbers must not be read by the search."""

    def __getitem__(self, key):
        assert not key.startswith("test"), f"the search read {key}"
        return super().__getitem__(key)

    def get(self, key, default=None):
        assert not key.startswith("test"), f"the search read {key}"
        return super().get(key, default)


@pytest.fixture
def files(tmp_path, monkeypatch):
    real = pipeline.run_recipe

    def guarded(*args, **kwargs):
        result = real(*args, **kwargs)
        result.summary = NoTest(result.summary)
        return result

    monkeypatch.setattr(pipeline, "run_recipe", guarded)
    recipe, space = tmp_path / "tiny.yaml", tmp_path / "space.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    space.write_text(yaml.safe_dump(SPACE))
    return recipe, space


def test_two_trials_record_validation_only_and_repeat(files, tmp_path, capsys):
    recipe, space = files
    assert search.main([str(recipe), str(space), "--trials", "2", "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    with (tmp_path / "a" / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    for row in rows:
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert float(row["val_metric"]) == summary["val_metric"]
        assert float(row["val_loss"]) == summary["val_loss"]
    assert not any("test" in column for column in rows[0])
    import optuna

    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'a' / 'study.db'}")
    assert [t.value for t in study.trials] == [float(r["val_metric"]) for r in rows]  # objective = val metric
    best = json.loads((tmp_path / "a" / "best.json").read_text())
    assert best["value"] == max(float(r["val_metric"]) for r in rows)
    assert printed[-1] == " ".join(f"--set {s}" for s in best["set"])
    assert all(s.split("=")[0] in SPACE["search"] for s in best["set"])

    # --trials 0 reports the study as it stands (e.g. a search stopped by hand) without a new trial.
    (tmp_path / "a" / "best.json").unlink()
    assert search.main([str(recipe), str(space), "--trials", "0", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "best.json").read_text())["value"] == best["value"]
    assert len(optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'a' / 'study.db'}").trials) == 2

    # The seeded sampler draws the same trials again.
    assert search.main([str(recipe), str(space), "--trials", "2", "--out", str(tmp_path / "b")]) == 0
    with (tmp_path / "b" / "trials.csv").open() as f:
        again = list(csv.DictReader(f))
    keys = list(SPACE["search"])
    assert [[r[k] for k in keys] for r in again] == [[r[k] for k in keys] for r in rows]


@pytest.mark.parametrize("space, message", [
    ({"model.dropout": {"uniform": [0, 1]}}, r"model\.dropout: unknown distribution 'uniform'"),
    ({"model.dropout": {"float": [0.5, 0.1]}}, r"float needs \[low, high\] with low < high"),
    ({"train.lr": {"log_float": [0.0, 0.1]}}, r"log_float needs low > 0"),
    ({"model.layers": {"int": [1, 2.5]}}, r"int needs integer bounds"),
    ({"model.colour": {"choice": ["red"]}}, r"model\.colour='red': .*unknown key"),
    ({"model.dropout": {"float": [0.0, 1.5]}}, r"model\.dropout=1\.5: .*dropout"),
    ({"search": []}, r"expected a non-empty mapping"),
])
def test_bad_space_is_one_line_and_exit_2(files, tmp_path, capsys, space, message):
    recipe, path = files
    path.write_text(yaml.safe_dump(space))
    assert search.main([str(recipe), str(path), "--trials", "1", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "s").exists()  # nothing ran


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        search.main(["--help"])
    assert exit_.value.code == 0 and "validation" in capsys.readouterr().out


def test_runs_select_on_the_mean_validation_of_protocol_runs(files, tmp_path):
    recipe, space = files
    assert search.main([str(recipe), str(space), "--trials", "1", "--runs", "0", "2", "--out", str(tmp_path / "r")]) == 0
    with (tmp_path / "r" / "trials.csv").open() as f:
        row, = list(csv.DictReader(f))
    summaries = [json.loads((Path(row["run_dir"]) / f"r{i}" / "summary.json").read_text()) for i in (0, 2)]
    # csbm has no fixed splits: protocol run i is training seed i.
    seeds = [yaml.safe_load((Path(row["run_dir"]) / f"r{i}" / "recipe.yaml").read_text())["seed"] for i in (0, 2)]
    assert seeds == [0, 2]
    assert float(row["val_metric"]) == pytest.approx(sum(s["val_metric"] for s in summaries) / 2, rel=1e-12)
    assert json.loads((tmp_path / "r" / "best.json").read_text())["runs"] == [0, 2]


def test_zero_trials_needs_an_earlier_search(files, tmp_path, capsys):
    recipe, space = files
    assert search.main([str(recipe), str(space), "--trials", "0", "--out", str(tmp_path / "none")]) == 2
    assert "--trials must be >= 1, or 0 with the --out of an earlier search" in capsys.readouterr().err


@pytest.mark.parametrize("runs", [["0", "0"], ["-1"]])
def test_bad_runs_are_one_line_and_exit_2(files, tmp_path, capsys, runs):
    recipe, space = files
    assert search.main([str(recipe), str(space), "--trials", "1", "--runs", *runs, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--runs" in err
    assert not (tmp_path / "s").exists()


SHIPPED_SPACES = sorted((_path.parents[1] / "recipes" / "search").glob("*.yaml"))


def usage_command(space: Path) -> tuple[Path, list[str]]:
    """The recipe and the ``--set`` overrides of the ``tools/search.py`` command in a space's header."""
    lines = [line.lstrip("#").strip() for line in space.read_text().splitlines() if line.startswith("#")]
    text = " ".join(line.rstrip("\\").strip() for line in lines)
    named = re.search(r"tools/search\.py (recipes/\S+\.yaml) \S+(.*)", text)
    assert named, f"{space.name}: the header shows a tools/search.py command on a shipped recipe"
    return _path.parents[1] / named.group(1), re.findall(r"--set (\S+)", named.group(2))


@pytest.mark.parametrize("space", SHIPPED_SPACES, ids=lambda p: p.name)
def test_shipped_spaces_fit_the_recipes_of_their_model(space):
    """Every bound and choice of a shipped search space is a valid setting of the recipe its usage
    line searches (with that line's --set overrides: the documented command runs), and of every
    other shipped recipe of that model with an input projection (the same check the tool runs
    before its first trial; a GPS recipe without one refuses attention in its first layer)."""
    root = _path.parents[1]
    parsed = search.parse_space(yaml.safe_load(space.read_text()))
    assert space.read_text().startswith("#")  # says what it searches and how to run it
    named, sets = usage_command(space)
    search.check_space_against_recipe(named, parsed, [s for s in sets if not s.startswith("train.threads")])
    model = yaml.safe_load(named.read_text())["model"]["name"]
    recipes = []
    for path in sorted((root / "recipes").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if "dataset" in data and data.get("model", {}).get("name") == model:
            recipes.append(path)
            if data["model"].get("input_projection", True):
                search.check_space_against_recipe(path, parsed, [])
    assert named in recipes and len(recipes) >= 2


def test_start_from_recipe_makes_the_recipes_values_the_first_trial(files, tmp_path, capsys):
    recipe, space = files
    own = {"model.dropout": 0.3, "train.lr": 0.02, "model.norm": "layer", "model.layers": 2}
    data = yaml.safe_load(recipe.read_text())
    data["model"].update(dropout=0.3, norm="layer", layers=2)
    data["train"]["lr"] = 0.02
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "start"
    assert search.main([str(recipe), str(space), "--trials", "2", "--start-from-recipe", "--out", str(out)]) == 0
    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    first = yaml.safe_load((Path(rows[0]["run_dir"]) / "recipe.yaml").read_text())
    assert {k: first[k.split(".")[0]][k.split(".")[1]] for k in own} == own
    # A continued study does not queue the recipe again.
    assert search.main([str(recipe), str(space), "--trials", "1", "--start-from-recipe", "--out", str(out)]) == 0
    with (out / "trials.csv").open() as f:
        third = list(csv.DictReader(f))[2]
    assert (third["model.dropout"], third["train.lr"]) != ("0.3", "0.02")

    # A recipe value outside the space is one line naming the key, and nothing runs.
    data["model"]["dropout"] = 0.9
    recipe.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert search.main([str(recipe), str(space), "--trials", "1", "--start-from-recipe",
                        "--out", str(tmp_path / "outside")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.dropout = 0.9 is outside the search space" in err, err
    assert not (tmp_path / "outside").exists()
