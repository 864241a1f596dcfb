"""Amazon Photo/Computers and Coauthor CS/Physics (Shchur et al. 2018) from their ``.npz`` files.

Layout: ``ROOT/gnn_benchmark/`` holding either the zip (``amazon-photo.zip``, ...) that wraps the
npz, or the bare npz (``amazon_electronics_photo.npz``, ...) from shchur/gnn-benchmark
``data/npz``. Read with ``np.load(allow_pickle=False)`` and only the keys needed (``class_names``
and ``node_names`` may be object arrays and are never touched). The stored adjacency is not
symmetric for Amazon: it is symmetrised, self-loops and duplicates dropped (Photo: 238,162
directed edges, PyG's count; the file has one self-loop). Features are the stored values
(Photo: binary, CS: counts), as DGL's loader keeps them. No split ships with these datasets: a
random ``train_frac``/``val_frac``/rest split is drawn from ``seed`` with a ``torch.Generator``,
or ``splits="tunedgnn"`` reads the one fixed 60/20/20 split that Luo et al. ("Classic GNNs are
Strong Baselines", NeurIPS 2024) report their numbers on (``ROOT/tunedgnn/<name>_split.npz``,
index arrays ``train``/``valid``/``test``, downloaded from their repository when missing).
"""
from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from .dataset import (
    DatasetSpec,
    NodeDataset,
    check_download,
    check_single_split,
    check_split_fractions,
    corrupt_file_error,
    index_to_mask,
    make_graph,
    not_found_error,
    random_split_masks,
)
from .download import ORIGINS, fetch_files

__all__ = ["load_shchur", "SPECS", "FILES", "SPLITS", "TUNEDGNN_SPLIT_FILES"]

logger = logging.getLogger(__name__)

#: canonical name -> (zip file, npz file inside it / bare npz file)
FILES: dict[str, tuple[str, str]] = {
    "photo": ("amazon-photo.zip", "amazon_electronics_photo.npz"),
    "computers": ("amazon-computers.zip", "amazon_electronics_computers.npz"),
    "cs": ("coauthor-cs.zip", "ms_academic_cs.npz"),
    "physics": ("coauthor-physics.zip", "ms_academic_phy.npz"),
}
#: Where a dataset's train/val/test split comes from: ``"random"`` (drawn from ``seed``) or
#: ``"tunedgnn"`` (Luo et al.'s fixed split file).
SPLITS = ("random", "tunedgnn")

#: canonical name -> tunedGNN's split file (their names: ``amazon-computer``, singular).
TUNEDGNN_SPLIT_FILES: dict[str, str] = {
    "photo": "amazon-photo_split.npz",
    "computers": "amazon-computer_split.npz",
    "cs": "coauthor-cs_split.npz",
    "physics": "coauthor-physics_split.npz",
}

_ALIASES = {
    "photo": ("amazon-photo",),
    "computers": ("amazon-computers",),
    "cs": ("coauthor-cs",),
    "physics": ("coauthor-physics",),
}


def _paths(root: Path, name: str) -> list[Path]:
    folder = root / "gnn_benchmark"
    return [folder / FILES[name][0], folder / FILES[name][1]]


def _csr(npz, prefix: str) -> sp.csr_matrix:
    return sp.csr_matrix(
        (npz[f"{prefix}_data"], npz[f"{prefix}_indices"], npz[f"{prefix}_indptr"]),
        shape=tuple(int(s) for s in npz[f"{prefix}_shape"]),
    )


