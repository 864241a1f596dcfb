"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from the original ``ind.*`` files.

Layout: ``ROOT/planetoid/ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}`` (Yang et al. 2016,
kimiyoung/planetoid ``data/``). The pickles are read with the restricted unpickler, never plain
``pickle``. Split: the public one of Kipf & Welling (train = the first 20 labelled nodes per
class, i.e. ``range(len(y))``; val = the next 500; test = ``test.index``). CiteSeer's test index
skips 15 ids (isolated nodes in the original data): as in the GCN reference code, those nodes
get zero features and a zero one-hot label (so ``label`` 0) and are in no split.
Features are the raw binary bag-of-words (no row normalisation).

``split_type="random"`` draws instead a class-balanced random split from ``seed``, as PyG's
``Planetoid(split="random")`` and SGFormer's ``--rand_split_class`` (their published Cora/CiteSeer
numbers use it): ``train_per_class`` training nodes per class, then ``num_val`` validation and
``num_test`` test nodes drawn from the rest. Only labelled nodes are drawn (CiteSeer's 15 padded
nodes never are), unless ``include_padding=True``: then, as in PyG's Planetoid, they are drawn as
class-0 nodes like any other; with the same seed this reproduces SGFormer's CiteSeer split (their
``torch.manual_seed(seed)`` followed by the same class-wise permutations).
"""
from __future__ import annotations

import itertools
import logging
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from .dataset import (
    DatasetSpec, NodeDataset, check_download, check_single_split, class_balanced_split, corrupt_file_error, index_to_mask,
    make_graph, not_found_error,
)
from .download import ORIGINS, fetch_files
from .unpickler import ForbiddenGlobalError, restricted_load

__all__ = ["load_planetoid", "SPECS"]

logger = logging.getLogger(__name__)

_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
_NUM_VAL = 500


def _files(root: Path, name: str) -> list[Path]:
    return [root / "planetoid" / f"ind.{name}.{part}" for part in _PARTS]


def _read_pickle(path: Path):
    try:
        return restricted_load(path)
    except ForbiddenGlobalError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise corrupt_file_error(path, "a Planetoid pickle", err) from err


def _read_parts(root: Path, name: str, download: bool) -> dict:
    files = _files(root, name)
    missing = [p for p in files if not p.is_file()]
    if missing and download:
        fetch_files(name, "planetoid", [p.name for p in missing], root / "planetoid", files)
    elif missing:
        raise not_found_error(
            name,
            files,
            root,
            f"Missing: {', '.join(p.name for p in missing)}. Downloads are off (download=False or "
            f"$DGL_RBGT_OFFLINE); with them on, load_dataset fetches the files from {ORIGINS['planetoid']}. "
            f"Or copy ind.{name}.* from https://github.com/kimiyoung/planetoid (data/) into {root / 'planetoid'}.",
        )
    parts = {part: _read_pickle(path) for part, path in zip(_PARTS[:-1], files[:-1])}
    try:
        parts["test.index"] = np.loadtxt(files[-1], dtype=np.int64, ndmin=1)
    except ValueError as err:
        raise corrupt_file_error(files[-1], "a list of integers (one per line)", err) from err
    for part in ("x", "tx", "allx"):
        if not sp.issparse(parts[part]):
            raise corrupt_file_error(files[_PARTS.index(part)], "a sparse feature matrix", TypeError(type(parts[part]).__name__))
    for part in ("y", "ty", "ally"):
        if not isinstance(parts[part], np.ndarray) or parts[part].ndim != 2:
            raise corrupt_file_error(files[_PARTS.index(part)], "a 2-D one-hot label array", TypeError(type(parts[part]).__name__))
    if not isinstance(parts["graph"], dict):
        raise corrupt_file_error(files[_PARTS.index("graph")], "an adjacency dict", TypeError(type(parts["graph"]).__name__))
    return parts


def load_planetoid(
    spec: DatasetSpec, root: Path, split: int, seed: int, *,
    split_type: Literal["public", "random"] = "public",
    train_per_class: int = 20, num_val: int = 500, num_test: int = 1000, include_padding: bool = False,
    download: bool = True,
) -> NodeDataset:
    """Load a Planetoid dataset with its public split, or a seeded class-balanced random split.

    ``split_type="public"`` (default): Kipf & Welling's fixed split; ``seed`` and the counts are
    unused. ``split_type="random"``: :func:`class_balanced_split` with a generator seeded by
    ``seed`` (``train_per_class`` per class, ``num_val`` validation, ``num_test`` test nodes),
    over the labelled nodes, or over all nodes with ``include_padding=True`` (CiteSeer's padded
    nodes count as class 0, as in PyG; no difference for Cora). Missing files are downloaded
    (verified) when ``download`` is true, see :func:`~dgl_rbgt.data.load_dataset`.

    Examples
    --------
    >>> from dgl_rbgt.data import load_dataset
    >>> ds = load_dataset("cora")  # doctest: +SKIP
    >>> ds.graph.num_nodes(), ds.graph.num_edges(), int(ds.graph.ndata["train_mask"].sum())  # doctest: +SKIP
    (2708, 10556, 140)
    >>> g = load_dataset("cora", split_type="random", seed=0).graph  # doctest: +SKIP
    >>> [int(g.ndata[k].sum()) for k in ("train_mask", "val_mask", "test_mask")]  # doctest: +SKIP
    [140, 500, 1000]
    """
    name = spec.name
    check_single_split(name, split)
    if split_type not in ("public", "random"):
        raise ValueError(f"split_type must be 'public' or 'random', got {split_type!r}")
    check_download(download)
    p = _read_parts(root, name, download)
    source = str(root / "planetoid" / f"ind.{name}")

    test_idx = p["test.index"]
    test_sorted = np.sort(test_idx)
    tx, ty = p["tx"], p["ty"]
    if len(test_idx) != tx.shape[0] or len(test_idx) != ty.shape[0]:
        raise ValueError(f"{source}: test.index has {len(test_idx)} ids but tx/ty have {tx.shape[0]}/{ty.shape[0]} rows")
    num_known = p["allx"].shape[0]
    if len(test_idx) == 0 or test_sorted[0] != num_known or len(np.unique(test_idx)) != len(test_idx):
        raise ValueError(
            f"{source}: test.index must hold distinct ids starting at len(allx) = {num_known}, got "
            f"{len(test_idx)} ids from {test_sorted[0] if len(test_idx) else None}"
        )
    full_len = int(test_sorted[-1] - test_sorted[0] + 1)
    if full_len != len(test_idx):
        # CiteSeer: some test ids are missing from test.index; pad them with zero rows so that
        # row i of the stacked arrays is node i.
        offset = test_sorted - test_sorted[0]
        tx_ext = sp.lil_matrix((full_len, tx.shape[1]), dtype=np.float32)
        tx_ext[offset, :] = tx
        tx = tx_ext
        ty_ext = np.zeros((full_len, ty.shape[1]), dtype=ty.dtype)
        ty_ext[offset, :] = ty
        ty = ty_ext

    feat = np.vstack([p["allx"].toarray(), tx.toarray()]).astype(np.float32)  # (N, F)
    onehot = np.vstack([p["ally"], ty])  # (N, C)
    if feat.shape[0] != onehot.shape[0]:
        raise ValueError(f"{source}: allx/tx give {feat.shape[0]} rows but ally/ty give {onehot.shape[0]}")
    # The pickled rows of the test nodes are in test.index order: move each to its node id.
    feat[test_idx] = feat[test_sorted]
    onehot[test_idx] = onehot[test_sorted]
    num_nodes = feat.shape[0]
    label = torch.from_numpy(onehot.argmax(1).astype(np.int64))

    adj = p["graph"]
    try:
        src = np.fromiter(itertools.chain.from_iterable(itertools.repeat(k, len(v)) for k, v in adj.items()), dtype=np.int64)
        dst = np.fromiter(itertools.chain.from_iterable(adj.values()), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as err:
        raise corrupt_file_error(f"{source}.graph", "an adjacency dict {node: [neighbours]}", err) from err
    if len(adj) and max(adj) >= num_nodes:
        raise ValueError(f"{source}: the graph has node id {max(adj)} but the features have {num_nodes} rows")

    if split_type == "public":
        num_train = p["y"].shape[0]
        train = index_to_mask(torch.arange(num_train), num_nodes)
        val = index_to_mask(torch.arange(num_train, num_train + _NUM_VAL), num_nodes)
        test = index_to_mask(torch.from_numpy(test_idx), num_nodes)
    else:
        if include_padding:
            candidates = torch.arange(num_nodes)
        else:
            candidates = torch.from_numpy(np.flatnonzero(onehot.sum(1) > 0))  # not CiteSeer's padding
        ids = class_balanced_split(label, candidates, train_per_class, num_val, num_test,
                                   torch.Generator().manual_seed(seed))
        train, val, test = (index_to_mask(i, num_nodes) for i in ids)
    graph = make_graph(
        torch.from_numpy(src), torch.from_numpy(dst), num_nodes,
        feat=torch.from_numpy(feat), label=label, train_mask=train, val_mask=val, test_mask=test, source=source,
    )
    logger.info("loaded %s from %s (%s split%s): %d nodes, %d edges", name, source, split_type,
                f", seed {seed}" if split_type == "random" else "", num_nodes, graph.num_edges())
    return NodeDataset(name=name, graph=graph, num_classes=int(onehot.shape[1]), metric="accuracy", split=None, source=source)


def _spec(name: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        family="planetoid",
        metric="accuracy",
        loader=load_planetoid,
        paths=lambda root: [root / "planetoid"],
        available=lambda root, n=name: all(p.is_file() for p in _files(root, n)),
    )


SPECS = [_spec("cora"), _spec("citeseer"), _spec("pubmed")]
