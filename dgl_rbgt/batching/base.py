"""How the training loop turns a graph into model calls.

The loop in :mod:`dgl_rbgt.train.loop` knows nothing about graphs: it asks a :class:`Batching`
for batches, and each :class:`Batch` knows how to run the model on itself and which nodes its
output rows belong to. Full-graph training, DGL's neighbour sampling, SGFormer's random node
batches and Spexphormer's neighbour tables are all such strategies, so one loop serves them all.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import contextlib

import dgl
import torch
from torch import nn

__all__ = ["Batch", "Batching", "FullGraph", "NeighborSampling", "NodeBatches", "BATCHINGS"]


@dataclass
class Batch:
    """One model call: ``run(model)`` returns logits whose rows belong to ``output_nodes``."""

    output_nodes: torch.Tensor  # (B,) int64 global node ids, in the order of the logits' rows
    run: Callable[[nn.Module], torch.Tensor]  # model -> (B, C) logits


class Batching(ABC):
    """A strategy that cuts one graph into model calls for training and for evaluation.

    ``train_batches`` may use randomness only from torch's global generator (the loop seeds it
    per epoch), so a resumed run draws the same batches as an uninterrupted one.
    """

    name: ClassVar[str]

    def __init__(self, graph: dgl.DGLGraph, device: torch.device | str = "cpu"):
        self.graph = graph
        self.device = torch.device(device)

    @abstractmethod
    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[Batch]:
        """Batches whose output nodes cover ``train_nodes`` (at least) once."""

    @abstractmethod
    def eval_batches(self, nodes: torch.Tensor) -> Iterator[Batch]:
        """Deterministic batches whose output nodes cover ``nodes``."""

    def num_train_batches(self, train_nodes: torch.Tensor) -> int | None:
        """How many batches an epoch has, for progress bars (None when unknown)."""
        return None


class FullGraph(Batching):
    """The whole graph in one call: ``model(graph, feat)`` returns logits for every node."""

    name = "full"

    def __init__(self, graph: dgl.DGLGraph, device: torch.device | str = "cpu"):
        super().__init__(graph.to(device), device)
        self._all = torch.arange(graph.num_nodes(), device=self.device)

    def _batch(self) -> Batch:
        g = self.graph
        return Batch(self._all, lambda model: model(g, g.ndata["feat"]))

    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[Batch]:
        yield self._batch()

    def eval_batches(self, nodes: torch.Tensor) -> Iterator[Batch]:
        yield self._batch()

    def num_train_batches(self, train_nodes: torch.Tensor) -> int:
        return 1


class NeighborSampling(Batching):
    """DGL's neighbour sampling: ``model(blocks, feat)`` on message-flow graphs per mini-batch.

    Training samples ``fanouts`` neighbours per layer; evaluation uses full neighbourhoods so the
    reported numbers do not depend on a draw. DGL's CPU sampler draws from per-thread generators,
    so with several threads the same seed gives different samples; ``deterministic=True`` samples
    on one thread (the model still uses all of them) so seeded runs repeat exactly.
    """

    name = "neighbor"

    def __init__(
        self,
        graph: dgl.DGLGraph,
        device: torch.device | str = "cpu",
        *,
        fanouts: list[int],
        batch_size: int,
        eval_batch_size: int | None = None,
        deterministic: bool = True,
    ):
        super().__init__(graph, device)
        self.deterministic = deterministic
        self.fanouts = list(fanouts)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self._train_sampler = dgl.dataloading.NeighborSampler(self.fanouts)
        self._eval_sampler = dgl.dataloading.MultiLayerFullNeighborSampler(len(self.fanouts))

    def _batches(self, sampler, nodes: torch.Tensor, batch_size: int, shuffle: bool) -> Iterator[Batch]:
        if shuffle:
            nodes = nodes[torch.randperm(len(nodes))]
        for start in range(0, len(nodes), batch_size):
            seeds = nodes[start:start + batch_size]
            with _one_thread() if self.deterministic else contextlib.nullcontext():
                _, output_nodes, blocks = sampler.sample(self.graph, seeds)
            blocks = [b.to(self.device) for b in blocks]
            yield Batch(
                output_nodes.to(self.device),
                lambda model, blocks=blocks: model(blocks, blocks[0].srcdata["feat"]),
            )

    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[Batch]:
        return self._batches(self._train_sampler, train_nodes.cpu(), self.batch_size, shuffle=True)

    def eval_batches(self, nodes: torch.Tensor) -> Iterator[Batch]:
        return self._batches(self._eval_sampler, nodes.cpu(), self.eval_batch_size, shuffle=False)

    def num_train_batches(self, train_nodes: torch.Tensor) -> int:
        return -(-len(train_nodes) // self.batch_size)


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


BATCHINGS = {cls.name: cls for cls in (FullGraph, NeighborSampling, NodeBatches)}
