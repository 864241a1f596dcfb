"""Spexphormer's sampled neighbourhoods: draw them, store them, grow mini-batches through them.

- :class:`NeighbourTables`: per layer, ``k`` kept in-edges of every node (the one representation);
- :func:`sparsify` / :class:`Sparsifier`: draw them from attention scores (Efraimidis-Spirakis);
- :func:`grow_batch` / :func:`table_blocks`: the layer-wise inputs of
  :class:`~dgl_rbgt.nn.SpexphormerConv` for a mini-batch of targets, or for the whole graph.

``dgl_rbgt.transforms.sparsify`` is the same function, where users of DGL transforms look for it.
"""
from .growth import grow_batch, table_blocks
from .sparsifier import DEFAULT_K, METHODS, ZERO_FALLBACKS, Sparsifier, sparsify
from .tables import NeighbourTables

__all__ = ["NeighbourTables", "Sparsifier", "sparsify", "grow_batch", "table_blocks", "DEFAULT_K", "METHODS",
           "ZERO_FALLBACKS"]
