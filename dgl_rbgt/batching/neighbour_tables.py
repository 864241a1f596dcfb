"""Spexphormer's stage-2 batching: mini-batches of target nodes over sampled neighbour tables.

Draws :class:`~dgl_rbgt.sampling.NeighbourTables` from the stage-1 scores (again every
``resample_every`` epochs), and grows each batch of targets backwards through them
(:func:`~dgl_rbgt.sampling.grow_batch`), so a batch's memory is bounded by
``batch_size * prod(1 + k_l)`` nodes whatever the graph's size and degrees.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import dgl
import torch

from .._checks import check_choice, check_positive_int
from ..nn.stored_features import compute_input, is_half_stored, whole_graph_input
from ..sampling import METHODS, NeighbourTables, Sparsifier, grow_batch
from .base import Batch, Batching

__all__ = ["TableBatching", "SparseRows"]

logger = logging.getLogger(__name__)


# Wide input features at most this dense are kept as CSR and gathered sparse: the gather of the
# rows of a batch and the model's input projection then cost O(non-zeros), not O(rows * width)
# (Coauthor CS: 6805 bag-of-words columns, 0.9% non-zero).
SPARSE_FEAT_DENSITY = 0.02
SPARSE_FEAT_MIN_WIDTH = 64


class SparseRows:
    """Row store of a sparse 2-D feature matrix in CSR form, with a row gather."""

    def __init__(self, feat: torch.Tensor):
        rows, cols = torch.nonzero(feat, as_tuple=True)  # row-major order
        self.shape = tuple(feat.shape)
        self.crow = torch.zeros(feat.shape[0] + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(rows, minlength=feat.shape[0]), 0, out=self.crow[1:])
        self.col = cols
        self.val = feat[rows, cols]
        self._full: torch.Tensor | None = None

    @classmethod
    def maybe(cls, feat: torch.Tensor) -> "SparseRows | None":
        """A CSR store when ``feat`` is a wide, mostly-zero CPU float matrix, else None."""
        if (not isinstance(feat, torch.Tensor) or feat.dim() != 2 or not torch.is_floating_point(feat)
                or feat.layout != torch.strided or feat.device.type != "cpu"
                or is_half_stored(feat)  # half storage: rows cast per batch
                or feat.shape[1] < SPARSE_FEAT_MIN_WIDTH or feat.numel() == 0):
            return None
        if int(torch.count_nonzero(feat)) > SPARSE_FEAT_DENSITY * feat.numel():
            return None
        return cls(feat)

    def full(self) -> torch.Tensor:
        """The whole matrix as a sparse CSR tensor (no copy; the same tensor every call)."""
        if self._full is None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._full = torch.sparse_csr_tensor(self.crow, self.col, self.val, size=self.shape)
        return self._full

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The rows ``ids`` as a ``(len(ids), width)`` sparse CSR tensor."""
        start = self.crow[ids]
        counts = self.crow[ids + 1] - start
        crow = torch.zeros(len(ids) + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=crow[1:])
        total = int(crow[-1])
        # entry p of output row r comes from position start[r] + (p - crow[r])
        pos = torch.repeat_interleave(start - crow[:-1], counts, output_size=total)
        pos += torch.arange(total)
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(crow, self.col[pos], self.val[pos],
                                           size=(len(ids), self.shape[1]))


def _load_scores(scores) -> torch.Tensor:
    if isinstance(scores, (str, Path)):
        scores = torch.load(scores, map_location="cpu", weights_only=True)
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a tensor (L, E) or the path of one saved with torch.save, "
                        f"got {type(scores).__name__}")
    return scores.detach().cpu()


