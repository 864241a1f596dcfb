"""Datasets: ``load_dataset(name, ...) -> NodeDataset`` and synthetic generators.

Every loader returns one graph convention (see :class:`NodeDataset`): a homogeneous
``DGLGraph`` with symmetric, duplicate-free, self-loop-free edges, ``ndata['feat']`` float32,
``ndata['label']`` int64 and disjoint bool ``train_mask``/``val_mask``/``test_mask``.
Real datasets missing under the data root are downloaded on first use, verified against pinned
checksums (:mod:`dgl_rbgt.data.download`); ``DGL_RBGT_OFFLINE=1`` or ``download=False`` turns
that off.

Examples
--------
>>> from dgl_rbgt.data import load_dataset, list_datasets
>>> ds = load_dataset("csbm", num_nodes=1000, seed=0)
>>> ds.graph.num_nodes(), ds.metric
(1000, 'accuracy')
>>> "cora" in [d.name for d in list_datasets()]
True
"""
from .dataset import DatasetInfo, DatasetNotFoundError, NodeDataset, data_root
from .download import DatasetDownloadError
from .registry import list_datasets, load_dataset
from .synthetic import csbm_graph
from .unpickler import RestrictedUnpickler

__all__ = [
    "load_dataset",
    "list_datasets",
    "data_root",
    "NodeDataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetDownloadError",
    "csbm_graph",
    "RestrictedUnpickler",
]
