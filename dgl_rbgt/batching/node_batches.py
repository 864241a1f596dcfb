"""SGFormer's random node batches: induced subgraphs of a fresh random node partition."""
from __future__ import annotations

from typing import Iterator

import dgl
import torch

from .base import Batch, Batching

__all__ = ["NodeBatches"]


class NodeBatches(Batching):
    """SGFormer's large-graph training: a fresh random node partition per epoch, each part's
    induced subgraph in one call. Evaluation runs on the full graph when it has at most
    ``eval_full_graph_nodes`` nodes, else on fixed contiguous parts of ``eval_batch_size`` nodes.
    """

    name = "node_batch"

    def __init__(
        self,
        graph: dgl.DGLGraph,
        device: torch.device | str = "cpu",
        *,
        batch_size: int,
        eval_batch_size: int | None = None,
        eval_full_graph_nodes: int = 200_000,
    ):
        super().__init__(graph, device)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.eval_full_graph_nodes = eval_full_graph_nodes

    @classmethod
    def from_recipe(cls, recipe, graph: dgl.DGLGraph, device: torch.device, **inputs) -> "NodeBatches":
        return cls(graph, device, batch_size=recipe.train.batch_size, eval_batch_size=recipe.train.eval_batch_size)

    def _subgraph_batch(self, nodes: torch.Tensor) -> Batch:
        sub = dgl.node_subgraph(self.graph, nodes).to(self.device)
        return Batch(nodes.to(self.device), lambda model: model(sub, sub.ndata["feat"]))

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
            yield Batch(torch.arange(n, device=self.device), lambda model: model(g, g.ndata["feat"]))
            return
        order = torch.arange(n)
        for start in range(0, n, self.eval_batch_size):
            yield self._subgraph_batch(order[start:start + self.eval_batch_size])

    def num_train_batches(self, train_nodes: torch.Tensor) -> int:
        return -(-self.graph.num_nodes() // self.batch_size)