class TableBatching(Batching):
    """Mini-batches of target nodes over sampled neighbour tables (Spexphormer's wide network).

    Parameters
    ----------
    graph : DGLGraph
        The graph the scores belong to (graph + expander + self-loop edges, the very object the
        score estimator ran on), with ``ndata['feat']``.
    device : torch.device or str
        Where the batches' tensors go.
    scores : Tensor or path
        ``(L, E)`` per-layer attention scores
        (:meth:`~dgl_rbgt.models.spexphormer.ScoreEstimator.attention_scores`), or the path of a
        tensor saved with ``torch.save``.
    ks : int or list of int
        Table width per layer (one value for all layers, or ``L`` values).
    batch_size : int
        Target nodes per training batch.
    eval_batch_size : int, optional
        Target nodes per evaluation batch (default ``batch_size``).
    resample_every : int
        Redraw the training tables every this many epochs (at epochs ``0, r, 2r, ...``);
        0 draws them once. Draws use torch's global generator, which the loop seeds per epoch.
    eval_repeats : int
        Evaluation averages the logits over this many fixed table draws.
    eval_seed : int
        Seed of the evaluation draws (draw ``i`` uses ``eval_seed + i``), so every evaluation of a
        run, and of runs with the same seed, sees the same neighbourhoods.
    method : str
        Sampling method of :func:`~dgl_rbgt.sampling.sparsify`.

    Notes
    -----
    Resuming: a run resumed at an epoch that is not a resampling epoch has no tables yet and
    draws them at once (from that epoch's seed), so with ``resample_every > 1`` its tables differ
    from those of the uninterrupted run until the next resampling epoch.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.batching import TableBatching
    >>> from dgl_rbgt.transforms.edge_types import add_self_loops
    >>> g = add_self_loops(dgl.rand_graph(40, 120))
    >>> g.ndata["feat"] = torch.randn(40, 5)
    >>> nt = TableBatching(g, scores=torch.rand(2, g.num_edges()), ks=[3, 2], batch_size=16)
    >>> batch = next(iter(nt.train_batches(torch.arange(40), epoch=0)))
    >>> batch.output_nodes.shape
    torch.Size([16])
    """

    name = "neighbour_tables"
    section = "neighbour_tables"
    section_skip = ("graph", "device", "scores", "batch_size", "eval_batch_size")

    def __init__(
        self,
        graph: dgl.DGLGraph,
        device: torch.device | str = "cpu",
        *,
        scores: torch.Tensor | str | Path,
        ks: int | Sequence[int],
        batch_size: int,
        eval_batch_size: int | None = None,
        resample_every: int = 1,
        eval_repeats: int = 1,
        eval_seed: int = 0,
        method: str = "reservoir",
    ):
        super().__init__(graph, device)
        scores = _load_scores(scores)
        if scores.dim() != 2:
            raise ValueError(f"scores must have shape (L, E) with one row per layer, got "
                             f"{tuple(scores.shape)}")
        if scores.shape[1] != graph.num_edges():
            raise ValueError(
                f"scores has {scores.shape[1]} columns but the graph has {graph.num_edges()} "
                f"edges; pass the same graph (with its expander and self-loop edges) that the score "
                f"estimator ran on")
        num_layers = scores.shape[0]
        if isinstance(ks, int) and not isinstance(ks, bool):
            ks = [ks] * num_layers
        if not isinstance(ks, Sequence) or len(ks) != num_layers:
            raise ValueError(f"ks must be an int or a list of {num_layers} ints (one per score row), "
                             f"got {ks!r}")
        self.ks = [check_positive_int(k, f"ks[{i}]") for i, k in enumerate(ks)]
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.eval_batch_size = check_positive_int(eval_batch_size or batch_size, "eval_batch_size")
        self.resample_every = check_positive_int(resample_every, "resample_every", minimum=0)
        self.eval_repeats = check_positive_int(eval_repeats, "eval_repeats")
        self.eval_seed = eval_seed
        self.method = check_choice(method, "method", METHODS)
        if "feat" not in graph.ndata:
            raise ValueError("graph has no ndata['feat']; the batches gather input features from it")
        # The per-graph part of every draw, done once (the scores are kept there, in its order).
        self.sampler = Sparsifier(graph, scores)
        del scores
        # Validates ks once, here, with the eval draws (which are needed anyway).
        self._eval_tables = [self._draw(torch.Generator().manual_seed(eval_seed + i))
                             for i in range(self.eval_repeats)]
        self.train_tables: NeighbourTables | None = None
        self._drawn_at: int | None = None
        self._feat_rows: tuple[torch.Tensor, SparseRows | None] | None = None

    @classmethod
    def check_recipe(cls, recipe) -> None:
        layers = getattr(recipe.model, "layers", None)
        ks = recipe.neighbour_tables.ks
        if not isinstance(ks, int) and len(ks) != layers:
            raise ValueError(f"neighbour_tables.ks has {len(ks)} entries but model.layers is {layers}")

    @classmethod
    def from_recipe(cls, recipe, graph: dgl.DGLGraph, device: torch.device, *, scores=None, **inputs) -> "TableBatching":
        """Needs the stage-1 ``scores`` (L, E) of ``graph``'s edges."""
        t = recipe.train
        return cls(graph, device, scores=scores, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size,
                   **recipe.neighbour_tables.model_dump())

    def _input_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Input features of the nodes ``ids``: dense rows, or a sparse CSR tensor for wide
        mostly-zero features (see :data:`SPARSE_FEAT_DENSITY`), which
        :class:`~dgl_rbgt.models.spexphormer.Spexphormer` projects as a sparse product."""
        if not self._sparse_input():
            feat = self.graph.ndata["feat"]
            return compute_input(feat.index_select(0, ids.to(feat.device)))
        return self._feat_rows[1].rows(ids)

    def _draw(self, generator: torch.Generator | None) -> NeighbourTables:
        # Stored compact (32-bit ids, 8-bit types, no edge ids: about 120 MB per draw for a
        # million nodes, k = 5, 4 layers, instead of 500 MB); grow_batch widens the rows it reads.
        return self.sampler.draw(self.ks, method=self.method, generator=generator, compact=True)

    def _batch(self, tables: Sequence[NeighbourTables], targets: torch.Tensor) -> Batch:
        def call(model, nb: NeighbourTables) -> torch.Tensor:
            # Grown when run, one draw at a time: evaluation with several draws never holds more
            # than one draw's gathered input features.
            node_lists, blocks = grow_batch(nb, targets)
            return model([b.to(self.device) for b in blocks], self._input_rows(node_lists[0]).to(self.device))

        def run(model):
            if len(tables) == 1:
                return call(model, tables[0])
            total = None
            for nb in tables:  # several draws (evaluation): average the logits
                logits = call(model, nb)
                total = logits if total is None else total + logits
            return total / len(tables)

        return Batch(targets.to(self.device), run)

    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[Batch]:
        due = self.train_tables is None or (self.resample_every > 0 and epoch % self.resample_every == 0
                                            and epoch != self._drawn_at)
        if due:
            self.train_tables = self._draw(None)  # torch's global generator, seeded per epoch
            self._drawn_at = epoch
        nodes = train_nodes.cpu()
        nodes = nodes[torch.randperm(len(nodes))]
        for start in range(0, len(nodes), self.batch_size):
            yield self._batch([self.train_tables], nodes[start:start + self.batch_size])

    def _full_graph_batch(self, tables: Sequence[NeighbourTables], targets: torch.Tensor) -> Batch:
        """One call on the whole graph per draw (every node list is all nodes), rows ``targets``."""
        feat = self.graph.ndata["feat"]

        def run(model):
            x = self._feat_rows[1].full() if self._sparse_input() else whole_graph_input(model, feat)
            x = x.to(self.device)
            total = None
            for nb in tables:
                # the tables themselves: the model evaluates them layer by layer, in chunks
                logits = model(nb.to(self.device), x)
                total = logits if total is None else total + logits
            return (total / len(tables))[targets.to(self.device)]

        return Batch(targets.to(self.device), run)

    def _sparse_input(self) -> bool:
        """Whether the input features are kept as CSR (built once per feature tensor)."""
        feat = self.graph.ndata["feat"]
        if self._feat_rows is None or self._feat_rows[0] is not feat:
            self._feat_rows = (feat, SparseRows.maybe(feat))
        return self._feat_rows[1] is not None

    def eval_batches(self, nodes: torch.Tensor) -> Iterator[Batch]:
        nodes = nodes.cpu()
        # Whole-graph evaluation when it can cost no more memory than the batches may and no
        # more work: a batch of ``eval_batch_size`` targets may touch up to
        # ``eval_batch_size * prod(1 + k_l)`` nodes per list, so when that bound reaches the
        # graph size, a full-graph pass is within it; and with at least half the nodes as
        # targets, the batches' node lists (which grow backwards from the targets) are close to
        # the whole graph anyway, and the batches' overlap is computed again for every batch.
        # A node's output depends only on its own tables, so the logits are the same.
        n = self.graph.num_nodes()
        reach = self.eval_batch_size
        for k in self.ks:
            reach *= 1 + k
        if len(nodes) and reach >= n and 2 * len(nodes) >= n:
            yield self._full_graph_batch(self._eval_tables, nodes)
            return
        for start in range(0, len(nodes), self.eval_batch_size):
            yield self._batch(self._eval_tables, nodes[start:start + self.eval_batch_size])

    def num_train_batches(self, train_nodes: torch.Tensor) -> int:
        return -(-len(train_nodes) // self.batch_size)
