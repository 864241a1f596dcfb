"""Tests for dgl_rbgt/data/registry.py: names, parameters, roots and the dataset listing."""
import pytest

import dgl_rbgt.data as data
from dgl_rbgt.data import DatasetInfo, DatasetNotFoundError, list_datasets, load_dataset
from dgl_rbgt.data.registry import dataset_names, get_spec

ALL = [
    "cora", "citeseer", "pubmed",
    "minesweeper", "tolokers", "roman-empire", "amazon-ratings", "questions",
    "actor", "texas", "cornell", "wisconsin", "chameleon", "squirrel",
    "photo", "computers", "cs", "physics",
    "ogbn-arxiv", "ogbn-products", "ogbn-proteins", "ogbn-papers100M",
    "csbm",
    "longrange",
]  # fmt: skip


def test_public_api():
    assert set(data.__all__) >= {"load_dataset", "list_datasets", "NodeDataset", "DatasetNotFoundError", "csbm_graph", "data_root", "DatasetInfo"}
    for name in data.__all__:
        assert getattr(data, name).__doc__


def test_all_names_registered():
    assert dataset_names() == ALL


@pytest.mark.parametrize(
    "alias,canonical",
    [("CORA", "cora"), ("roman_empire", "roman-empire"), ("Amazon_Ratings", "amazon-ratings"), ("film", "actor"),
     ("amazon-photo", "photo"), ("coauthor_cs", "cs"), ("arxiv", "ogbn-arxiv"), ("ogbn_papers100m", "ogbn-papers100M")],
)
def test_aliases(alias, canonical):
    assert get_spec(alias).name == canonical


def test_alias_loads_canonical_name():
    ds = load_dataset("Film", split=1)
    assert (ds.name, ds.split) == ("actor", 1)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown dataset 'corra'\. Did you mean 'cora'.*\? Known datasets: cora, citeseer, pubmed, .*csbm"):
        load_dataset("corra")
    with pytest.raises(ValueError, match=r"unknown dataset 'tolokerz'\. Did you mean 'tolokers'"):
        load_dataset("tolokerz")
    with pytest.raises(ValueError, match=r"unknown dataset 'zzz'\. Known datasets"):
        load_dataset("zzz")
    with pytest.raises(TypeError, match="name must be a str, got int"):
        load_dataset(3)


def test_unknown_param_names_it_and_allowed():
    with pytest.raises(TypeError, match=r"unexpected parameter\(s\) 'normalize' for dataset 'actor'; allowed "
                                        r"parameters: split_type, train_frac, val_frac"):
        load_dataset("actor", normalize=True)
    with pytest.raises(TypeError, match=r"'foo', 'bar' for dataset 'photo'; allowed parameters: train_frac, val_frac"):
        load_dataset("photo", foo=1, bar=2)


def test_split_and_seed_types():
    with pytest.raises(TypeError, match="split must be an int, got str '0'"):
        load_dataset("texas", split="0")
    with pytest.raises(TypeError, match="seed must be an int, got bool True"):
        load_dataset("csbm", seed=True)


def test_missing_root(tmp_path):
    root = tmp_path / "does-not-exist"
    with pytest.raises(DatasetNotFoundError, match=rf"looked at:\n  {root}/heterophilous/tolokers\.npz\n\(data root {root}(.|\n)*DGL_RBGT_DATA or the recipe's dataset\.root"):
        load_dataset("tolokers", root=root)


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DGL_RBGT_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        load_dataset("texas")


def test_list_datasets(data_root):
    rows = list_datasets()
    assert all(isinstance(r, DatasetInfo) for r in rows)
    info = {r.name: r for r in rows}
    assert list(info) == ALL
    assert info["cora"] == DatasetInfo("cora", "planetoid", "accuracy", str(data_root / "planetoid"), True)
    assert info["tolokers"] == DatasetInfo("tolokers", "heterophilous", "roc_auc", str(data_root / "heterophilous" / "tolokers.npz"), True)
    assert info["photo"].location == str(data_root / "gnn_benchmark" / "amazon-photo.zip") and info["photo"].available
    # Missing here; tests run with downloads off (tests/data/conftest.py).
    assert info["chameleon"].location == f"{data_root / 'heterophilous' / 'chameleon_filtered.npz'} (downloads off: $DGL_RBGT_OFFLINE)"
    assert not info["pubmed"].available and not info["roman-empire"].available
    assert (info["ogbn-proteins"].metric, info["ogbn-proteins"].family) == ("ogb:ogbn-proteins", "ogb")
    assert (info["csbm"].location, info["csbm"].available) == ("generated", True)
    assert {r.metric for r in rows if r.family == "heterophilous" and r.metric == "roc_auc"} == {"roc_auc"}
    assert sorted(r.name for r in rows if r.metric == "roc_auc") == ["minesweeper", "questions", "tolokers"]


def test_list_datasets_other_root(tmp_path):
    assert not any(r.available for r in list_datasets(root=tmp_path) if r.family != "synthetic")
