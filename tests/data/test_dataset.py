"""Tests for dgl_rbgt/data/dataset.py: the record types, the data root and the graph helpers."""
import dataclasses

import pytest
import torch

from dgl_rbgt.data import DatasetNotFoundError, NodeDataset, data_root
from dgl_rbgt.data.dataset import (
    check_split_fractions,
    index_to_mask,
    make_graph,
    random_split_masks,
    symmetrize_edges,
)


def _graph_inputs(n=6, f=3):
    return dict(
        feat=torch.randn(n, f),
        label=torch.arange(n) % 2,
        train_mask=index_to_mask(torch.tensor([0, 1]), n),
        val_mask=index_to_mask(torch.tensor([2]), n),
        test_mask=index_to_mask(torch.tensor([3, 4]), n),
        source="test-source",
    )


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DGL_RBGT_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("DGL_RBGT_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "dgl_rbgt" / "data"
    assert data_root("~/x") == tmp_path / "home" / "x"


def test_data_root_rejects_non_path():
    with pytest.raises(TypeError, match="root must be a str or os.PathLike, got int 3"):
        data_root(3)


def test_symmetrize_matches_set_reference():
    n = 50
    src = torch.randint(n, (400,))
    dst = torch.randint(n, (400,))
    s, d = symmetrize_edges(src, dst, n)
    expected = sorted({(u, v) for u, v in zip(src.tolist(), dst.tolist()) if u != v} | {(v, u) for u, v in zip(src.tolist(), dst.tolist()) if u != v})
    assert list(zip(s.tolist(), d.tolist())) == expected
    assert s.dtype == d.dtype == torch.int64


def test_symmetrize_rejects_overflowing_ids():
    with pytest.raises(ValueError, match="num_nodes must be below 3037000499"):
        symmetrize_edges(torch.tensor([0]), torch.tensor([1]), 3_037_000_499)


def test_index_to_mask_and_random_split():
    assert index_to_mask(torch.tensor([1, 3]), 5).tolist() == [False, True, False, True, False]
    gen = torch.Generator().manual_seed(3)
    tr, va, te = random_split_masks(101, 0.6, 0.2, gen)
    assert (int(tr.sum()), int(va.sum()), int(te.sum())) == (61, 20, 20)
    assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
    assert bool((tr | va | te).all())
    again = random_split_masks(101, 0.6, 0.2, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip((tr, va, te), again))


def test_split_fraction_checks():
    assert check_split_fractions(0.6, 0.2) == (0.6, 0.2)
    with pytest.raises(ValueError, match=r"train_frac must be in \(0, 1\], got 0"):
        check_split_fractions(0, 0.2)
    with pytest.raises(ValueError, match="train_frac \\+ val_frac must be at most 1"):
        check_split_fractions(0.9, 0.2)
    with pytest.raises(TypeError, match="val_frac must be a float, got str"):
        check_split_fractions(0.5, "0.2")


def test_make_graph_canonical():
    inputs = _graph_inputs()
    g = make_graph(torch.tensor([0, 1, 2, 2, 5]), torch.tensor([1, 0, 2, 3, 4]), 6, **inputs)
    src, dst = g.edges()
    assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4)]
    assert g.ndata["feat"].dtype == torch.float32
    assert g.ndata["label"].dtype == torch.int64
    assert all(g.ndata[k].dtype == torch.bool for k in ("train_mask", "val_mask", "test_mask"))
    assert torch.equal(g.ndata["feat"], inputs["feat"])


def test_make_graph_rejects_overlapping_masks():
    inputs = _graph_inputs()
    inputs["val_mask"] = inputs["train_mask"].clone()
    with pytest.raises(ValueError, match="test-source: train/val/test masks overlap on 2 nodes"):
        make_graph(torch.tensor([0]), torch.tensor([1]), 6, **inputs)


def test_make_graph_rejects_bad_contents():
    inputs = _graph_inputs()
    with pytest.raises(ValueError, match=r"test-source: edge endpoints must lie in \[0, 6\)"):
        make_graph(torch.tensor([0]), torch.tensor([6]), 6, **inputs)
    with pytest.raises(ValueError, match="must have 7 rows"):
        make_graph(torch.tensor([0]), torch.tensor([1]), 7, **{**inputs, "label": torch.zeros(7, dtype=torch.int64)})
    bad = dict(inputs, feat=torch.full((6, 3), float("nan")))
    with pytest.raises(ValueError, match="NaN or Inf"):
        make_graph(torch.tensor([0]), torch.tensor([1]), 6, **bad)
    bad = dict(inputs, test_mask=torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"test_mask must have shape \(6,\)"):
        make_graph(torch.tensor([0]), torch.tensor([1]), 6, **bad)


def test_node_dataset_is_frozen_and_repr():
    g = make_graph(torch.tensor([0]), torch.tensor([1]), 6, **_graph_inputs())
    ds = NodeDataset(name="x", graph=g, num_classes=2, metric="accuracy", split=None, source="generated")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "y"
    assert repr(ds) == (
        "NodeDataset(name='x', num_nodes=6, num_edges=2, num_features=3, num_classes=2, "
        "metric='accuracy', split=None, source='generated')"
    )


def test_not_found_error_is_file_not_found():
    assert issubclass(DatasetNotFoundError, FileNotFoundError)
    assert isinstance(DatasetNotFoundError("x"), OSError)
