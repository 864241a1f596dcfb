"""Tests for dgl_rbgt/data/heterophilous.py on the real npz files (Platonov et al. packaging)."""
import numpy as np
import pytest
import torch

from dgl_rbgt.data import DatasetNotFoundError, load_dataset

# name: (nodes, features, classes, directed edges, metric). Each file stores every undirected pair
# once, with no self-loops and no duplicates (checked against a set reference below), so the
# directed count is exactly twice the stored pairs: minesweeper 2*39402, tolokers 2*519000,
# actor 2*26659, texas 2*279, cornell 2*277, wisconsin 2*450.
EXPECTED = {
    "minesweeper": (10000, 7, 2, 78804, "roc_auc"),
    "tolokers": (11758, 10, 2, 1038000, "roc_auc"),
    "actor": (7600, 932, 5, 53318, "accuracy"),
    "texas": (183, 1703, 5, 558, "accuracy"),
    "cornell": (183, 1703, 5, 554, "accuracy"),
    "wisconsin": (251, 1703, 5, 900, "accuracy"),
}



@pytest.fixture(scope="module")
def loaded():
    return {name: load_dataset(name) for name in EXPECTED}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_and_convention(loaded, name, check_convention):
    nodes, feats, classes, edges, metric = EXPECTED[name]
    ds = loaded[name]
    g = ds.graph
    assert (g.num_nodes(), g.ndata["feat"].shape[1], ds.num_classes, g.num_edges()) == (nodes, feats, classes, edges)
    assert (ds.name, ds.metric, ds.split) == (name, metric, 0)
    assert ds.source.endswith(f"heterophilous/{name}.npz")
    check_convention(g)


@pytest.mark.parametrize("name", ["texas", "wisconsin", "minesweeper"])
def test_edges_match_set_reference(loaded, data_root, name):
    with np.load(data_root / "heterophilous" / f"{name}.npz") as npz:
        pairs = npz["edges"].tolist()
    expected = sorted({(u, v) for u, v in pairs if u != v} | {(v, u) for u, v in pairs if u != v})
    src, dst = loaded[name].graph.edges()
    assert sorted(zip(src.tolist(), dst.tolist())) == expected


def test_masks_and_values_match_file(loaded, data_root):
    with np.load(data_root / "heterophilous" / "actor.npz") as npz:
        ref = {k: npz[k] for k in npz.files}
    g = loaded["actor"].graph
    assert np.array_equal(g.ndata["feat"].numpy(), ref["node_features"])
    assert np.array_equal(g.ndata["label"].numpy(), ref["node_labels"])
    for key, mask in (("train_mask", "train_masks"), ("val_mask", "val_masks"), ("test_mask", "test_masks")):
        assert np.array_equal(g.ndata[key].numpy(), ref[mask][0])


def test_split_selects_mask_row(data_root):
    ds3 = load_dataset("texas", split=3)
    ds0 = load_dataset("texas", split=0)
    assert ds3.split == 3
    with np.load(data_root / "heterophilous" / "texas.npz") as npz:
        assert np.array_equal(ds3.graph.ndata["train_mask"].numpy(), npz["train_masks"][3])
        assert np.array_equal(ds3.graph.ndata["test_mask"].numpy(), npz["test_masks"][3])
    assert not torch.equal(ds0.graph.ndata["train_mask"], ds3.graph.ndata["train_mask"])
    assert torch.equal(ds0.graph.edges()[0], ds3.graph.edges()[0])  # only the masks change


@pytest.mark.parametrize("split", [10, -1])
def test_split_out_of_range(split):
    with pytest.raises(ValueError, match=rf"split must be in \[0, 9\] for dataset 'cornell' \(10 fixed splits\), got {split}"):
        load_dataset("cornell", split=split)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"looked at:\n  .*heterophilous/roman_empire\.npz(.|\n)*yandex-research"):
        load_dataset("roman-empire", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"chameleon_filtered\.npz\n  .*chameleon\.npz"):
        load_dataset("chameleon", root=tmp_path)


def _tiny_npz(path, num_splits=10):
    n = 6
    np.savez(
        path,
        node_features=np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        node_labels=np.array([0, 1, 2, 0, 1, 2]),
        edges=np.array([[0, 1], [1, 2], [2, 0], [3, 3], [4, 5], [5, 4]]),
        train_masks=np.tile(np.array([1, 1, 0, 0, 0, 0], dtype=bool), (num_splits, 1)),
        val_masks=np.tile(np.array([0, 0, 1, 1, 0, 0], dtype=bool), (num_splits, 1)),
        test_masks=np.tile(np.array([0, 0, 0, 0, 1, 1], dtype=bool), (num_splits, 1)),
    )


