"""Tests for dgl_rbgt/data/ogb.py: ogb's own code path on tiny datasets in OGB's raw layout, offline.

The files mimic what ogb downloads (ogb/nodeproppred/master.csv, ogb/io/read_graph_raw.py):
``ROOT/ogb/ogbn_<x>/raw/{edge,num-node-list,num-edge-list,node-feat|edge-feat,node-label,
node_<extra>}.csv.gz``, ``split/<type>/{train,valid,test}.csv.gz`` and the ``RELEASE_v1.txt``
marker without which ogb asks whether to re-download.
"""
import socket
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
import torch

from dgl_rbgt.data import DatasetNotFoundError, list_datasets, load_dataset


@pytest.fixture
def offline(monkeypatch):
    """No network: any connection attempt fails loudly, so a download attempt would show."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(np.asarray(array)).to_csv(path, header=False, index=False, compression="gzip")


def _tiny_arxiv(root):
    d = root / "ogb" / "ogbn_arxiv"
    # directed citations with a reverse duplicate (3->4, 4->3), a self-loop (5->5), a repeat (0->1)
    edges = np.array([[0, 1], [1, 2], [2, 0], [3, 4], [4, 3], [5, 5], [0, 1], [6, 0]])
    feat = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    _write(d / "raw" / "edge.csv.gz", edges)
    _write(d / "raw" / "num-node-list.csv.gz", [7])
    _write(d / "raw" / "num-edge-list.csv.gz", [len(edges)])
    _write(d / "raw" / "node-feat.csv.gz", feat)
    _write(d / "raw" / "node-label.csv.gz", np.array([[0], [39], [2], [0], [1], [2], [5]]))
    _write(d / "raw" / "node_year.csv.gz", np.full((7, 1), 2019))
    _write(d / "split" / "time" / "train.csv.gz", [0, 1, 2])
    _write(d / "split" / "time" / "valid.csv.gz", [3, 6])
    _write(d / "split" / "time" / "test.csv.gz", [4, 5])
    (d / "RELEASE_v1.txt").write_text("tiny test copy\n")
    return d, feat


def test_arxiv_offline_raw_then_processed(tmp_path, offline):
    d, feat = _tiny_arxiv(tmp_path)
    for attempt in range(2):  # first from raw/ (ogb processes and saves), then from processed/
        ds = load_dataset("ogbn-arxiv", root=tmp_path, download=False)
        g = ds.graph
        src, dst = g.edges()
        assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 1), (0, 2), (0, 6), (1, 0), (1, 2), (2, 0), (2, 1), (3, 4), (4, 3), (6, 0)]
        assert np.allclose(g.ndata["feat"].numpy(), feat, atol=1e-6) and g.ndata["feat"].dtype == torch.float32
        assert g.ndata["label"].tolist() == [0, 39, 2, 0, 1, 2, 5] and g.ndata["label"].dtype == torch.int64
        assert torch.nonzero(g.ndata["train_mask"]).reshape(-1).tolist() == [0, 1, 2]
        assert torch.nonzero(g.ndata["val_mask"]).reshape(-1).tolist() == [3, 6]
        assert torch.nonzero(g.ndata["test_mask"]).reshape(-1).tolist() == [4, 5]
        assert (ds.name, ds.num_classes, ds.metric, ds.split, ds.source) == ("ogbn-arxiv", 40, "ogb:ogbn-arxiv", None, str(d))
        assert set(g.ndata) == {"feat", "label", "train_mask", "val_mask", "test_mask"}
        assert (d / "processed" / "dgl_data_processed").is_file()
    info = {i.name: i for i in list_datasets(root=tmp_path)}["ogbn-arxiv"]
    assert (info.family, info.location, info.available) == ("ogb", str(d), True)


def test_proteins_offline_mean_edge_features(tmp_path, offline):
    d = tmp_path / "ogb" / "ogbn_proteins"
    # undirected edges stored once upstream; ogb adds the reverse of each (add_inverse_edge)
    edges = np.array([[0, 1], [1, 2], [0, 2], [2, 3]])
    rng = np.random.default_rng(1)
    efeat = rng.random((4, 8)).astype(np.float32)
    labels = rng.integers(0, 2, (5, 112))
    _write(d / "raw" / "edge.csv.gz", edges)
    _write(d / "raw" / "edge-feat.csv.gz", efeat)
    _write(d / "raw" / "num-node-list.csv.gz", [5])
    _write(d / "raw" / "num-edge-list.csv.gz", [4])
    _write(d / "raw" / "node-label.csv.gz", labels)
    _write(d / "raw" / "node_species.csv.gz", np.full((5, 1), 3702))
    _write(d / "split" / "species" / "train.csv.gz", [0, 1])
    _write(d / "split" / "species" / "valid.csv.gz", [2])
    _write(d / "split" / "species" / "test.csv.gz", [3, 4])
    (d / "RELEASE_v1.txt").write_text("")
    ds = load_dataset("ogbn-proteins", root=tmp_path, download=False)
    g = ds.graph
    # float64 reference: node i's features are the mean over the edges incident to i; node 4 has none
    ref = np.zeros((5, 8))
    deg = np.zeros(5)
    for (u, v), f in zip(edges, efeat.astype(np.float64)):
        ref[u] += f
        ref[v] += f
        deg[u] += 1
        deg[v] += 1
    ref /= np.maximum(deg, 1)[:, None]
    assert np.allclose(g.ndata["feat"].numpy(), ref, atol=1e-6)
    assert g.ndata["label"].dtype == torch.float32 and np.array_equal(g.ndata["label"].numpy(), labels)
    assert (ds.num_classes, ds.metric, g.num_edges()) == (112, "ogb:ogbn-proteins", 8)


def test_missing_without_download(tmp_path, offline):
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'ogbn-products' not found(.|\n)*ogbn_products(.|\n)*downloads it from http"):
        load_dataset("ogbn-products", root=tmp_path, download=False)


def test_failed_download_is_not_found(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.delenv("DGL_RBGT_OFFLINE")  # let ogb try, into the stub above (conftest.py sets it)
    with pytest.raises(DatasetNotFoundError, match=r"ogb could not download it from http://snap\.stanford\.edu.*URLError(.|\n)*connected machine"):
        load_dataset("ogbn-arxiv", root=tmp_path)


def test_folder_without_release_marker(tmp_path, offline):
    d, _ = _tiny_arxiv(tmp_path)
    (d / "RELEASE_v1.txt").unlink()
    with pytest.raises(ValueError, match=r"ogbn_arxiv exists but has no RELEASE_v1\.txt"):
        load_dataset("ogbn-arxiv", root=tmp_path)


def test_corrupt_raw_names_folder(tmp_path, offline):
    d, _ = _tiny_arxiv(tmp_path)
    (d / "raw" / "node-label.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"ogbn_arxiv could not be read as an OGB dataset folder"):
        load_dataset("ogbn-arxiv", root=tmp_path, download=False)


def test_params_checked(tmp_path):
    with pytest.raises(TypeError, match=r"unexpected parameter\(s\) 'downlaod' for dataset 'ogbn-arxiv'; allowed parameters: download"):
        load_dataset("ogbn-arxiv", root=tmp_path, downlaod=False)
    with pytest.raises(TypeError, match="download must be a bool, got str 'no'"):
        load_dataset("ogbn-arxiv", root=tmp_path, download="no")
    with pytest.raises(ValueError, match="split must be 0 for dataset 'ogbn-arxiv'"):
        load_dataset("arxiv", root=tmp_path, split=1)
