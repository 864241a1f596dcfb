"""dgl_rbgt.train.protocol: each dataset's own runs, and the argument check."""
import pytest

from dgl_rbgt.config import parse_recipe
from dgl_rbgt.train.protocol import protocol_runs


def _dataset(**section):
    return parse_recipe({"name": "t", "dataset": section, "model": {"name": "gcn"}}).dataset


@pytest.mark.parametrize("section, description, run_2", [
    ({"name": "minesweeper"}, "3 fixed splits", ["seed=2", "dataset.split=2"]),
    ({"name": "photo"}, "3 seeded random splits", ["seed=2", "dataset.seed=2"]),
    ({"name": "photo", "params": {"splits": "tunedgnn"}}, "3 training seeds", ["seed=2"]),
    ({"name": "cora", "seed": 123, "params": {"split_type": "random"}}, "3 training seeds", ["seed=2"]),
])
def test_runs_follow_the_dataset(section, description, run_2):
    got, runs = protocol_runs(_dataset(**section), runs=3)
    assert got == description and [i for i, _ in runs] == [0, 1, 2] and runs[2][1] == run_2


@pytest.mark.parametrize("runs", [0, -1, 2.5, True, "3"])
def test_bad_runs_name_the_argument(runs):
    with pytest.raises(ValueError, match=r"runs must be an int >= 1"):
        protocol_runs(_dataset(name="cora"), runs=runs)
