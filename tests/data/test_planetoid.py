"""Tests for dgl_rbgt/data/planetoid.py on the real Cora and CiteSeer files."""
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from dgl_rbgt.data import DatasetNotFoundError, data_root, load_dataset
from dgl_rbgt.data.unpickler import restricted_load




@pytest.fixture(scope="module")
def planetoid():
    return {name: load_dataset(name) for name in ("cora", "citeseer")}


def test_cora_counts(planetoid, check_convention):
    ds = planetoid["cora"]
    g = ds.graph
    # SOURCES.md: 2708 nodes, 5278 undirected edges = 10556 directed, 1433 features, 7 classes.
    assert (g.num_nodes(), g.num_edges(), g.ndata["feat"].shape[1], ds.num_classes) == (2708, 10556, 1433, 7)
    assert [int(g.ndata[k].sum()) for k in ("train_mask", "val_mask", "test_mask")] == [140, 500, 1000]
    assert (ds.name, ds.metric, ds.split) == ("cora", "accuracy", None)
    assert ds.source == os.path.join(str(data_root()), "planetoid", "ind.cora")
    check_convention(g)
    # public split: 20 per class
    assert torch.bincount(g.ndata["label"][g.ndata["train_mask"]]).tolist() == [20] * 7


def test_citeseer_counts(planetoid, check_convention):
    ds = planetoid["citeseer"]
    g = ds.graph
    # The graph dict holds 9464 adjacency entries: 248 are self-loops (124 nodes) and 236 are
    # duplicates. Symmetrised, deduplicated and without self-loops that leaves 4552 undirected
    # edges = 9104 directed (DGL's CiteseerGraphDataset reports 9228 = 9104 + 124 self-loops).
    assert (g.num_nodes(), g.num_edges(), g.ndata["feat"].shape[1], ds.num_classes) == (3327, 9104, 3703, 6)
    assert [int(g.ndata[k].sum()) for k in ("train_mask", "val_mask", "test_mask")] == [120, 500, 1000]
    check_convention(g)


def test_split_is_public_split(planetoid, data_root):
    for name, num_train in (("cora", 140), ("citeseer", 120)):
        g = planetoid[name].graph
        test_index = np.loadtxt(data_root / "planetoid" / f"ind.{name}.test.index", dtype=np.int64)
        assert torch.equal(torch.nonzero(g.ndata["train_mask"]).reshape(-1), torch.arange(num_train))
        assert torch.equal(torch.nonzero(g.ndata["val_mask"]).reshape(-1), torch.arange(num_train, num_train + 500))
        assert torch.equal(torch.nonzero(g.ndata["test_mask"]).reshape(-1), torch.from_numpy(np.sort(test_index)))


def test_rows_land_on_their_node_ids(planetoid, data_root):
    # Row k of tx/ty belongs to node test_index[k]; rows of allx/ally to nodes 0..len-1.
    folder = data_root / "planetoid"
    for name in ("cora", "citeseer"):
        g = planetoid[name].graph
        tx = restricted_load(folder / f"ind.{name}.tx").toarray()
        ty = restricted_load(folder / f"ind.{name}.ty")
        allx = restricted_load(folder / f"ind.{name}.allx").toarray()
        test_index = np.loadtxt(folder / f"ind.{name}.test.index", dtype=np.int64)
        assert np.array_equal(g.ndata["feat"][test_index].numpy(), tx)
        assert np.array_equal(g.ndata["label"][test_index].numpy(), ty.argmax(1))
        assert np.array_equal(g.ndata["feat"][: allx.shape[0]].numpy(), allx)


def test_citeseer_padding_nodes(planetoid, data_root):
    # 15 ids in [min, max] of the test index are missing: zero features, label 0, in no split.
    g = planetoid["citeseer"].graph
    test_index = np.loadtxt(data_root / "planetoid" / "ind.citeseer.test.index", dtype=np.int64)
    missing = sorted(set(range(test_index.min(), test_index.max() + 1)) - set(test_index.tolist()))
    assert len(missing) == 15
    missing = torch.tensor(missing)
    assert float(g.ndata["feat"][missing].abs().sum()) == 0.0
    assert g.ndata["label"][missing].tolist() == [0] * 15
    in_split = g.ndata["train_mask"] | g.ndata["val_mask"] | g.ndata["test_mask"]
    assert not bool(in_split[missing].any())


def test_single_split_only():
    with pytest.raises(ValueError, match="split must be 0 for dataset 'cora', which has a single split, got 1"):
        load_dataset("cora", split=1)


def test_missing_files(tmp_path, data_root):
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'cora' not found; looked at:(.|\n)*ind\.cora\.x(.|\n)*DGL_RBGT_DATA"):
        load_dataset("cora", root=tmp_path)
    (tmp_path / "planetoid").mkdir()
    for f in (data_root / "planetoid").glob("ind.cora.*"):
        if not f.name.endswith(".ty"):
            shutil.copy(f, tmp_path / "planetoid" / f.name)
    with pytest.raises(DatasetNotFoundError, match=r"Missing: ind\.cora\.ty\."):
        load_dataset("cora", root=tmp_path)


