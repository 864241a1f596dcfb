"""Full-graph batching: one model call on the whole graph."""
from __future__ import annotations

from typing import Iterator

import dgl
import torch

from ..nn.stored_features import whole_graph_input
from .base import Batch, Batching

__all__ = ["FullGraph"]


class FullGraph(Batching):
    """The whole graph in one call: ``model(graph, feat)`` returns logits for every node.

    Features stored in half precision reach the model as they are when it projects them in
    chunks itself (``model.projects_stored_features``), else cast for the call.
    """

    name = "full"

    def __init__(self, graph: dgl.DGLGraph, device: torch.device | str = "cpu"):
        super().__init__(graph.to(device), device)
        self._all = torch.arange(graph.num_nodes(), device=self.device)

    def _batch(self) -> Batch:
        g = self.graph
        return Batch(self._all, lambda model: model(g, whole_graph_input(model, g.ndata["feat"])))

    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[Batch]:
        yield self._batch()

    def eval_batches(self, nodes: torch.Tensor) -> Iterator[Batch]:
        yield self._batch()

    def num_train_batches(self, train_nodes: torch.Tensor) -> int:
        return 1
