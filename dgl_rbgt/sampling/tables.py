"""Spexphormer's sampled neighbourhoods: fixed-degree neighbour tables, one per layer.

The one representation of "the ``k`` in-edges kept for every node and layer", drawn by
:func:`~dgl_rbgt.sampling.sparsify`, grown into mini-batches by
:func:`~dgl_rbgt.sampling.grow_batch`, and stored in DistDGL partitions by
:mod:`dgl_rbgt.distributed.tables`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import dgl
import torch

from ..conventions import ETYPE

__all__ = ["NeighbourTables"]


@dataclass
class NeighbourTables:
    """Fixed-degree neighbour tables, one per layer, as drawn by :func:`sparsify`.

    Row ``v`` of layer ``l`` lists the ``k_l`` incoming edges kept for destination node ``v``.
    Entries of a deficient node may repeat (draws with replacement); entries of a node without
    candidates are masked (``valid`` False, see the module notes).

    Attributes
    ----------
    tables : list of Tensor
        Per layer, ``(N, k_l)`` int64 source node ids.
    edge_ids : list of Tensor or None
        Per layer, ``(N, k_l)`` int64 ids of the kept edges in the input graph (-1 when masked);
        None in compact draws (``Sparsifier.draw(compact=True)``: 32-bit tables, 8-bit types),
        as :class:`~dgl_rbgt.batching.TableBatching` keeps them.
    etypes : list of Tensor
        Per layer, ``(N, k_l)`` int64 edge-type codes (``graph.edata['etype']``, 0 without it).
    valid : list of Tensor
        Per layer, ``(N, k_l)`` bool; False only for the rows of nodes without candidates.
    num_nodes : int
        Number of nodes of the input graph.
    graphs : list of DGLGraph or None
        :meth:`to_graphs` of the tables when :func:`sparsify` was called with ``return_graphs``.
    """

    tables: list[torch.Tensor]
    edge_ids: list[torch.Tensor] | None
    etypes: list[torch.Tensor]
    valid: list[torch.Tensor]
    num_nodes: int
    graphs: list[dgl.DGLGraph] | None = field(default=None, repr=False)

    @property
    def num_layers(self) -> int:
        return len(self.tables)

    @property
    def ks(self) -> list[int]:
        """Number of entries per node, per layer."""
        return [int(t.shape[1]) for t in self.tables]

    @property
    def all_valid(self) -> bool:
        """True when no entry is masked (every node had a candidate in every layer)."""
        return all(bool(v.all()) for v in self.valid)

    def to(self, device: torch.device | str) -> "NeighbourTables":
        """A copy with every table on ``device`` (graphs included)."""
        return NeighbourTables(
            [t.to(device) for t in self.tables],
            None if self.edge_ids is None else [t.to(device) for t in self.edge_ids],
            [t.to(device) for t in self.etypes], [t.to(device) for t in self.valid], self.num_nodes,
            None if self.graphs is None else [g.to(device) for g in self.graphs])

    def to_graphs(self) -> list[dgl.DGLGraph]:
        """One DGLGraph per layer with the kept edges ``tables[l][v, j] -> v``.

        Every node with a candidate has exactly ``k_l`` in-edges (repeated draws become parallel
        edges); masked entries are left out. Edges are ordered row by row: edge ``v * k_l + j`` is
        entry ``(v, j)`` when no entry is masked. ``edata[dgl.EID]`` holds the edge ids in the
        input graph and ``edata['etype']`` the edge types.
        """
        if self.edge_ids is None:
            raise ValueError("these tables were stored without edge ids (a compact copy); draw them "
                             "with sparsify() or Sparsifier.draw() to build graphs")
        graphs = []
        for table, eids, etypes, valid in zip(self.tables, self.edge_ids, self.etypes, self.valid):
            n, k = table.shape
            dst = torch.arange(n, device=table.device).repeat_interleave(k)  # (N * k,) row-major
            keep = valid.reshape(-1)
            g = dgl.graph((table.reshape(-1)[keep], dst[keep]), num_nodes=self.num_nodes,
                          device=table.device)
            g.edata[dgl.EID] = eids.reshape(-1)[keep]
            g.edata[ETYPE] = etypes.reshape(-1)[keep]
            graphs.append(g)
        return graphs
