"""How a trainer cuts a :class:`~dgl.distributed.DistGraph` into model calls, per batching mode.

The single-machine strategies of :mod:`dgl_rbgt.batching` read a local graph; these read
the partitioned one (structure, features and labels pulled from the servers that own them) and
keep DDP in step: every trainer runs the same number of training batches per epoch, because DDP
all-reduces gradients in every step and a trainer that ran out early would leave the others
waiting forever.

- :class:`DistNeighborSampling` (``train.batching: neighbor``; GCN, GAT): DistDGL's node data
  loader with neighbour sampling;
- :class:`DistNodeBatches` (``node_batch``; RBTransformer): SGFormer's random node batches of the
  whole graph, dealt out to the trainers; random attention groups form inside each trainer's
  batch; a batch's structure is its induced subgraph;
- :class:`DistTableBatching` (``neighbour_tables``; Spexphormer stage 2): layer-wise batches
  grown through the neighbour tables that ``dgl-rbgt partition`` sampled and stored in the
  partitions (:mod:`dgl_rbgt.distributed.tables`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from ..batching import Batch, Batching
from ..nn.stored_features import compute_input
from ..sampling import grow_batch
from .tables import TABLE_KINDS, ChunkedResampler, StoredNeighbourTables

__all__ = ["DistBatch", "DistNeighborSampling", "DistNodeBatches", "DistTableBatching", "equal_chunks", "DIST_BATCHINGS"]


@dataclass
class DistBatch(Batch):
    """A batch that also carries the labels of its output nodes (fetched from the DistGraph) and,
    when not every output node is a training node, which ones count in the loss."""

    labels: torch.Tensor = None
    loss_mask: torch.Tensor | None = None  # (B,) bool; None: every output node is a training node
    #: (B,) int8 split of every output node (0 train, 1 val, 2 test, -1 none), where the batch
    #: carries it (evaluation node batches); else the trainer looks it up
    splits: torch.Tensor | None = None


def equal_chunks(nodes: torch.Tensor, num_chunks: int) -> list[torch.Tensor]:
    """``nodes`` cut into exactly ``num_chunks`` parts whose sizes differ by at most one.

    Example
    -------
    >>> import torch
    >>> [len(c) for c in equal_chunks(torch.arange(10), 4)]
    [3, 3, 2, 2]
    """
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    if len(nodes) < num_chunks:
        raise ValueError(f"cannot cut {len(nodes)} nodes into {num_chunks} non-empty batches")
    return list(torch.tensor_split(nodes, num_chunks))


class DistNeighborSampling(Batching):
    """Neighbour-sampled mini-batches from a :class:`dgl.distributed.DistGraph`.

    Training batches come from ``train_nodes`` (this trainer's share, already padded), shuffled
    from torch's generator (seeded per epoch by the loop); evaluation batches cut ``eval_nodes``
    (see :func:`~dgl_rbgt.distributed.trainer.eval_plan`) in order, with full neighbourhoods.
    """

    name = "neighbor"

    def __init__(self, graph, device, *, fanouts: list[int], batch_size: int, train_nodes: torch.Tensor,
                 eval_nodes: torch.Tensor, eval_batch_size: int | None = None):
        import dgl

        super().__init__(graph, device)
        self.fanouts = list(fanouts)
        self.train_nodes = train_nodes
        self.eval_nodes = eval_nodes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self._train_loader = dgl.dataloading.DistNodeDataLoader(
            graph, train_nodes, dgl.dataloading.NeighborSampler(self.fanouts), batch_size=batch_size,
            shuffle=True, drop_last=False)
        # Every rank creates the same loaders, even a rank with nothing to evaluate (it gets a
        # placeholder list it never iterates): with sampler processes, each loader ships the
        # DistGraph to them, and unpickling it there waits in a barrier across all samplers.
        self._has_eval = len(eval_nodes) > 0
        self._eval_loader = dgl.dataloading.DistNodeDataLoader(
            graph, eval_nodes if self._has_eval else train_nodes[:1],
            dgl.dataloading.MultiLayerFullNeighborSampler(len(self.fanouts)),
            batch_size=self.eval_batch_size, shuffle=False, drop_last=False)

    def _batch(self, input_nodes, seeds, blocks) -> DistBatch:
        g = self.graph
        feat = compute_input(g.ndata["feat"][input_nodes]).to(self.device)  # pulled from their servers
        labels = g.ndata["label"][seeds].to(self.device)
        blocks = [b.to(self.device) for b in blocks]
        return DistBatch(seeds.to(self.device), lambda model: model(blocks, feat), labels)

    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[DistBatch]:
        for input_nodes, seeds, blocks in self._train_loader:
            yield self._batch(input_nodes, seeds, blocks)

    def eval_batches(self, nodes: torch.Tensor | None = None) -> Iterator[DistBatch]:
        if not self._has_eval:
            return
        for input_nodes, seeds, blocks in self._eval_loader:
            yield self._batch(input_nodes, seeds, blocks)

    def num_train_batches(self, train_nodes: torch.Tensor) -> int:
        return -(-len(self.train_nodes) // self.batch_size)


class DistNodeBatches(Batching):
    """SGFormer's random node batches, dealt out to the trainers.

    Every epoch all trainers draw the same random permutation of all nodes (labelled or not:
    attention and the GCN branch need the unlabelled context), from a generator seeded by
    ``(seed, epoch)``, cut it into ``num_batches * world`` near-equal parts, and trainer ``rank``
    takes parts ``rank, rank + world, ...``: together the trainers see exactly the random batches of
    a single machine, and each batch is a uniform sample of the graph. (Batches drawn from a
    trainer's own partition would read less over the network, but a METIS partition of a
    homophilous graph is skewed by class, and BatchNorm statistics of class-skewed batches trained
    a model 15 points worse on the quickstart graph.) A batch's model input is its induced
    subgraph, built from the servers' in-edges of its nodes; random attention groups form inside
    it. Only training nodes count in the loss (``loss_mask``).

    Evaluation follows the single machine (:class:`~dgl_rbgt.batching.NodeBatches`). A graph that
    one machine evaluates whole (up to ``EVAL_FULL_GRAPH_NODES`` nodes) is evaluated in parts of the
    trainer's own nodes (``local_nodes``) of ``eval_batch_size`` nodes, each run in the induced
    subgraph of the part and its ``eval_context_hops``-hop in-neighbourhood (nodes of any trainer):
    with as many hops as the GCN branch has layers, the part's nodes see every edge a full-graph
    evaluation would give them (their neighbours' degrees are counted inside the subgraph). A
    larger graph, which one machine evaluates in contiguous parts of ``eval_batch_size`` nodes in
    its node order, is evaluated in exactly those parts (``eval_parts``: this trainer's share of
    them, dealt round-robin), each in its induced subgraph alone. Growing a part by two hops would pull most of a large graph into
    every batch (100 x the part at degree 10), so the trainer's memory would grow with the graph.
    """

    name = "node_batch"

    def __init__(self, graph, device, *, rank: int, world: int, batch_size: int, seed: int,
                 local_nodes: torch.Tensor, eval_batch_size: int, eval_context_hops: int = 2,
                 eval_parts: torch.Tensor | None = None):
        super().__init__(graph, device)
        self.rank, self.world, self.seed = rank, world, seed
        self.num_batches = -(-graph.num_nodes() // (batch_size * world))  # per trainer, per epoch
        self.local_nodes = local_nodes
        self.eval_batch_size = eval_batch_size
        self.eval_context_hops = eval_context_hops
        self.eval_parts = eval_parts
        equal_chunks(torch.arange(graph.num_nodes()), self.num_batches * world)  # fail now if too few nodes

    def _in_neighbours(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sources, destinations) of all in-edges of ``nodes``, in DistGraph ids."""
        import dgl

        # dgl.distributed.in_subgraph would say it more plainly, but its server side is broken in
        # DGL 2.1 (it unpacks a 4-tuple into 3 names); a fanout of -1 takes every in-edge.
        return dgl.distributed.sample_neighbors(self.graph, nodes, -1).edges()

    def _subgraph_batch(self, nodes: torch.Tensor, num_outputs: int | None = None, splits: bool = False) -> DistBatch:
        """The induced subgraph of distinct ``nodes``; its first ``num_outputs`` rows are the output.
        With ``splits`` the batch carries its output nodes' splits, read from the masks."""
        import dgl

        g = self.graph
        num_outputs = len(nodes) if num_outputs is None else num_outputs
        sorted_nodes, order = torch.sort(nodes)
        src, dst = self._in_neighbours(nodes)
        at = torch.searchsorted(sorted_nodes, src).clamp_(max=len(nodes) - 1)
        inside = sorted_nodes[at] == src  # keep edges whose source is in the batch too
        u = order[at[inside]]  # positions in `nodes`
        v = order[torch.searchsorted(sorted_nodes, dst[inside])]
        sub = dgl.graph((u, v), num_nodes=len(nodes)).to(self.device)
        feat = compute_input(g.ndata["feat"][nodes]).to(self.device)
        out = nodes[:num_outputs]
        labels = g.ndata["label"][out].to(self.device)
        train = g.ndata["train_mask"][out].to(torch.bool)
        codes = None
        if splits:  # later masks win, as a node is in at most one split
            codes = torch.full((len(out),), -1, dtype=torch.int8)
            for i, key in enumerate(("train_mask", "val_mask", "test_mask")):
                codes[(train if i == 0 else g.ndata[key][out].to(torch.bool))] = i
            codes = codes.to(self.device)
        return DistBatch(out.to(self.device), lambda model: model(sub, feat)[:num_outputs], labels,
                         train.to(self.device), splits=codes)

    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[DistBatch]:
        from ..train.loop import epoch_seed

        # Own generator, same seed on every trainer: the same permutation everywhere.
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(self.graph.num_nodes(), generator=generator)
        for part in equal_chunks(order, self.num_batches * self.world)[self.rank::self.world]:
            yield self._subgraph_batch(part)

    def eval_batches(self, nodes: torch.Tensor | None = None) -> Iterator[DistBatch]:
        if self.eval_parts is not None:  # a large graph: one machine's parts, no context
            for part in self.eval_parts.split(self.eval_batch_size):
                yield self._subgraph_batch(part, splits=True)
            return
        for part in self.local_nodes.split(self.eval_batch_size):
            context = part
            for _ in range(self.eval_context_hops):  # grow by in-neighbours, the part's nodes first
                src, _ = self._in_neighbours(context)
                new = torch.unique(src)
                new = new[~torch.isin(new, context)]
                context = torch.cat([context, new])
            yield self._subgraph_batch(context, num_outputs=len(part), splits=True)

    def num_train_batches(self, train_nodes: torch.Tensor) -> int:
        return self.num_batches


class DistTableBatching(Batching):
    """Spexphormer's stage-2 batches over the neighbour tables stored in the partitions.

    ``dgl-rbgt partition`` stored the training draw of epoch 0 and ``eval_draws`` evaluation
    tables (exactly the single-machine run's, same seeds) as node data holding DistGraph ids, and
    the stage-1 scores as edge data. Every ``resample_every`` epochs (never when 0) the trainers
    redraw the training tables from those scores, each its own share of the nodes
    (:class:`~dgl_rbgt.distributed.tables.ChunkedResampler`), between two barriers (no trainer reads
    the old tables while they are written, all rows are stored before the epoch's first batch); a resumed run redraws the tables of the epoch it resumes at. Evaluation
    averages the logits over all evaluation draws, as on one machine. The trainer's
    ``train_nodes`` are cut into ``num_batches`` near-equal parts (the same count on every
    trainer), so targets stay distinct.
    """

    name = "neighbour_tables"

    def __init__(self, graph, device, *, num_layers: int, eval_draws: int, resample_every: int,
                 train_nodes: torch.Tensor, num_batches: int, eval_nodes: torch.Tensor, eval_batch_size: int,
                 resampler: ChunkedResampler | None = None):
        super().__init__(graph, device)
        if resample_every > 0 and resampler is None:
            raise ValueError("resample_every > 0 needs a resampler (the tables are redrawn from the scores)")
        self.train_nodes = train_nodes
        self.num_batches = num_batches
        self.eval_nodes = eval_nodes
        self.eval_batch_size = eval_batch_size
        self.resample_every = resample_every
        self.resampler = resampler
        self.drawn_for = 0  # the stored training draw is epoch 0's
        self._train = StoredNeighbourTables(graph, TABLE_KINDS[0], 0, num_layers)
        self._eval = [StoredNeighbourTables(graph, TABLE_KINDS[1], d, num_layers) for d in range(eval_draws)]

    def draw_epoch(self, epoch: int) -> int:
        """The epoch whose draw epoch ``epoch`` trains on (a multiple of ``resample_every``)."""
        return 0 if self.resample_every == 0 else epoch - epoch % self.resample_every

    def _redraw_if_due(self, epoch: int) -> None:
        want = self.draw_epoch(epoch)
        if want != self.drawn_for:  # the same decision on every trainer: all reach the barrier
            import torch.distributed as tdist

            tdist.barrier()  # nobody still reads the old tables
            self.resampler.redraw(self.graph, want)
            tdist.barrier()  # everybody's rows are stored
            self.drawn_for = want

    def _batch(self, draws: list[StoredNeighbourTables], targets: torch.Tensor) -> DistBatch:
        feat = self.graph.ndata["feat"]

        def call(model, rows: StoredNeighbourTables) -> torch.Tensor:
            node_lists, blocks = grow_batch(rows, targets)
            return model([b.to(self.device) for b in blocks], compute_input(feat[node_lists[0]]).to(self.device))

        def run(model):
            total = None
            for rows in draws:  # one draw in training; evaluation averages the logits of all
                logits = call(model, rows)
                total = logits if total is None else total + logits
            return total / len(draws)

        labels = self.graph.ndata["label"][targets].to(self.device)
        return DistBatch(targets.to(self.device), run, labels)

    def train_batches(self, train_nodes: torch.Tensor, epoch: int) -> Iterator[DistBatch]:
        self._redraw_if_due(epoch)
        draw = [self._train]
        order = self.train_nodes[torch.randperm(len(self.train_nodes))]
        for part in equal_chunks(order, self.num_batches):  # distinct targets, equal counts on every rank
            yield self._batch(draw, part)

    def eval_batches(self, nodes: torch.Tensor | None = None) -> Iterator[DistBatch]:
        for start in range(0, len(self.eval_nodes), self.eval_batch_size):
            yield self._batch(self._eval, self.eval_nodes[start:start + self.eval_batch_size])

    def num_train_batches(self, train_nodes: torch.Tensor) -> int:
        return self.num_batches


#: ``train.batching`` -> its form over a DistGraph (``full`` has none: it needs the whole graph).
DIST_BATCHINGS = {cls.name: cls for cls in (DistNeighborSampling, DistNodeBatches, DistTableBatching)}
