"""OGB node-property datasets through ``ogb.nodeproppred.DglNodePropPredDataset``.

Layout: ``ROOT/ogb/<ogbn_name>/`` exactly as ogb writes it (``raw/``, ``split/<type>/``,
``processed/dgl_data_processed``, ``RELEASE_v<version>.txt``); on a connected machine ogb
downloads the folder there on first use. Offline it works as soon as the raw or processed files
are in place. The official split comes from ``get_idx_split()``; the metric is
``"ogb:<name>"`` (ogb's Evaluator). Edges are symmetrised (arxiv and papers100M are directed
upstream), self-loops and duplicates dropped.

``ogbn-proteins`` has no node features: as is common practice, a node's features are the mean of
the features of its incident edges; its labels are the 112 binary tasks as float32 ``(N, 112)``.
``ogbn-papers100M`` labels only its split nodes (NaN elsewhere): unlabelled nodes get label -1.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .dataset import (DatasetNotFoundError, DatasetSpec, NodeDataset, check_download, check_single_split,
                      corrupt_file_error, index_to_mask, make_graph, not_found_error)

__all__ = ["load_ogb", "SPECS", "NAMES"]

logger = logging.getLogger(__name__)

NAMES = ("ogbn-arxiv", "ogbn-products", "ogbn-proteins", "ogbn-papers100M")
_ALIASES = {"ogbn-arxiv": ("arxiv",), "ogbn-products": ("products",), "ogbn-proteins": ("proteins",), "ogbn-papers100M": ("papers100m",)}
_PROCESSED = Path("processed") / "dgl_data_processed"
_RAW = (Path("raw") / "edge.csv.gz", Path("raw") / "data.npz")  # csv / binary (papers100M) layouts


def _dataset_dir(root: Path, name: str) -> Path:
    """The folder ogb uses: ``ROOT/ogb/ogbn_<x>``, or ``ogbn_<x>_dgl`` when that exists."""
    base = root / "ogb" / name.replace("-", "_")
    dgl_dir = base.with_name(base.name + "_dgl")
    return dgl_dir if dgl_dir.is_dir() else base


def _present(ddir: Path) -> bool:
    return any((ddir / rel).is_file() for rel in (_PROCESSED, *_RAW))


def _meta(name: str):
    import pandas as pd
    import ogb.nodeproppred

    master = pd.read_csv(Path(ogb.nodeproppred.__file__).with_name("master.csv"), index_col=0, keep_default_na=False)
    return master[name]


def _open(name: str, root: Path, ddir: Path, download: bool):
    """Construct ogb's dataset object, turning its prompts and network errors into our errors."""
    present = _present(ddir)
    meta = _meta(name)
    if not present and not download:
        raise not_found_error(
            name, [ddir / rel for rel in (_PROCESSED, *_RAW)], root,
            f"With download=True (the default) ogb downloads it from {meta['url']} on a connected machine; "
            f"offline, copy a downloaded {ddir.name}/ folder to {ddir.parent}.",
        )
    release = ddir / f"RELEASE_v{meta['version']}.txt"
    if ddir.is_dir() and not release.is_file():
        # ogb itself would stop and ask on stdin whether to delete the folder.
        raise ValueError(
            f"{ddir} exists but has no {release.name}: it is incomplete or from another OGB release. "
            f"Delete it to download again, or add the marker file if it holds version {meta['version']}."
        )
    try:
        from ogb.nodeproppred import DglNodePropPredDataset
    except ImportError as err:  # pragma: no cover - ogb is a dependency
        raise ImportError(f"loading {name} needs the 'ogb' package with DGL support: {err}") from err

    try:
        return DglNodePropPredDataset(name=name, root=os.fspath(root / "ogb"))
    except (SystemExit, EOFError, OSError, RuntimeError) as err:
        if present:
            raise corrupt_file_error(ddir, "an OGB dataset folder", err) from err
        # ogb asks on stdin before downloads over 1 GB (EOFError without a terminal, SystemExit
        # when declined); no network gives a URLError (an OSError).
        raise DatasetNotFoundError(
            f"dataset {name!r} is not in {ddir} and ogb could not download it from {meta['url']} "
            f"({type(err).__name__}: {err}). Download it on a connected machine (load_dataset({name!r}) "
            f"there, or fetch and unzip the url into {ddir.parent}), then point to the data root with "
            f"DGL_RBGT_DATA or the recipe's dataset.root."
        ) from err
    except Exception as err:
        raise corrupt_file_error(ddir, "an OGB dataset folder", err) from err


def load_ogb(spec: DatasetSpec, root: Path, split: int, seed: int, *, download: bool = True) -> NodeDataset:
    """Load an OGB node-property dataset with its official split (``seed`` is unused).

    ``download=False`` raises :class:`DatasetNotFoundError` instead of letting ogb download.

    Examples
    --------
    >>> from dgl_rbgt.data import load_dataset
    >>> ds = load_dataset("ogbn-arxiv")  # doctest: +SKIP
    >>> ds.graph.num_nodes(), ds.num_classes, ds.metric  # doctest: +SKIP
    (169343, 40, 'ogb:ogbn-arxiv')
    """
    name = spec.name
    check_single_split(name, split)
    check_download(download)
    ddir = _dataset_dir(root, name)
    dataset = _open(name, root, ddir, download)
    try:
        idx = dataset.get_idx_split()
    except FileNotFoundError as err:
        raise not_found_error(name, [ddir / "split"], root, f"The split files are missing ({err}); download the dataset again.") from err
    raw_graph, labels = dataset[0]
    num_nodes = raw_graph.num_nodes()
    src, dst = raw_graph.edges()

    if name == "ogbn-proteins":
        # Mean of incident edge features; ogb stores each undirected edge in both directions.
        efeat = raw_graph.edata["feat"].to(torch.float32)  # (E, 8)
        deg = torch.bincount(dst, minlength=num_nodes).clamp_(min=1).to(torch.float32)  # (N,)
        feat = torch.zeros(num_nodes, efeat.shape[1]).index_add_(0, dst, efeat) / deg[:, None]  # (N, 8)
        label = labels.to(torch.float32)  # (N, 112) multi-label targets
        num_classes = int(dataset.num_tasks)
    else:
        feat = raw_graph.ndata["feat"]
        label = labels.reshape(-1)  # (N,)
        if torch.is_floating_point(label):  # papers100M: NaN marks unlabelled nodes
            label = torch.nan_to_num(label, nan=-1.0)
        label = label.to(torch.int64)
        num_classes = int(dataset.num_classes)

    graph = make_graph(
        src, dst, num_nodes, feat=feat, label=label,
        train_mask=index_to_mask(idx["train"], num_nodes),
        val_mask=index_to_mask(idx["valid"], num_nodes),
        test_mask=index_to_mask(idx["test"], num_nodes),
        source=str(ddir), check_finite=False,
    )
    logger.info("loaded %s from %s: %d nodes, %d edges", name, ddir, num_nodes, graph.num_edges())
    return NodeDataset(name=name, graph=graph, num_classes=num_classes, metric=spec.metric, split=None, source=str(ddir))


def _spec(name: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        family="ogb",
        metric=f"ogb:{name}",
        loader=load_ogb,
        paths=lambda root, n=name: [_dataset_dir(root, n)],
        available=lambda root, n=name: _present(_dataset_dir(root, n)),
        aliases=_ALIASES[name],
    )


SPECS = [_spec(name) for name in NAMES]