def _read(path: Path, member: str) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Read (adjacency CSR, dense float32 features, labels) from the zip or the bare npz."""
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if member not in names:
                    raise KeyError(f"the zip holds {names}, not {member}")
                stream = io.BytesIO(zf.read(member))
        else:
            stream = path
        with np.load(stream, allow_pickle=False) as npz:
            adj = _csr(npz, "adj")
            if "attr_data" in npz.files:
                attr = _csr(npz, "attr").astype(np.float32)
                finite = np.isfinite(attr.data).all()  # cheaper on the nonzeros than on the dense array
                feat = attr.toarray()  # (N, F)
            elif "attr_matrix" in npz.files:
                feat = np.asarray(npz["attr_matrix"], dtype=np.float32)
                finite = np.isfinite(feat).all()
            else:
                raise KeyError(f"no attr_data/attr_matrix key; found {npz.files}")
            if not finite:
                raise ValueError("the features contain NaN or Inf")
            labels = npz["labels"]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise corrupt_file_error(path, "a gnn-benchmark (Shchur et al.) npz", err) from err
    return adj, feat, labels


def load_shchur(
    spec: DatasetSpec, root: Path, split: int, seed: int, *, train_frac: float = 0.6, val_frac: float = 0.2,
    splits: str = "random", download: bool = True,
) -> NodeDataset:
    """Load Photo/Computers/CS/Physics with a seeded random split (``train_frac``/``val_frac``/rest),
    or with ``splits="tunedgnn"`` the fixed split of Luo et al.'s published numbers (the same for
    every ``seed``; ``train_frac``/``val_frac`` must stay at their defaults).

    When neither the zip nor the bare npz is there and ``download`` is true, the bare npz is
    downloaded from shchur/gnn-benchmark and verified, see :func:`~dgl_rbgt.data.load_dataset`.

    Examples
    --------
    >>> from dgl_rbgt.data import load_dataset
    >>> ds = load_dataset("photo", seed=1)  # doctest: +SKIP
    >>> ds.graph.num_nodes(), ds.graph.num_edges(), ds.num_classes  # doctest: +SKIP
    (7650, 238162, 8)
    >>> fixed = load_dataset("photo", splits="tunedgnn")  # doctest: +SKIP
    >>> [int(fixed.graph.ndata[f"{s}_mask"].sum()) for s in ("train", "val", "test")]  # doctest: +SKIP
    [4590, 1530, 1530]
    """
    name = spec.name
    check_single_split(name, split)
    train_frac, val_frac = check_split_fractions(train_frac, val_frac)
    if not isinstance(splits, str) or splits not in SPLITS:
        raise ValueError(f"splits must be one of {list(SPLITS)}, got {splits!r}")
    if splits == "tunedgnn" and (train_frac, val_frac) != (0.6, 0.2):
        raise ValueError(f"train_frac and val_frac apply to splits='random' only; splits='tunedgnn' is a fixed "
                         f"60/20/20 split (got train_frac={train_frac}, val_frac={val_frac})")
    check_download(download)
    candidates = _paths(root, name)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None and download:
        path = fetch_files(name, "shchur", [FILES[name][1]], root / "gnn_benchmark", candidates)[0]
    elif path is None:
        raise not_found_error(
            name, candidates, root,
            f"Downloads are off (download=False or $DGL_RBGT_OFFLINE); with them on, load_dataset fetches "
            f"{ORIGINS['shchur']}/{FILES[name][1]}. Or put {FILES[name][1]} from https://github.com/shchur/gnn-benchmark (data/npz) or a zip "
            f"holding it into {root / 'gnn_benchmark'}.",
        )
    adj, feat, labels = _read(path, FILES[name][1])
    num_nodes = adj.shape[0]
    if adj.shape[0] != adj.shape[1] or feat.shape[0] != num_nodes or labels.shape != (num_nodes,):
        raise ValueError(
            f"{path}: inconsistent shapes: adjacency {adj.shape}, features {feat.shape}, labels {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"{path}: labels must be non-negative integers, got dtype {labels.dtype}")
    coo = adj.tocoo()
    if splits == "tunedgnn":
        train, val, test = _tunedgnn_split(name, root, num_nodes, download)
    else:
        train, val, test = random_split_masks(num_nodes, train_frac, val_frac, torch.Generator().manual_seed(seed))
    graph = make_graph(
        torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64)), num_nodes,
        feat=torch.from_numpy(feat), label=torch.from_numpy(labels.astype(np.int64)),
        train_mask=train, val_mask=val, test_mask=test, source=str(path), check_finite=False,  # checked in _read
    )
    logger.info("loaded %s from %s (%s): %d nodes, %d edges", name, path,
                f"split seed {seed}" if splits == "random" else "tunedGNN's fixed split", num_nodes, graph.num_edges())
    return NodeDataset(
        name=name, graph=graph, num_classes=int(labels.max()) + 1, metric="accuracy", split=None, source=str(path)
    )


def _tunedgnn_split(name: str, root: Path, num_nodes: int, download: bool) -> tuple[torch.Tensor, ...]:
    """Train/val/test masks from tunedGNN's split file (downloaded and verified when missing)."""
    file = TUNEDGNN_SPLIT_FILES[name]
    path = root / "tunedgnn" / file
    if not path.is_file() and download:
        fetch_files(name, "tunedgnn", [file], path.parent, [path])
    elif not path.is_file():
        raise not_found_error(
            f"{name} (splits='tunedgnn')", [path], root,
            f"Downloads are off (download=False or $DGL_RBGT_OFFLINE); with them on, load_dataset fetches "
            f"{ORIGINS['tunedgnn']}/{file}. Or put that file into {path.parent}.",
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            index = [np.asarray(npz[key]) for key in ("train", "valid", "test")]
        for key, ids in zip(("train", "valid", "test"), index):
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"{key} must be a 1-D integer array, got {ids.dtype} of shape {ids.shape}")
            if ids.size and (ids.min() < 0 or ids.max() >= num_nodes):
                raise ValueError(f"{key} holds node ids outside [0, {num_nodes})")
    except (EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise corrupt_file_error(path, f"a tunedGNN split file for {name} ({num_nodes} nodes)", err) from err
    return tuple(index_to_mask(torch.from_numpy(ids.astype(np.int64)), num_nodes) for ids in index)


def _spec(name: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        family="shchur",
        metric="accuracy",
        loader=load_shchur,
        paths=lambda root, n=name: _paths(root, n),
        available=lambda root, n=name: any(p.is_file() for p in _paths(root, n)),
        aliases=_ALIASES[name],
    )


SPECS = [_spec(name) for name in FILES]
