"""DGL's neighbour sampling (message-flow graphs per mini-batch), for GCN and GAT."""
from __future__ import annotations

import contextlib
from typing import Iterator

import dgl
import torch

from ..nn.stored_features import compute_input
from .base import Batch, Batching

__all__ = ["NeighborSampling"]


class NeighborSampling(Batching):
    """DGL's neighbour sampling: ``model(blocks, feat)`` on message-flow graphs per mini-batch.

    Training samples ``fanouts`` neighbours per layer; evaluation uses full neighbourhoods so the
    reported numbers do not depend on a draw. DGL's CPU sampler draws from per-thread generators,
    so with several threads the same seed gives different samples; ``deterministic=True`` samples
    on one thread (the model still uses all of them) so seeded runs repeat exactly.

    ``eval_layerwise=True`` evaluates with the model's ``layerwise_inference(graph, feat)`` (the
    full graph layer by layer, as DGL's large-graph examples do) in one call instead: an L-hop
    full neighbourhood of a batch grows towards the whole graph, and each batch would recompute
    it. The model must have that method (Spexphormer's ``ScoreEstimator`` has).
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
        eval_layerwise: bool = False,
    ):
        super().__init__(graph, device)
        self.deterministic = deterministic
        self.eval_layerwise = eval_layerwise
        self.fanouts = list(fanouts)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self._train_sampler = dgl.dataloading.NeighborSampler(self.fanouts)
        self._eval_sampler = dgl.dataloading.MultiLayerFullNeighborSampler(len(self.fanouts))

    @classmethod
    def check_recipe(cls, recipe) -> None:
        layers = getattr(recipe.model, "layers", None)
        if layers is not None and len(recipe.train.fanouts) != layers:
            raise ValueError(f"train.fanouts has {len(recipe.train.fanouts)} entries but model.layers is "
                             f"{layers}: give one fanout per layer")

    @classmethod
    def from_recipe(cls, recipe, graph: dgl.DGLGraph, device: torch.device, **inputs) -> "NeighborSampling":
        t = recipe.train
        return cls(graph, device, fanouts=t.fanouts, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size)

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
                lambda model, blocks=blocks: model(blocks, compute_input(blocks[0].srcdata["feat"])),
            )

    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[Batch]:
        return self._batches(self._train_sampler, train_nodes.cpu(), self.batch_size, shuffle=True)

    def eval_batches(self, nodes: torch.Tensor) -> Iterator[Batch]:
        if not self.eval_layerwise:
            return self._batches(self._eval_sampler, nodes.cpu(), self.eval_batch_size, shuffle=False)
        g = self.graph.to(self.device)
        nodes = nodes.to(self.device)

        def run(model):
            if not callable(getattr(model, "layerwise_inference", None)):
                raise TypeError(f"eval_layerwise=True needs a model with layerwise_inference(graph, feat); "
                                f"{type(model).__name__} has none")
            return model.layerwise_inference(g, g.ndata["feat"])[nodes]

        return iter([Batch(nodes, run)])

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
