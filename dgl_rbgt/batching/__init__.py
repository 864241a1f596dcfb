"""How the training loop turns a graph into model calls.

The loop (:mod:`dgl_rbgt.train.loop`) knows nothing about graphs: it asks a :class:`Batching` for
:class:`Batch` es, and each batch knows how to run the model on itself and which nodes its output
rows belong to. One strategy per file:

- :class:`FullGraph` (``full``): the whole graph in one call;
- :class:`NeighborSampling` (``neighbor``): DGL's neighbour sampling, for GCN/GAT;
- :class:`NodeBatches` (``node_batch``): SGFormer's random node batches;
- :class:`TableBatching` (``neighbour_tables``): Spexphormer's sampled neighbour tables.

The recipe names map to these classes in :data:`dgl_rbgt.config.registry.BATCHINGS`.
"""
from .base import Batch, Batching
from .full_graph import FullGraph
from .neighbor_sampling import NeighborSampling
from .neighbour_tables import TableBatching
from .node_batches import NodeBatches

__all__ = ["Batch", "Batching", "FullGraph", "NeighborSampling", "NodeBatches", "TableBatching"]
