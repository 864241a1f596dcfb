"""Tests for dgl_rbgt/data/shchur.py on the real Amazon Photo and Coauthor CS files."""
import io
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dgl_rbgt.data import DatasetNotFoundError, load_dataset




def _masks(ds):
    return [ds.graph.ndata[k] for k in ("train_mask", "val_mask", "test_mask")]


@pytest.fixture(scope="module")
def photo():
    return load_dataset("photo", seed=0)


@pytest.fixture(scope="module")
def cs():
    return load_dataset("cs", seed=0)


def _reference_adjacency(data_root, zip_name, member):
    """PyG's recipe, independently: drop self-loops, then A + A^T, binarised."""
    with zipfile.ZipFile(data_root / "gnn_benchmark" / zip_name) as zf:
        with np.load(io.BytesIO(zf.read(member))) as npz:
            adj = sp.csr_matrix((npz["adj_data"], npz["adj_indices"], npz["adj_indptr"]), shape=tuple(npz["adj_shape"]))
    adj.setdiag(0)
    adj.eliminate_zeros()
    return ((adj + adj.T) > 0).tocoo()


def test_photo_counts(photo, data_root, check_convention):
    g = photo.graph
    # SOURCES.md: 7650 nodes, 745 features, 8 classes, 238,162 directed edges after symmetrising.
    # The file stores 143,663 entries including one self-loop: A + A^T has 238,163 nonzeros, and
    # without the self-loop 238,162, which is PyG's count (it removes self-loops first) and ours.
    assert (g.num_nodes(), g.num_edges(), g.ndata["feat"].shape[1], photo.num_classes) == (7650, 238162, 745, 8)
    assert (photo.name, photo.metric, photo.split) == ("photo", "accuracy", None)
    assert photo.source.endswith("gnn_benchmark/amazon-photo.zip")
    ref = _reference_adjacency(data_root, "amazon-photo.zip", "amazon_electronics_photo.npz")
    src, dst = g.edges()
    assert torch.equal(src * 7650 + dst, torch.from_numpy(np.sort(ref.row.astype(np.int64) * 7650 + ref.col)))
    check_convention(g, covers_all=True)


def test_cs_counts(cs, data_root, check_convention):
    g = cs.graph
    # SOURCES.md: 18333 nodes, 163,788 directed edges (already symmetric, no self-loops), 6805 features, 15 classes.
    assert (g.num_nodes(), g.num_edges(), g.ndata["feat"].shape[1], cs.num_classes) == (18333, 163788, 6805, 15)
    check_convention(g, covers_all=True)
    with zipfile.ZipFile(data_root / "gnn_benchmark" / "coauthor-cs.zip") as zf:
        with np.load(io.BytesIO(zf.read("ms_academic_cs.npz"))) as npz:
            attr = sp.csr_matrix((npz["attr_data"], npz["attr_indices"], npz["attr_indptr"]), shape=tuple(npz["attr_shape"]))
            labels = npz["labels"]
    rows = torch.randint(18333, (50,))
    assert np.array_equal(g.ndata["feat"][rows].numpy(), attr[rows.numpy()].toarray())  # counts kept as stored
    assert np.array_equal(g.ndata["label"].numpy(), labels)


def test_random_split_60_20_20(photo, cs):
    assert [int(m.sum()) for m in _masks(photo)] == [4590, 1530, 1530]
    assert [int(m.sum()) for m in _masks(cs)] == [11000, 3667, 3666]


def test_split_repeats_for_seed_and_differs_for_another(photo):
    again = load_dataset("photo", seed=0)
    other = load_dataset("photo", seed=1)
    assert all(torch.equal(a, b) for a, b in zip(_masks(photo), _masks(again)))
    assert not torch.equal(_masks(photo)[0], _masks(other)[0])
    assert torch.equal(photo.graph.ndata["feat"], other.graph.ndata["feat"])
    # the split is the seeded permutation: first 60% train
    perm = torch.randperm(7650, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.nonzero(_masks(other)[0]).reshape(-1), torch.sort(perm[:4590]).values)


def test_split_fractions_param():
    ds = load_dataset("cs", seed=2, train_frac=0.1, val_frac=0.1)
    assert [int(m.sum()) for m in _masks(ds)] == [1833, 1833, 14667]
    with pytest.raises(ValueError, match=r"train_frac \+ val_frac must be at most 1, got 0.9 \+ 0.2"):
        load_dataset("cs", train_frac=0.9, val_frac=0.2)