def test_pubmed_not_shipped_reports_paths():
    # PubMed is registered but its files are not in the shared data (see SOURCES.md).
    with pytest.raises(DatasetNotFoundError, match=r"ind\.pubmed\.allx"):
        load_dataset("pubmed")


def _copy_cora(tmp_path, data_root):
    (tmp_path / "planetoid").mkdir()
    for f in (data_root / "planetoid").glob("ind.cora.*"):
        shutil.copy(f, tmp_path / "planetoid" / f.name)
    return tmp_path / "planetoid"


def test_truncated_pickle_names_file(tmp_path, data_root):
    folder = _copy_cora(tmp_path, data_root)
    path = folder / "ind.cora.allx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"ind\.cora\.allx could not be read as a Planetoid pickle"):
        load_dataset("cora", root=tmp_path)


def test_malicious_graph_file_refused(tmp_path, data_root):
    folder = _copy_cora(tmp_path, data_root)
    marker = tmp_path / "pwned"
    (folder / "ind.cora.graph").write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(pickle.UnpicklingError, match=r"forbidden global 'os\.system' in pickle .*ind\.cora\.graph"):
        load_dataset("cora", root=tmp_path)
    assert not marker.exists()


def test_inconsistent_files_raise(tmp_path, data_root):
    folder = _copy_cora(tmp_path, data_root)
    (folder / "ind.cora.test.index").write_text("\n".join(str(i) for i in range(1708, 2700)))
    with pytest.raises(ValueError, match="test.index has 992 ids but tx/ty have 1000/1000 rows"):
        load_dataset("cora", root=tmp_path)
    (folder / "ind.cora.test.index").write_text("\n".join(str(i) for i in range(1709, 2709)))
    with pytest.raises(ValueError, match=r"test\.index must hold distinct ids starting at len\(allx\) = 1708"):
        load_dataset("cora", root=tmp_path)


def test_bad_adjacency_names_file(tmp_path, data_root):
    folder = _copy_cora(tmp_path, data_root)
    with open(folder / "ind.cora.graph", "wb") as fh:
        pickle.dump({0: [[1, 2]]}, fh, protocol=2)
    with pytest.raises(ValueError, match=r"ind\.cora\.graph could not be read as an adjacency dict"):
        load_dataset("cora", root=tmp_path)


@pytest.mark.parametrize("name,classes", [("cora", 7), ("citeseer", 6)])
def test_random_split_counts_balance_disjoint(name, classes, check_convention):
    # split_type="random": 20 training nodes per class, 500 val, 1000 test (SGFormer's protocol).
    g = load_dataset(name, split_type="random", seed=0).graph
    tr, va, te = (g.ndata[k] for k in ("train_mask", "val_mask", "test_mask"))
    assert [int(tr.sum()), int(va.sum()), int(te.sum())] == [20 * classes, 500, 1000]
    assert torch.bincount(g.ndata["label"][tr], minlength=classes).tolist() == [20] * classes
    check_convention(g)  # includes disjointness of the three masks
    public = load_dataset(name).graph
    assert not torch.equal(tr, public.ndata["train_mask"])  # a different split from the public one
    assert torch.equal(g.ndata["feat"], public.ndata["feat"]) and torch.equal(g.ndata["label"], public.ndata["label"])


def test_random_split_seeded_repeatable():
    masks = lambda ds: [ds.graph.ndata[k] for k in ("train_mask", "val_mask", "test_mask")]  # noqa: E731
    a = masks(load_dataset("cora", split_type="random", seed=3))
    b = masks(load_dataset("cora", split_type="random", seed=3))
    c = masks(load_dataset("cora", split_type="random", seed=4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_random_split_skips_citeseer_padding(planetoid, data_root):
    test_index = np.loadtxt(data_root / "planetoid" / "ind.citeseer.test.index", dtype=np.int64)
    missing = torch.tensor(sorted(set(range(test_index.min(), test_index.max() + 1)) - set(test_index.tolist())))
    for seed in range(3):
        g = load_dataset("citeseer", split_type="random", seed=seed).graph
        in_split = g.ndata["train_mask"] | g.ndata["val_mask"] | g.ndata["test_mask"]
        assert not bool(in_split[missing].any())
    # include_padding: drawn from all nodes, as PyG; the padded nodes then count as class 0
    g = load_dataset("citeseer", split_type="random", seed=123, include_padding=True).graph
    assert int(g.ndata["train_mask"].sum()) == 120 and int(g.ndata["test_mask"].sum()) == 1000
    cora = [load_dataset("cora", split_type="random", seed=1, include_padding=flag).graph for flag in (False, True)]
    assert all(torch.equal(cora[0].ndata[k], cora[1].ndata[k]) for k in ("train_mask", "val_mask", "test_mask"))


def test_random_split_options():
    g = load_dataset("cora", split_type="random", seed=0, train_per_class=5, num_val=100, num_test=200).graph
    assert [int(g.ndata[k].sum()) for k in ("train_mask", "val_mask", "test_mask")] == [35, 100, 200]
    with pytest.raises(ValueError, match="split_type must be 'public' or 'random'"):
        load_dataset("cora", split_type="geom")
    with pytest.raises(ValueError, match="num_val must be a non-negative int"):
        load_dataset("cora", split_type="random", num_val=-1)
