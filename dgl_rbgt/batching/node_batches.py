"""SGFormer's random node batches: induced subgraphs of a fresh random node partition."""
from __future__ import annotations

from typing import Iterator

import dgl
import torch

from ..nn.stored_features import compute_input
from .base import Batch, Batching

__all__ = ["NodeBatches", "induced_subgraph", "EVAL_FULL_GRAPH_NODES"]

#: Graphs up to this many nodes are evaluated whole; larger ones in contiguous parts of
#: ``eval_batch_size`` nodes (SGFormer's large-graph evaluation). DistDGL's node batches follow
#: the same rule, so both evaluate the same parts.
EVAL_FULL_GRAPH_NODES = 200_000


def induced_subgraph(graph: dgl.DGLGraph, nodes: torch.Tensor) -> tuple[dgl.DGLGraph, torch.Tensor]:
    """The subgraph induced by ``nodes``, and ``nodes`` in the subgraph's node order.

    For a batched graph (``dgl.batch``, e.g. the ``longrange`` dataset's components) the nodes are
    grouped by component and the subgraph is a batch again (``batch_num_nodes`` per component), so
    global attention stays inside each component; ``dgl.node_subgraph`` alone would drop that.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.batching.node_batches import induced_subgraph
    >>> g = dgl.batch([dgl.rand_graph(4, 8), dgl.rand_graph(3, 6)])
    >>> sub, order = induced_subgraph(g, torch.tensor([5, 0, 6, 2]))
    >>> order.tolist(), sub.batch_num_nodes().tolist()
    ([0, 2, 5, 6], [2, 2])
    """
    if graph.batch_size == 1:
        return _all_formats(dgl.node_subgraph(graph, nodes)), nodes
    counts = graph.batch_num_nodes().to(nodes.device)
    component = torch.repeat_interleave(torch.arange(len(counts), device=nodes.device), counts)  # (N,)
    nodes = nodes[torch.argsort(component[nodes], stable=True)]
    sub = _all_formats(dgl.node_subgraph(graph, nodes))
    kept = torch.bincount(component[nodes], minlength=len(counts))  # nodes per component
    src, _ = sub.edges()
    edges = torch.bincount(component[nodes][src.to(nodes.device)], minlength=len(counts))
    present = kept > 0
    sub.set_batch_num_nodes(kept[present].to(sub.device))
    sub.set_batch_num_edges(edges[present].to(sub.device))
    return sub, nodes


def _all_formats(sub: dgl.DGLGraph) -> dgl.DGLGraph:
    """A subgraph of a graph restricted to one sparse format inherits the restriction; the model
    may need the others (``GraphConv`` reads out-degrees), built on demand for the small subgraph."""
    if len(sub.formats()["created"]) + len(sub.formats()["not created"]) == 3:
        return sub
    return sub.formats(["coo", "csr", "csc"])


class NodeBatches(Batching):
    """SGFormer's large-graph training: a fresh random node partition per epoch, each part's
    induced subgraph in one call. Evaluation runs on the full graph when it has at most
    ``eval_full_graph_nodes`` nodes, else on fixed contiguous parts of ``eval_batch_size`` nodes.

    A graph larger than that is kept in CSC only (``self.graph``): extracting subgraphs from DGL's
    default COO graph makes DGL add the CSR beside it for good, 16 bytes per edge (1.6 GB at 10M
    nodes and 100M edges), while CSC alone extracts as fast. Subgraphs' edges then come in
    destination order instead of edge-id order: the same edges, sums in another order.
    """

    name = "node_batch"

    def __init__(
        self,
        graph: dgl.DGLGraph,
        device: torch.device | str = "cpu",
        *,
        batch_size: int,
        eval_batch_size: int | None = None,
        eval_full_graph_nodes: int = EVAL_FULL_GRAPH_NODES,
    ):
        if graph.num_nodes() > eval_full_graph_nodes:
            graph = graph.formats("csc")
        super().__init__(graph, device)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.eval_full_graph_nodes = eval_full_graph_nodes

    @classmethod
    def from_recipe(cls, recipe, graph: dgl.DGLGraph, device: torch.device, **inputs) -> "NodeBatches":
        return cls(graph, device, batch_size=recipe.train.batch_size, eval_batch_size=recipe.train.eval_batch_size)

    def _subgraph_batch(self, nodes: torch.Tensor) -> Batch:
        sub, nodes = induced_subgraph(self.graph, nodes)
        sub = sub.to(self.device)
        return Batch(nodes.to(self.device), lambda model: model(sub, compute_input(sub.ndata["feat"])))

    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[Batch]:
        # Partition all nodes, not only training ones: attention and the GCN branch need the
        # unlabelled context too. The loop keeps the loss to training nodes.
        order = torch.randperm(self.graph.num_nodes())
        for start in range(0, len(order), self.batch_size):
            yield self._subgraph_batch(order[start:start + self.batch_size])

    def eval_batches(self, nodes: torch.Tensor) -> Iterator[Batch]:
        n = self.graph.num_nodes()
        if n <= self.eval_full_graph_nodes:
            g = self.graph.to(self.device)
            yield Batch(torch.arange(n, device=self.device), lambda model: model(g, compute_input(g.ndata["feat"])))
            return
        order = torch.arange(n)
        for start in range(0, n, self.eval_batch_size):
            yield self._subgraph_batch(order[start:start + self.eval_batch_size])

    def num_train_batches(self, train_nodes: torch.Tensor) -> int:
        return -(-self.graph.num_nodes() // self.batch_size)
