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

import dgl
import torch
from torch import nn

__all__ = ["Batch", "Batching"]


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

    name: ClassVar[str]  # the recipe's train.batching
    #: Name of the batching's own recipe section, generated from its constructor's keyword
    #: arguments minus ``section_skip`` (None: everything it needs is in ``train:``).
    section: ClassVar[str | None] = None
    section_skip: ClassVar[tuple[str, ...]] = ()

    def __init__(self, graph: dgl.DGLGraph, device: torch.device | str = "cpu"):
        #: The graph the batches come from. A batching may keep it in another sparse format than
        #: it was given; the caller should then drop its own reference and use this one, so that
        #: the process holds one copy of the edges.
        self.graph = graph
        self.device = torch.device(device)

    @classmethod
    def check_recipe(cls, recipe) -> None:
        """Cross-checks between this batching and the rest of a validated recipe (``ValueError``
        naming the keys); called by the recipe schema before any work."""

    @classmethod
    def from_recipe(cls, recipe, graph: dgl.DGLGraph, device: torch.device, **inputs) -> "Batching":
        """The batching a recipe asks for; ``inputs`` are what an earlier stage computed."""
        return cls(graph, device)

    @abstractmethod
    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[Batch]:
        """Batches whose output nodes cover ``train_nodes`` (at least) once."""

    @abstractmethod
    def eval_batches(self, nodes: torch.Tensor) -> Iterator[Batch]:
        """Deterministic batches whose output nodes cover ``nodes``."""

    def num_train_batches(self, train_nodes: torch.Tensor) -> int | None:
        """How many batches an epoch has, for progress bars (None when unknown)."""
        return None