def _tunedgnn_root(tmp_path, data_root, **arrays):
    (tmp_path / "tunedgnn").mkdir()
    (tmp_path / "gnn_benchmark").symlink_to(data_root / "gnn_benchmark")
    np.savez(tmp_path / "tunedgnn" / "amazon-photo_split.npz", **arrays)
    return tmp_path


def test_tunedgnn_split_is_the_file_for_every_seed(tmp_path, data_root, photo):
    perm = np.random.default_rng(1).permutation(7650)
    root = _tunedgnn_root(tmp_path, data_root, train=perm[:4590], valid=perm[4590:6120], test=perm[6120:])
    a = load_dataset("photo", root=root, seed=0, splits="tunedgnn")
    b = load_dataset("photo", root=root, seed=7, splits="tunedgnn")
    for ds in (a, b):
        for mask, ids in zip(_masks(ds), (perm[:4590], perm[4590:6120], perm[6120:])):
            assert torch.equal(torch.nonzero(mask).view(-1), torch.from_numpy(np.sort(ids)))
        assert torch.equal(ds.graph.ndata["feat"], photo.graph.ndata["feat"])
        assert all(torch.equal(x, y) for x, y in zip(ds.graph.edges(), photo.graph.edges()))


def test_tunedgnn_split_mistakes(tmp_path, data_root):
    with pytest.raises(ValueError, match=r"splits must be one of \['random', 'tunedgnn'\], got 'fixed'"):
        load_dataset("photo", splits="fixed")
    with pytest.raises(ValueError, match=r"train_frac and val_frac apply to splits='random' only.*train_frac=0.5"):
        load_dataset("photo", splits="tunedgnn", train_frac=0.5)
    with pytest.raises(DatasetNotFoundError, match=r"tunedgnn/amazon-photo_split\.npz(.|\n)*LUOyk1999/tunedGNN"):
        load_dataset("photo", root=data_root, splits="tunedgnn")  # downloads are off in these tests
    root = _tunedgnn_root(tmp_path, data_root, train=np.arange(10), valid=np.array([7650]), test=np.arange(20, 30))
    with pytest.raises(ValueError, match=r"amazon-photo_split\.npz could not be read as a tunedGNN split file.*valid holds node ids outside \[0, 7650\)"):
        load_dataset("photo", root=root, splits="tunedgnn")
    np.savez(root / "tunedgnn" / "amazon-photo_split.npz", train=np.arange(10), valid=np.arange(5, 15), test=np.arange(20, 30))
    with pytest.raises(ValueError, match="masks overlap on 5 nodes"):
        load_dataset("photo", root=root, splits="tunedgnn")


def test_split_index_rejected():
    with pytest.raises(ValueError, match="split must be 0 for dataset 'photo'.*use seed"):
        load_dataset("photo", split=2)


def test_bare_npz_with_object_class_names(tmp_path, photo, data_root):
    # The bare npz is read too; class_names (an object array in ms_academic files) is never loaded.
    with zipfile.ZipFile(data_root / "gnn_benchmark" / "amazon-photo.zip") as zf:
        with np.load(io.BytesIO(zf.read("amazon_electronics_photo.npz"))) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "class_names"}
    arrays["class_names"] = np.array(["a", None], dtype=object)
    (tmp_path / "gnn_benchmark").mkdir()
    np.savez(tmp_path / "gnn_benchmark" / "amazon_electronics_photo.npz", **arrays)
    ds = load_dataset("amazon-photo", root=tmp_path, seed=0)
    assert ds.name == "photo" and ds.source.endswith("amazon_electronics_photo.npz")
    assert torch.equal(ds.graph.edges()[1], photo.graph.edges()[1])
    assert torch.equal(ds.graph.ndata["feat"], photo.graph.ndata["feat"])
    assert all(torch.equal(a, b) for a, b in zip(_masks(ds), _masks(photo)))


def test_missing_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"coauthor-physics\.zip\n  .*ms_academic_phy\.npz(.|\n)*shchur/gnn-benchmark"):
        load_dataset("physics", root=tmp_path)


def test_bad_zip_names_file(tmp_path):
    (tmp_path / "gnn_benchmark").mkdir()
    (tmp_path / "gnn_benchmark" / "amazon-computers.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"amazon-computers\.zip could not be read as a gnn-benchmark"):
        load_dataset("computers", root=tmp_path)
    with zipfile.ZipFile(tmp_path / "gnn_benchmark" / "amazon-computers.zip", "w") as zf:
        zf.writestr("other.npz", b"")
    with pytest.raises(ValueError, match=r"amazon-computers\.zip could not be read.*not amazon_electronics_computers\.npz"):
        load_dataset("computers", root=tmp_path)