def test_chameleon_plain_name_accepted(tmp_path):
    (tmp_path / "heterophilous").mkdir()
    _tiny_npz(tmp_path / "heterophilous" / "chameleon.npz")
    ds = load_dataset("chameleon", root=tmp_path, split=9)
    src, dst = ds.graph.edges()
    # (3, 3) is a self-loop and (4, 5)/(5, 4) a duplicate pair
    assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (4, 5), (5, 4)]
    assert (ds.num_classes, ds.metric, ds.split) == (3, "accuracy", 9)


def test_truncated_npz_names_file(tmp_path, data_root):
    (tmp_path / "heterophilous").mkdir()
    path = tmp_path / "heterophilous" / "minesweeper.npz"
    path.write_bytes((data_root / "heterophilous" / "minesweeper.npz").read_bytes()[:50_000])
    with pytest.raises(ValueError, match=r"minesweeper\.npz could not be read as a heterophilous-graphs \.npz"):
        load_dataset("minesweeper", root=tmp_path)


def test_object_array_and_missing_key_rejected(tmp_path):
    (tmp_path / "heterophilous").mkdir()
    path = tmp_path / "heterophilous" / "texas.npz"
    np.savez(path, node_features=np.array([object()] * 3, dtype=object))
    with pytest.raises(ValueError, match=r"texas\.npz could not be read.*missing keys"):
        load_dataset("texas", root=tmp_path)
    _tiny_npz(path)
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["node_labels"] = np.array([object()] * 6, dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"texas\.npz could not be read.*allow_pickle=False"):
        load_dataset("texas", root=tmp_path)


def test_overlapping_masks_rejected(tmp_path):
    (tmp_path / "heterophilous").mkdir()
    path = tmp_path / "heterophilous" / "wisconsin.npz"
    _tiny_npz(path)
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["val_masks"][2, 0] = True
    np.savez(path, **arrays)
    load_dataset("wisconsin", root=tmp_path, split=1)
    with pytest.raises(ValueError, match=r"wisconsin\.npz: train/val/test masks overlap on 1 nodes"):
        load_dataset("wisconsin", root=tmp_path, split=2)


def test_random_split_is_seeded_and_follows_the_fractions(data_root, check_convention):
    a = load_dataset("actor", root=data_root, split_type="random", seed=3)
    b = load_dataset("actor", root=data_root, split_type="random", seed=3)
    c = load_dataset("actor", root=data_root, split_type="random", seed=4, train_frac=0.6, val_frac=0.2)
    check_convention(a.graph)
    masks = [a.graph.ndata[m] for m in ("train_mask", "val_mask", "test_mask")]
    assert [int(m.sum()) for m in masks] == [3800, 1900, 1900]  # 50/25/25 of 7600
    assert int(sum(m.long() for m in masks).max()) == 1
    for m in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(a.graph.ndata[m], b.graph.ndata[m])
    assert int(c.graph.ndata["train_mask"].sum()) == 4560
    assert not torch.equal(a.graph.ndata["train_mask"], c.graph.ndata["train_mask"])
    fixed = load_dataset("actor", root=data_root)
    assert not torch.equal(a.graph.ndata["train_mask"], fixed.graph.ndata["train_mask"])


def test_class_balanced_split_balances_training_only(data_root, check_convention):
    """Spexphormer's Actor protocol: 760 training nodes of each class, 1900 validation, test the rest."""
    a = load_dataset("actor", root=data_root, split_type="class_balanced", seed=3)
    b = load_dataset("actor", root=data_root, split_type="class_balanced", seed=3)
    c = load_dataset("actor", root=data_root, split_type="class_balanced", seed=4)
    check_convention(a.graph)
    label = a.graph.ndata["label"]
    masks = [a.graph.ndata[m] for m in ("train_mask", "val_mask", "test_mask")]
    assert [int(m.sum()) for m in masks] == [3800, 1900, 1900]
    assert int(sum(m.long() for m in masks).max()) == 1 and bool(sum(m.long() for m in masks).min() == 1)
    assert torch.bincount(label[masks[0]], minlength=5).tolist() == [760] * 5
    # Held-out nodes follow the leftover class sizes, so the largest class dominates test.
    held_out = torch.bincount(label[masks[1] | masks[2]], minlength=5)
    assert torch.equal(held_out, torch.bincount(label, minlength=5) - 760)
    for m in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(a.graph.ndata[m], b.graph.ndata[m])
    assert not torch.equal(a.graph.ndata["train_mask"], c.graph.ndata["train_mask"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(split_type="shuffled"), "split_type must be 'fixed', 'random' or 'class_balanced'"),
    (dict(split_type="random", split=2), "split must be 0 with split_type='random'"),
    (dict(split_type="class_balanced", split=1), "split must be 0 with split_type='class_balanced'"),
    (dict(split_type="random", train_frac=0.8, val_frac=0.3), "train_frac"),
])
def test_random_split_errors(data_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("actor", root=data_root, **kwargs)
