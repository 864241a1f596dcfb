"""Heterophilous benchmark graphs (Platonov et al., ICLR 2023) in their ``.npz`` packaging.

Layout: ``ROOT/heterophilous/<file>.npz`` as published in yandex-research/heterophilous-graphs
``data/``, keys ``node_features`` (N, F), ``node_labels`` (N,), ``edges`` (E, 2) stored once per
undirected pair, ``train_masks``/``val_masks``/``test_masks`` (10, N). Edges are symmetrised
(duplicates and self-loops dropped); ``split`` (0..9) selects the mask row. Binary datasets
(minesweeper, tolokers, questions) are evaluated with ROC-AUC, the others with accuracy.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from .dataset import (
    DatasetSpec,
    NodeDataset,
    check_download,
    check_split_fractions,
    class_balanced_split,
    corrupt_file_error,
    index_to_mask,
    make_graph,
    not_found_error,
    random_split_masks,
)
from .download import ORIGINS, fetch_files

__all__ = ["load_heterophilous", "SPECS", "FILES"]

logger = logging.getLogger(__name__)

#: canonical name -> candidate file names, first preferred (upstream naming first).
FILES: dict[str, tuple[str, ...]] = {
    "minesweeper": ("minesweeper.npz",),
    "tolokers": ("tolokers.npz",),
    "roman-empire": ("roman_empire.npz",),
    "amazon-ratings": ("amazon_ratings.npz",),
    "questions": ("questions.npz",),
    "actor": ("actor.npz",),
    "texas": ("texas.npz",),
    "cornell": ("cornell.npz",),
    "wisconsin": ("wisconsin.npz",),
    "chameleon": ("chameleon_filtered.npz", "chameleon.npz"),
    "squirrel": ("squirrel_filtered.npz", "squirrel.npz"),
}
_BINARY = {"minesweeper", "tolokers", "questions"}
_ALIASES = {"actor": ("film",)}
_KEYS = ("node_features", "node_labels", "edges", "train_masks", "val_masks", "test_masks")


def _paths(root: Path, name: str) -> list[Path]:
    return [root / "heterophilous" / f for f in FILES[name]]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise KeyError(f"missing keys {missing}; found {npz.files}")
            return {k: npz[k] for k in _KEYS}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        raise corrupt_file_error(path, "a heterophilous-graphs .npz", err) from err


def load_heterophilous(
    spec: DatasetSpec, root: Path, split: int, seed: int, *,
    split_type: str = "fixed", train_frac: float = 0.5, val_frac: float = 0.25, download: bool = True,
) -> NodeDataset:
    """Load one heterophilous dataset with fixed split ``split``, or a seeded random split.

    ``split_type="fixed"`` (default): the file's split number ``split``; ``seed`` and the fractions
    are unused. The random splits are drawn with a generator seeded by ``seed``; ``split`` must
    then be 0:

    - ``"random"``: ``round(train_frac * N)`` training and ``round(val_frac * N)`` validation nodes
      drawn from all nodes, test the rest;
    - ``"class_balanced"``: ``round(train_frac * N / C)`` training nodes of each of the C classes
      (all of a smaller class), then ``round(val_frac * N)`` validation nodes from the rest, test
      the remainder. This is the protocol of Spexphormer's reference code on Actor (after BernNet
      and Specformer): its 50/25/25 split has a balanced training set, so the test set leans to
      the large classes.

    A missing file (the first, upstream name of the candidates) is downloaded and verified when
    ``download`` is true, see :func:`~dgl_rbgt.data.load_dataset`.

    Examples
    --------
    >>> from dgl_rbgt.data import load_dataset
    >>> ds = load_dataset("minesweeper", split=3)  # doctest: +SKIP
    >>> ds.graph.num_nodes(), ds.num_classes, ds.metric, ds.split  # doctest: +SKIP
    (10000, 2, 'roc_auc', 3)
    """
    if split_type not in ("fixed", "random", "class_balanced"):
        raise ValueError(f"split_type must be 'fixed', 'random' or 'class_balanced', got {split_type!r}")
    train_frac, val_frac = check_split_fractions(train_frac, val_frac)
    check_download(download)
    if split_type != "fixed" and split != 0:
        raise ValueError(f"split must be 0 with split_type={split_type!r} (the split is drawn from seed), got {split}")
    name = spec.name
    candidates = _paths(root, name)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None and download:
        path = fetch_files(name, "heterophilous", [candidates[0].name], candidates[0].parent, candidates)[0]
    elif path is None:
        raise not_found_error(
            name, candidates, root,
            f"Downloads are off (download=False or $DGL_RBGT_OFFLINE); with them on, load_dataset fetches "
            f"{ORIGINS['heterophilous']}/{candidates[0].name}. Or download {candidates[0].name} from "
            f"https://github.com/yandex-research/heterophilous-graphs (data/) into {root / 'heterophilous'}.",
        )
    d = _read_npz(path)
    feat, label, edges = d["node_features"], d["node_labels"], d["edges"]
    if feat.ndim != 2 or label.ndim != 1 or edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(
            f"{path}: expected node_features (N, F), node_labels (N,), edges (E, 2); got "
            f"{feat.shape}, {label.shape}, {edges.shape}"
        )
    num_nodes = feat.shape[0]
    masks = [d[k] for k in ("train_masks", "val_masks", "test_masks")]
    if any(m.ndim != 2 or m.shape != masks[0].shape or m.shape[1] != num_nodes for m in masks):
        raise ValueError(f"{path}: the masks must all have shape (num_splits, {num_nodes}), got {[m.shape for m in masks]}")
    num_splits = masks[0].shape[0]
    if not 0 <= split < num_splits:
        raise ValueError(f"split must be in [0, {num_splits - 1}] for dataset {name!r} ({num_splits} fixed splits), got {split}")
    if not np.issubdtype(label.dtype, np.integer) or (label.size and label.min() < 0):
        raise ValueError(f"{path}: node_labels must be non-negative integers, got dtype {label.dtype}")

    num_classes = int(label.max()) + 1 if label.size else 0
    generator = torch.Generator().manual_seed(seed)
    if split_type == "random":
        train, val, test = random_split_masks(num_nodes, train_frac, val_frac, generator)
    elif split_type == "class_balanced":
        per_class = int(round(train_frac * num_nodes / max(num_classes, 1)))
        ids = class_balanced_split(torch.from_numpy(label.astype(np.int64)), torch.arange(num_nodes), per_class,
                                   int(round(val_frac * num_nodes)), num_nodes, generator)
        train, val, test = (index_to_mask(i, num_nodes) for i in ids)
    else:
        train, val, test = (torch.from_numpy(m[split].astype(bool)) for m in masks)
    graph = make_graph(
        torch.from_numpy(edges[:, 0].astype(np.int64)), torch.from_numpy(edges[:, 1].astype(np.int64)), num_nodes,
        feat=torch.from_numpy(feat.astype(np.float32, copy=False)),
        label=torch.from_numpy(label.astype(np.int64, copy=False)),
        train_mask=train, val_mask=val, test_mask=test,
        source=str(path),
    )
    if split_type != "fixed":
        logger.info("loaded %s with a %s %.2f/%.2f split (seed %d) from %s: %d nodes, %d edges",
                    name, split_type, train_frac, val_frac, seed, path, num_nodes, graph.num_edges())
    else:
        logger.info("loaded %s split %d from %s: %d nodes, %d edges", name, split, path, num_nodes, graph.num_edges())
    return NodeDataset(name=name, graph=graph, num_classes=num_classes, metric=spec.metric, split=split, source=str(path))


def _spec(name: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        family="heterophilous",
        metric="roc_auc" if name in _BINARY else "accuracy",
        loader=load_heterophilous,
        paths=lambda root, n=name: _paths(root, n),
        available=lambda root, n=name: any(p.is_file() for p in _paths(root, n)),
        aliases=_ALIASES.get(name, ()),
    )


SPECS = [_spec(name) for name in FILES]
