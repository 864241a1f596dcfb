"""The partition/launch commands: parser wiring, one-line user errors, and the recipe schema with
the distributed: section wired in (dgl_rbgt/config)."""
import argparse
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import yaml
from pydantic import create_model

from dgl_rbgt.config import schema as recipes
from dgl_rbgt.distributed.cli import add_subcommands, cmd_launch, cmd_partition
from dgl_rbgt.config import DistributedSection, load_distributed_recipe

ROOT = Path(__file__).resolve().parents[2]


def parser():
    p = argparse.ArgumentParser(prog="dgl-rbgt")
    add_subcommands(p.add_subparsers(dest="command", required=True))
    return p


def test_subcommands_parse():
    a = parser().parse_args(["launch", "r.yaml", "--resume", "--set", "train.lr=1", "--set", "x=2", "--run-dir", "d"])
    assert (a.func, a.recipe, a.resume, a.set, a.run_dir) == (cmd_launch, "r.yaml", True, ["train.lr=1", "x=2"], "d")
    a = parser().parse_args(["partition", "r.yaml"])
    assert (a.func, a.recipe, a.set) == (cmd_partition, "r.yaml", [])


def run_cli(*args, cwd, capsys, monkeypatch):
    from dgl_rbgt.cli import main

    monkeypatch.chdir(cwd)
    code = main(list(args))
    return code, capsys.readouterr().err


def test_user_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    code, err = run_cli("launch", "missing.yaml", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err.strip() == "dgl-rbgt: error: recipe file not found: missing.yaml"
    data = yaml.safe_load((ROOT / "recipes/distributed/quickstart_local.yaml").read_text())
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    code, err = run_cli("launch", "r.yaml", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)  # not partitioned
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "no partitions in" in lines[0] and "dgl-rbgt partition RECIPE" in lines[0]
    code, err = run_cli("partition", "r.yaml", "--set", "distributed.port=1", cwd=tmp_path, capsys=capsys,
                        monkeypatch=monkeypatch)
    assert code == 2 and "distributed.port: Input should be greater than or equal to 1024" in err


def test_tools_launch_wrapper(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "launch.py"), "missing.yaml"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "recipe file not found: missing.yaml" in done.stderr


@pytest.fixture
def wired(monkeypatch):
    """The recipe schema with ``distributed: Optional[DistributedSection] = None``, as it will be wired."""
    base = recipes.Recipe()
    model = create_model("Recipe", __base__=base, distributed=(Optional[DistributedSection], None))
    monkeypatch.setattr(recipes, "_RECIPE_MODEL", model)
    return model


@pytest.mark.parametrize("name", ["quickstart_local.yaml", "quickstart_2hosts.yaml"])
def test_shipped_recipes_once_the_schema_knows_the_section(wired, name):
    path = ROOT / "recipes" / "distributed" / name
    recipe = recipes.load_recipe(path)  # what tests/test_recipes.py will do
    assert isinstance(recipe.distributed, DistributedSection)
    again = recipes.parse_recipe(yaml.safe_load(recipes.recipe_to_yaml(recipe)))
    assert again == recipe
    r2, dist = load_distributed_recipe(path, ["distributed.port=31111"])
    assert dist is r2.distributed and dist.port == 31111
    # plain recipes keep working and have no section
    assert recipes.parse_recipe({"name": "t", "dataset": {"name": "cora"}, "model": {"name": "gcn"}}).distributed is None
