"""The dataset record every loader returns, the data root, and the graph-building helpers.

All loaders end in :func:`make_graph`, so every dataset leaves this package in one convention:
a homogeneous ``DGLGraph`` whose edges are symmetric, without duplicates and without self-loops,
with ``ndata['feat']`` float32 ``(N, F)``, ``ndata['label']`` int64 ``(N,)`` (float ``(N, T)`` for
multi-label tasks) and disjoint bool ``ndata['train_mask' | 'val_mask' | 'test_mask']``.
"""
from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import dgl
import torch

from .._checks import check_bool, check_feat
from ..errors import UserError

__all__ = [
    "NodeDataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSpec",
    "generated_spec",
    "data_root",
    "symmetrize_edges",
    "make_graph",
    "random_split_masks",
    "class_balanced_split",
    "check_split_fractions",
    "index_to_mask",
    "check_single_split",
    "check_download",
    "corrupt_file_error",
    "not_found_error",
]

logger = logging.getLogger(__name__)

#: Environment variable that points to the folder holding the datasets.
DATA_ENV = "DGL_RBGT_DATA"


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset's files are not where the loader looked.

    The message names every path that was looked at and how to get the data there. Raised when
    the files are missing and downloads are off; a failed download raises the subclass
    :class:`~dgl_rbgt.data.DatasetDownloadError`.

    Examples
    --------
    >>> from dgl_rbgt.data import load_dataset, DatasetNotFoundError
    >>> try:
    ...     load_dataset("cora", root="/nonexistent", download=False)
    ... except DatasetNotFoundError as err:
    ...     print("looked at" in str(err))
    True
    """


@dataclass(frozen=True)
class NodeDataset:
    """A node-classification dataset: one graph plus what a trainer needs to know about it.

    Attributes
    ----------
    name : str
        Canonical dataset name, e.g. ``"cora"``.
    graph : dgl.DGLGraph
        Homogeneous graph with symmetric, duplicate-free, self-loop-free edges and the node data
        ``feat`` (float32 ``(N, F)``), ``label`` (int64 ``(N,)``, or float32 ``(N, T)`` for the
        multi-label ``ogbn-proteins``), ``train_mask``, ``val_mask``, ``test_mask`` (bool ``(N,)``,
        pairwise disjoint).
    num_classes : int
        Number of output units the model needs (2 for the binary ROC-AUC datasets: the metric
        reads the softmax probability of class 1; 112 for ``ogbn-proteins``).
    metric : str
        ``"accuracy"``, ``"roc_auc"`` or ``"ogb:<ogb dataset name>"``.
    split : int or None
        Index of the fixed split that was selected, ``None`` when the dataset has a single split
        (public, official or seeded random).
    source : str
        Where the data was read from (a path), or ``"generated"``.

    Examples
    --------
    >>> from dgl_rbgt.data import load_dataset
    >>> ds = load_dataset("csbm", num_nodes=100, seed=0)
    >>> ds.name, ds.num_classes, ds.metric, ds.split, ds.source
    ('csbm', 5, 'accuracy', None, 'generated')
    >>> ds.graph.ndata["feat"].shape
    torch.Size([100, 32])
    """

    name: str
    graph: dgl.DGLGraph = field(repr=False)
    num_classes: int
    metric: str
    split: int | None
    source: str

    def __repr__(self) -> str:
        g = self.graph
        return (
            f"NodeDataset(name={self.name!r}, num_nodes={g.num_nodes()}, num_edges={g.num_edges()}, "
            f"num_features={g.ndata['feat'].shape[1]}, num_classes={self.num_classes}, "
            f"metric={self.metric!r}, split={self.split!r}, source={self.source!r})"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """One row of :func:`~dgl_rbgt.data.list_datasets`.

    Attributes
    ----------
    name : str
        Canonical name accepted by :func:`~dgl_rbgt.data.load_dataset`.
    family : str
        ``"planetoid"``, ``"heterophilous"``, ``"shchur"``, ``"ogb"`` or ``"synthetic"``.
    metric : str
        The metric the dataset is evaluated with.
    location : str
        The path under the resolved data root that the loader reads, or the first it looks at
        when none is there (``"generated"`` for synthetic data). When the files are not there,
        followed by ``" (downloads on first use)"``, or by ``" (downloads off:
        $DGL_RBGT_OFFLINE)"`` when that variable turns downloads off.
    available : bool
        Whether the files are there now (synthetic data is always available; a dataset read
        from files that is not there downloads on first use on a connected machine).

    Examples
    --------
    >>> from dgl_rbgt.data import list_datasets
    >>> [d for d in list_datasets() if d.name == "csbm"]
    [DatasetInfo(name='csbm', family='synthetic', metric='accuracy', location='generated', available=True)]
    """

    name: str
    family: str
    metric: str
    location: str
    available: bool


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry (internal): how to find and load one dataset.

    ``loader(spec, root, split, seed, **params)`` returns a :class:`NodeDataset`; its keyword-only
    parameters (or ``param_source``'s) are the dataset's allowed ``**params``, with their
    defaults living there only.
    ``paths(root)`` lists the candidate locations, first preferred; ``available(root)`` tells
    whether the data is present.
    """

    name: str
    family: str
    metric: str
    loader: Callable[..., NodeDataset]
    paths: Callable[[Path], Sequence[Path]]
    available: Callable[[Path], bool]
    aliases: tuple[str, ...] = ()
    param_source: Callable[..., object] | None = None

    @property
    def params(self) -> dict[str, inspect.Parameter]:
        """The dataset's extra keyword parameters (name -> parameter with its default).

        The loader's keyword-only parameters, or, when ``param_source`` is set (a generator the
        loader forwards to), that function's parameters other than ``seed``.
        """
        if self.param_source is not None:
            sig = inspect.signature(self.param_source)
            return {n: p for n, p in sig.parameters.items() if n != "seed"}
        sig = inspect.signature(self.loader)
        return {n: p for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def generated_spec(name: str, loader: Callable[..., NodeDataset], param_source: Callable[..., object]) -> DatasetSpec:
    """The registry entry of a generated dataset: no files, always available, accuracy."""
    return DatasetSpec(name=name, family="synthetic", metric="accuracy", loader=loader, paths=lambda root: [],
                       available=lambda root: True, param_source=param_source)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the folder that holds the datasets.

    Order: the ``root`` argument, else the environment variable ``DGL_RBGT_DATA``, else
    ``~/.cache/dgl_rbgt/data``. ``~`` is expanded; the folder need not exist.

    Examples
    --------
    >>> from dgl_rbgt.data import data_root
    >>> str(data_root("/tmp/my-data"))
    '/tmp/my-data'
    """
    if root is None:
        env = os.environ.get(DATA_ENV)
        root = env if env else Path.home() / ".cache" / "dgl_rbgt" / "data"
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or os.PathLike, got {type(root).__name__} {root!r}")
    return Path(root).expanduser()


def not_found_error(name: str, looked_at: Sequence[Path], root: Path, how: str) -> DatasetNotFoundError:
    """Build the error for missing files: every path looked at, the root, and how to get them."""
    paths = "\n  ".join(str(p) for p in looked_at)
    return DatasetNotFoundError(
        f"dataset {name!r} not found; looked at:\n  {paths}\n"
        f"(data root {root}, resolved from the root argument, else ${DATA_ENV}, else "
        f"~/.cache/dgl_rbgt/data). {how} Then point to the folder with the environment variable "
        f"{DATA_ENV} or the recipe's dataset.root."
    )


def corrupt_file_error(path: Path | str, what: str, err: BaseException) -> ValueError:
    """Build the error for a file that exists but cannot be read as ``what``."""
    return ValueError(f"{path} could not be read as {what}: {type(err).__name__}: {err}")


def check_single_split(name: str, split: int) -> None:
    """Datasets with one split (public, official or seeded random) accept only ``split=0``."""
    if split != 0:
        raise ValueError(
            f"split must be 0 for dataset {name!r}, which has a single split, got {split}; "
            f"use seed to draw a different random split where the dataset has one"
        )


def check_download(download: bool) -> None:
    """The loaders' ``download`` parameter must be a bool (``"no"`` would read as true).

    Examples
    --------
    >>> from dgl_rbgt.data.dataset import check_download
    >>> check_download("no")
    Traceback (most recent call last):
    ...
    TypeError: download must be a bool, got str 'no'
    """
    check_bool(download, "download")


def symmetrize_edges(src: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Make an edge list symmetric, drop self-loops and duplicates; result sorted by (src, dst).

    Each directed edge ``u -> v`` (``u != v``) yields ``u -> v`` and ``v -> u`` exactly once.
    Vectorised: one ``torch.unique`` over int64 keys ``u * N + v`` (needs ``N**2 < 2**63``).

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.data.dataset import symmetrize_edges
    >>> s, d = symmetrize_edges(torch.tensor([0, 1, 2, 2]), torch.tensor([1, 0, 2, 0]), 3)
    >>> s.tolist(), d.tolist()
    ([0, 0, 1, 2], [1, 2, 0, 0])
    """
    if num_nodes >= 3_037_000_499:  # floor(sqrt(2**63 - 1)): the keys would overflow int64
        raise ValueError(f"num_nodes must be below 3037000499 to symmetrize edges, got {num_nodes}")
    src = torch.as_tensor(src, dtype=torch.int64).reshape(-1)
    dst = torch.as_tensor(dst, dtype=torch.int64).reshape(-1)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    n = int(num_nodes)
    keys = torch.cat([src * n + dst, dst * n + src])  # (2E,) both directions
    del src, dst
    keys = torch.unique(keys, sorted=True)  # dedupe; sorted by (src, dst)
    return torch.div(keys, n, rounding_mode="floor"), torch.remainder(keys, n)


def index_to_mask(index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Bool mask ``(num_nodes,)`` that is True at ``index``.

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.data.dataset import index_to_mask
    >>> index_to_mask(torch.tensor([0, 2]), 4).tolist()
    [True, False, True, False]
    """
    mask = torch.zeros(num_nodes, dtype=torch.bool)
    mask[torch.as_tensor(index, dtype=torch.int64)] = True
    return mask


def random_split_masks(
    num_nodes: int, train_frac: float, val_frac: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random disjoint train/val/test masks: ``round(frac * N)`` nodes each, test the rest.

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.data.dataset import random_split_masks
    >>> tr, va, te = random_split_masks(10, 0.6, 0.2, torch.Generator().manual_seed(0))
    >>> int(tr.sum()), int(va.sum()), int(te.sum())
    (6, 2, 2)
    """
    perm = torch.randperm(num_nodes, generator=generator)
    n_train = int(round(train_frac * num_nodes))
    n_val = min(int(round(val_frac * num_nodes)), num_nodes - n_train)
    return (
        index_to_mask(perm[:n_train], num_nodes),
        index_to_mask(perm[n_train : n_train + n_val], num_nodes),
        index_to_mask(perm[n_train + n_val :], num_nodes),
    )


def class_balanced_split(
    label: torch.Tensor, candidates: torch.Tensor, train_per_class: int, num_val: int, num_test: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``(train, val, test)`` node ids: ``train_per_class`` per class, then val/test from the rest.

    Only ``candidates`` (node ids) are drawn. A class with fewer than ``train_per_class``
    candidates puts all of them in training. Validation and test are drawn from one random
    permutation of the remaining candidates (``num_val`` then ``num_test``; fewer if they run out).

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.data.dataset import class_balanced_split
    >>> label = torch.tensor([0, 1] * 10)
    >>> tr, va, te = class_balanced_split(label, torch.arange(20), 3, 4, 5, torch.Generator().manual_seed(0))
    >>> torch.bincount(label[tr]).tolist(), len(va), len(te)
    ([3, 3], 4, 5)
    """
    for value, arg in ((train_per_class, "train_per_class"), (num_val, "num_val"), (num_test, "num_test")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{arg} must be a non-negative int, got {value!r}")
    cand_label = label[candidates]
    train, rest = [], []
    for c in torch.unique(cand_label).tolist():
        ids = candidates[cand_label == c]
        ids = ids[torch.randperm(len(ids), generator=generator)]
        train.append(ids[:train_per_class])
        rest.append(ids[train_per_class:])
    train = torch.sort(torch.cat(train)).values
    rest = torch.cat(rest)
    rest = rest[torch.randperm(len(rest), generator=generator)]
    val = torch.sort(rest[:num_val]).values
    test = torch.sort(rest[num_val : num_val + num_test]).values
    return train, val, test


def check_split_fractions(train_frac: float, val_frac: float) -> tuple[float, float]:
    """Validate random-split fractions: train in (0, 1], val in [0, 1), sum at most 1."""
    for value, name in ((train_frac, "train_frac"), (val_frac, "val_frac")):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    if not 0 < train_frac <= 1:
        raise ValueError(f"train_frac must be in (0, 1], got {train_frac}")
    if not 0 <= val_frac < 1:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    if train_frac + val_frac > 1 + 1e-12:
        raise ValueError(f"train_frac + val_frac must be at most 1, got {train_frac} + {val_frac}")
    return float(train_frac), float(val_frac)


def make_graph(
    src: torch.Tensor,
    dst: torch.Tensor,
    num_nodes: int,
    *,
    feat: torch.Tensor,
    label: torch.Tensor,
    train_mask: torch.Tensor,
    val_mask: torch.Tensor,
    test_mask: torch.Tensor,
    source: str,
    check_finite: bool = True,
    feat_dtype: torch.dtype = torch.float32,
) -> dgl.DGLGraph:
    """Build the canonical graph: symmetrised edges plus the five node-data fields.

    ``source`` names the file the data came from, for the errors raised when the contents are
    inconsistent (wrong shapes, overlapping masks, edge ids out of range). Features are stored
    as ``feat_dtype`` (float32 unless a generator already made half-precision ones).
    """
    src = torch.as_tensor(src, dtype=torch.int64).reshape(-1)
    dst = torch.as_tensor(dst, dtype=torch.int64).reshape(-1)
    if src.numel() != dst.numel():
        raise ValueError(f"{source}: edge source and destination lists differ in length ({src.numel()} vs {dst.numel()})")
    if src.numel() and (min(int(src.min()), int(dst.min())) < 0 or max(int(src.max()), int(dst.max())) >= num_nodes):
        raise ValueError(f"{source}: edge endpoints must lie in [0, {num_nodes}), got ids outside that range")
    try:
        check_feat(feat, f"{source}: feat", rows=num_nodes, ndim=2, finite=check_finite)
    except TypeError as err:
        raise ValueError(str(err)) from None
    feat = feat.to(feat_dtype)
    if label.shape[0] != num_nodes or label.dim() not in (1, 2):
        raise ValueError(f"{source}: labels must have shape ({num_nodes},) or ({num_nodes}, T), got {tuple(label.shape)}")
    if label.dim() == 1:
        label = label.to(torch.int64)
    masks = {"train_mask": train_mask, "val_mask": val_mask, "test_mask": test_mask}
    for key, mask in masks.items():
        if mask.shape != (num_nodes,):
            raise ValueError(f"{source}: {key} must have shape ({num_nodes},), got {tuple(mask.shape)}")
        masks[key] = mask.to(torch.bool)
    overlap = (
        (masks["train_mask"] & masks["val_mask"]) | (masks["train_mask"] & masks["test_mask"]) | (masks["val_mask"] & masks["test_mask"])
    )
    if bool(overlap.any()):
        raise ValueError(f"{source}: train/val/test masks overlap on {int(overlap.sum())} nodes; they must be disjoint")

    src, dst = symmetrize_edges(src, dst, num_nodes)
    graph = dgl.graph((src, dst), num_nodes=num_nodes, idtype=torch.int64)
    graph.ndata["feat"] = feat
    graph.ndata["label"] = label
    graph.ndata.update(masks)
    return graph
