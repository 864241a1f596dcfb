"""Recipe schema: every shipped recipe validates; bad recipes fail with key paths."""
from pathlib import Path

import pytest
import yaml

from dgl_rbgt.errors import RecipeError
from dgl_rbgt.config import apply_overrides, load_recipe, parse_recipe, recipe_to_yaml

ROOT = Path(__file__).resolve().parents[2]
SPACES = ROOT / "recipes" / "search"  # search spaces for tools/search.py, not recipes
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.y*ml") if SPACES not in p.parents)
MINIMAL = {"name": "t", "dataset": {"name": "cora"}, "model": {"name": "gcn"}}


def minimal(**sections):
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in MINIMAL.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def test_recipes_found():
    assert len(RECIPES) >= 3  # the walk must not silently find nothing


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.name))
def test_every_shipped_recipe_validates_and_round_trips(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem  # runs are named after their file
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("#"), "a recipe starts with a comment saying what it is"
    assert "dgl-rbgt train" in path.read_text(), "a recipe's header shows the command that runs it"
    again = parse_recipe(yaml.safe_load(recipe_to_yaml(recipe)))
    assert again == recipe


def test_defaults_filled_and_overrides_win():
    r = parse_recipe(minimal(), overrides=["train.lr=0.5", "model.hidden=7", "dataset.params.x=[1, 2]"])
    assert r.train.lr == 0.5 and r.model.hidden == 7 and r.dataset.params == {"x": [1, 2]}
    assert r.train.epochs == 200 and r.model.layers == 2


@pytest.mark.parametrize("data, message", [
    (minimal(model={"name": "gcn", "hidden": "wide"}), r"model\.hidden: Input should be a valid integer \(got 'wide'\)"),
    (minimal(model={"name": "gcn", "colour": 1}), r"model\.colour: unknown key"),
    (minimal(model={"name": "nope"}), r"model: unknown name 'nope'; expected one of .*'gcn'"),
    (minimal(train={"lr": -1.0}), r"train\.lr: Input should be greater than 0 \(got -1\.0\)"),
    (minimal(train={"epochs": 1.5}), r"train\.epochs: .*integer"),
    (minimal(train={"epochs": "10"}), r"train\.epochs: .*integer"),  # no silent coercion
    (minimal(trian={"lr": 1.0}), r"trian: unknown key"),
    (minimal(train={"batching": "neighbor"}), r"needs fanouts"),
    (minimal(train={"batching": "neighbor", "fanouts": [5]}), r"train\.fanouts has 1 entries but model\.layers is 2"),
    (minimal(train={"warmup_epochs": 10, "epochs": 10}), r"warmup_epochs \(10\) must be smaller than epochs \(10\)"),
    (minimal(dataset={"split": -1}), r"dataset\.split: .*greater than or equal to 0"),
    (minimal(train={"select_by": "accuracy"}), r"train\.select_by: Input should be 'metric' or 'loss'"),
    ({"dataset": {"name": "cora"}, "model": {"name": "gcn"}}, r"name: Field required"),
    ([1, 2], r"expected a mapping"),
])
def test_bad_recipes_name_the_key(data, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(data)


def test_all_errors_reported_at_once():
    with pytest.raises(RecipeError) as info:
        parse_recipe(minimal(train={"lr": -1.0, "epochs": 0}, model={"name": "gcn", "x": 1}))
    text = str(info.value)
    assert "train.lr" in text and "train.epochs" in text and "model.x" in text
    assert "\n" not in text


@pytest.mark.parametrize("override, message", [
    ("train.lr", r"expected key\.path=value"),
    ("train..lr=1", r"empty key"),
    ("name.sub=1", r"name is not a mapping"),
    ("train.lr=[1", r"not valid YAML"),
])
def test_bad_overrides(override, message):
    with pytest.raises(RecipeError, match=message):
        apply_overrides(minimal(), [override])


def test_list_overrides_replace_or_append():
    data = minimal(transforms=[{"name": "normalize_features"}])
    apply_overrides(data, ["transforms.1={name: cast_features, dtype: float16}", "transforms.0.subtract_min=true"])
    assert data["transforms"] == [{"name": "normalize_features", "subtract_min": True},
                                  {"name": "cast_features", "dtype": "float16"}]
    assert parse_recipe(data).transforms[1].dtype == "float16"
    with pytest.raises(RecipeError, match=r"transforms\.5 must be an index below 3 \(its length appends\)"):
        apply_overrides(data, ["transforms.5={name: self_loops}"])
    with pytest.raises(RecipeError, match=r"transforms\.2 must be an index below 2$"):
        apply_overrides(data, ["transforms.2.dtype=float16"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml: not valid YAML at line"):
        load_recipe(bad)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)
