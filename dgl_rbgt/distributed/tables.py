"""Spexphormer's sampled neighbour tables, stored in DistDGL partitions.

Stage 2 of Spexphormer trains on fixed-degree neighbourhoods sampled from stage 1's attention
scores (:func:`~dgl_rbgt.sampling.sparsify`). For a distributed run, ``dgl-rbgt
partition`` computes the scores once on the partitioning machine (stage 1 is the narrow network,
cheap by design, or an earlier run's ``scores.pt`` named by ``stage1.scores``) and stores with the
partitions:

- the scores themselves, as edge data (:data:`SCORES_KEY`, ``(E, L)``), so the trainers can
  redraw the training tables every ``neighbour_tables.resample_every`` epochs
  (:class:`TableResampler`), as a single machine's :class:`~dgl_rbgt.batching.TableBatching`
  does;
- one training draw, the single-machine draw of epoch 0 (same seed), which the trainers overwrite
  in place when they redraw;
- ``eval_repeats`` evaluation draws, with the single-machine seeds (``eval_seed + i``), so a
  distributed evaluation sees exactly the neighbourhoods a single machine would.

Each draw and layer is three node-data fields (:func:`table_key`): the source node of every entry
(rewritten into DistGraph ids by :func:`dgl_rbgt.distributed.partition.partition`), its edge type
and its validity flag. Trainers pull the rows of the nodes they need from the servers that own
them, like features.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

__all__ = ["TABLE_KINDS", "SCORES_KEY", "StoredNeighbourTables", "TableResampler", "table_key", "draw_tables",
           "partition_scores", "scores_in_child", "redraw_seed", "ChunkedResampler", "dist_in_edges"]

logger = logging.getLogger(__name__)

TABLE_KINDS = ("train", "eval")
_PARTS = ("table", "etype", "valid")

#: Edge-data name of the stage-1 scores stored with the partitions: ``(E, L)`` float32.
SCORES_KEY = "rbgt_scores"


def table_key(kind: str, draw: int, layer: int, part: str) -> str:
    """Node-data name of one stored table field.

    Example
    -------
    >>> table_key("train", 0, 2, "table")
    'rbgt_train0_l2_table'
    """
    if kind not in TABLE_KINDS or part not in _PARTS:
        raise ValueError(f"kind must be one of {TABLE_KINDS} and part one of {_PARTS}, got {kind!r}, {part!r}")
    return f"rbgt_{kind}{draw}_l{layer}_{part}"


def draw_tables(recipe, graph, scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stored table field of a recipe, keyed by :func:`table_key`, in the graph's node ids:
    the training draw of epoch 0 and the evaluation draws, with a single machine's seeds.

    Example
    -------
    >>> import dgl, torch
    >>> from types import SimpleNamespace
    >>> from dgl_rbgt.transforms.edge_types import add_self_loops
    >>> g = add_self_loops(dgl.rand_graph(30, 90))
    >>> nt = SimpleNamespace(ks=[3, 2], resample_every=1, eval_repeats=2, eval_seed=0, method="reservoir")
    >>> recipe = SimpleNamespace(seed=0, neighbour_tables=nt)
    >>> fields = draw_tables(recipe, g, torch.rand(2, g.num_edges()))
    >>> sorted(fields)[:2], fields["rbgt_eval1_l0_table"].shape
    (['rbgt_eval0_l0_etype', 'rbgt_eval0_l0_table'], torch.Size([30, 3]))
    """
    from ..train.loop import epoch_seed
    from ..sampling import sparsify

    nt = recipe.neighbour_tables
    seeds = {"train": [epoch_seed(recipe.seed, 0)], "eval": [nt.eval_seed + i for i in range(nt.eval_repeats)]}
    fields: dict[str, torch.Tensor] = {}
    for kind in TABLE_KINDS:
        for draw, seed in enumerate(seeds[kind]):
            nb = sparsify(graph, scores, nt.ks, method=nt.method, generator=torch.Generator().manual_seed(seed))
            for layer in range(nb.num_layers):
                fields[table_key(kind, draw, layer, "table")] = nb.tables[layer]
                # int8: three codes and a flag; a quarter of the bytes every trainer pulls
                fields[table_key(kind, draw, layer, "etype")] = nb.etypes[layer].to(torch.int8)
                fields[table_key(kind, draw, layer, "valid")] = nb.valid[layer].to(torch.int8)
    return fields


def redraw_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of trainer ``rank``'s redraw at ``epoch``: distinct per (seed, epoch, rank)."""
    from ..train.loop import epoch_seed

    return (epoch_seed(seed, epoch) * 1_000_003 + 7919 * (rank + 1)) % (2**63 - 1)


def partition_scores(recipe, dataset, graph, out_dir: Path, progress: bool = False) -> torch.Tensor:
    """Stage-1 scores ``(L, E)`` for the partitions: ``stage1.scores`` if the recipe names a file,
    else stage 1 trained here from scratch, its run in ``out_dir/stage1`` and its scores in
    ``out_dir/scores.pt``."""
    import shutil

    from ..train.loop import seed_everything
    from ..train.metrics import get_metric
    from ..train.pipeline import splits_of
    from ..train.rundir import RunDir
    from ..train.builders import build_estimator
    from ..train.two_stage import stage1_scores

    seed_everything(recipe.seed)  # the estimator's initial weights, as in a single-machine run
    estimator = build_estimator(recipe, graph.ndata["feat"].shape[1], dataset.num_classes)
    shutil.rmtree(Path(out_dir) / "stage1", ignore_errors=True)  # an earlier partitioning's, maybe other inputs
    scores, _ = stage1_scores(recipe, graph, estimator, torch.device("cpu"), RunDir(out_dir),
                              get_metric(dataset.metric), splits_of(graph), resume=False, progress=progress)
    return scores


def _stage1_in_child(recipe_data: dict, out_dir: str, progress: bool, log: bool, threads: int) -> float:
    from ..config import parse_recipe
    from ..train.loop import seed_everything
    from ..train.pipeline import prepare_dataset
    from ..utils.logs import log_to_terminal
    from ..utils.memory import peak_rss_mb

    if log:
        log_to_terminal()
    torch.set_num_threads(threads)  # the parent's: sums in the same order, the same scores
    recipe = parse_recipe(recipe_data)
    seed_everything(recipe.seed)  # as the partitioner does before it loads the graph
    dataset, graph = prepare_dataset(recipe, progress=progress)
    partition_scores(recipe, dataset, graph, Path(out_dir), progress=progress)
    return peak_rss_mb()


def scores_in_child(recipe, out_dir: Path, progress: bool = False) -> tuple[Path, float]:
    """Train stage 1 as :func:`partition_scores` does, in a child process that loads the graph
    itself; returns the path of the scores it wrote (``out_dir/scores.pt``) and the child's peak
    resident memory in MB.

    Stage 1 trains on the whole graph: its activations and the allocator's slack (several GB at
    10M nodes) would otherwise stay in the partitioner's heap while it writes the parts. A child
    returns them to the system when it exits, for the price of loading the graph twice. Errors
    in the child (a missing dataset, a bad recipe) are raised here, as they were raised there.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    log = logging.getLogger("dgl_rbgt").isEnabledFor(logging.INFO)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        peak_mb = pool.submit(_stage1_in_child, recipe.model_dump(mode="json"), str(out_dir), progress, log,
                              torch.get_num_threads()).result()
    return Path(out_dir) / "scores.pt", peak_mb


class StoredNeighbourTables:
    """One stored draw of :class:`~dgl_rbgt.sampling.NeighbourTables` read from a DistGraph.

    Offers the attributes :func:`~dgl_rbgt.sampling.grow_batch` reads (``num_layers`` and per-layer
    ``tables``, ``etypes``, ``valid`` indexed by node ids); indexing pulls the rows from the
    servers that own them, like features.
    """

    def __init__(self, graph, kind: str, draw: int, num_layers: int):
        data = graph.ndata
        self.num_layers = num_layers
        self.tables = [_Column(data[table_key(kind, draw, layer, "table")], torch.int64) for layer in range(num_layers)]
        self.etypes = [_Column(data[table_key(kind, draw, layer, "etype")], torch.int64) for layer in range(num_layers)]
        self.valid = [_Column(data[table_key(kind, draw, layer, "valid")], torch.bool) for layer in range(num_layers)]


class _Column:
    """A stored node-data field whose rows are pulled and widened to ``dtype`` on indexing."""

    def __init__(self, tensor, dtype: torch.dtype):
        self.tensor, self.dtype = tensor, dtype

    def __getitem__(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.tensor[nodes].to(self.dtype)


def _check_id_vectors(**tensors: torch.Tensor | None) -> None:
    """Each given tensor is a 1-D integer tensor of node or edge ids (None: not given)."""
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype not in (torch.int32, torch.int64):
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{name} must be a 1-D int64 or int32 tensor of ids, got {got}")


class TableResampler:
    """Redraws the rows of some nodes of the training tables from the stage-1 scores (a trainer
    runs one per chunk of its share of the nodes: :class:`ChunkedResampler`).

    Every node is redrawn by exactly one trainer. The resampler keeps its
    nodes' in-edges, their scores and edge types in a :class:`~dgl_rbgt.sampling.Sparsifier`;
    :meth:`draw` gives new rows and :meth:`redraw` writes them over the stored training draw 0.
    A node's row is drawn from its in-edges with the single-machine law (successive sampling
    without replacement weighted by the scores, or the top ``k``, and the same fill-up for
    deficient nodes); the random numbers differ, so the rows are not the single-machine ones.

    Parameters
    ----------
    nodes : Tensor
        ``(n,)`` ids of the nodes this trainer redraws.
    src, dst : Tensor
        ``(e,)`` every in-edge of those nodes (``dst`` in ``nodes``), in the same ids.
    scores : Tensor
        ``(L, e)`` their stage-1 scores.
    etypes : Tensor or None
        ``(e,)`` their edge-type codes.
    ks : int or list of int
        Entries per node, for every layer or per layer (``neighbour_tables.ks``).
    method : str
        ``neighbour_tables.method``.
    seed, rank : int
        The recipe's seed and this trainer's rank (:func:`redraw_seed`).
    edge_ids : Tensor, optional
        ``(e,)`` the edges' ids: the edges are put in their order first, so a draw does not depend
        on the order in which the edges were fetched.

    Example
    -------
    >>> import torch
    >>> r = TableResampler(torch.tensor([5, 7]), src=torch.tensor([5, 7, 9, 5]), dst=torch.tensor([5, 5, 7, 7]),
    ...                    scores=torch.ones(1, 4), etypes=None, ks=[2], method="topk", seed=0, rank=0)
    >>> r.draw(epoch=3)[0]["table"].sort(dim=1).values.tolist()  # node 5: in-edges from 5 and 7
    [[5, 7], [5, 9]]
    """

    def __init__(self, nodes: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, scores: torch.Tensor,
                 etypes: torch.Tensor | None, ks: int | list[int], method: str, seed: int, rank: int,
                 edge_ids: torch.Tensor | None = None):
        import dgl

        from ..conventions import ETYPE
        from ..sampling import Sparsifier

        _check_id_vectors(nodes=nodes, src=src, dst=dst, edge_ids=edge_ids)
        e = len(src)
        if len(dst) != e or (edge_ids is not None and len(edge_ids) != e) or \
                (etypes is not None and tuple(etypes.shape) != (e,)):
            raise ValueError(f"src, dst, edge_ids and etypes must all have one entry per edge ({e} in src), got "
                             f"dst {len(dst)}, edge_ids {None if edge_ids is None else len(edge_ids)}, "
                             f"etypes {None if etypes is None else tuple(etypes.shape)}")
        if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[1] != e:
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"scores must be (L, {e}): one row per layer, one column per edge; got {got}")
        if not bool(torch.isin(dst, nodes).all()):
            raise ValueError("dst must hold only ids from nodes (the edges are the in-edges of nodes)")
        self.nodes, self.ks, self.method, self.seed, self.rank = nodes, ks, method, seed, rank
        if edge_ids is not None:
            # Edges fetched from several servers arrive in any order; the draw must not depend on it.
            order = torch.argsort(edge_ids)
            src, dst, scores = src[order], dst[order], scores[:, order]
            etypes = None if etypes is None else etypes[order]
        n = len(nodes)
        # Compact ids: this trainer's nodes and their sources.
        self.ids, inverse = torch.unique(torch.cat([nodes, src, dst]), return_inverse=True)
        self.rows = inverse[:n]  # row of every node of `nodes` in the local tables
        local = dgl.graph((inverse[n:n + e], inverse[n + e:]), num_nodes=len(self.ids))
        if etypes is not None:
            local.edata[ETYPE] = etypes
        self.sampler = Sparsifier(local, scores)

    def draw(self, epoch: int, generator: torch.Generator | None = None) -> list[dict[str, torch.Tensor]]:
        """This trainer's rows for ``epoch``: per layer ``table`` (int64 ids), ``etype`` and
        ``valid`` (int8), each ``(n, k_l)`` in the order of ``nodes``. ``generator``: draw from
        it instead of a fresh one seeded by :func:`redraw_seed`."""
        gen = generator if generator is not None else torch.Generator().manual_seed(
            redraw_seed(self.seed, epoch, self.rank))
        nb = self.sampler.draw(self.ks, method=self.method, generator=gen, compact=True)
        return [{"table": self.ids[nb.tables[layer][self.rows].to(torch.int64)],
                 "etype": nb.etypes[layer][self.rows].to(torch.int8),
                 "valid": nb.valid[layer][self.rows].to(torch.int8)} for layer in range(nb.num_layers)]

    def redraw(self, graph, epoch: int, generator: torch.Generator | None = None) -> None:
        """Store :meth:`draw` over the DistGraph's training draw 0; returns once the servers hold it."""
        written = []
        for layer, values in enumerate(self.draw(epoch, generator)):
            for part, value in values.items():
                column = graph.ndata[table_key("train", 0, layer, part)]
                column[self.nodes] = value.to(column.dtype)
                written.append((column, value))
        # DistDGL pushes without an answer: read the rows back until the servers hold them, so that
        # after the caller's barrier every trainer pulls this epoch's tables.
        for column, value in written:
            for _ in range(1000):
                if torch.equal(column[self.nodes].to(value.dtype), value):
                    break
                time.sleep(0.01)
            else:
                raise RuntimeError("redrawn neighbour tables did not reach the servers within 10 s")


def dist_in_edges(graph, nodes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(src, dst, scores, etypes, edge_ids)`` of every in-edge of ``nodes`` in a DistGraph whose
    edge data hold :data:`SCORES_KEY` (``scores`` is ``(L, e)``; ``etypes`` None without types)."""
    import dgl

    from ..conventions import ETYPE

    # A fanout of -1 takes every in-edge (dgl.distributed.in_subgraph is broken in DGL 2.1).
    frontier = dgl.distributed.sample_neighbors(graph, nodes, -1)
    src, dst = frontier.edges()
    eids = frontier.edata[dgl.EID]
    etypes = graph.edata[ETYPE][eids] if ETYPE in graph.edata else None
    scores = graph.edata[SCORES_KEY][eids].to(torch.float32).t()  # (L, e)
    return src, dst, scores, etypes, eids


#: Nodes a trainer redraws at a time. Their in-edges, scores and sampler are fetched and built
#: for the chunk and dropped after it: about 17 in-edges per node with the expander and
#: self-loops at degree 10, so some 150 MB per chunk, whatever the trainer's share of the graph.
REDRAW_CHUNK_NODES = 100_000


class ChunkedResampler:
    """Redraws one trainer's rows of the training tables a chunk of nodes at a time.

    For every chunk it fetches the chunk's in-edges with their scores and edge types (``fetch``,
    from the servers that own them), draws the chunk's rows with :class:`TableResampler` and
    stores them. A trainer thus holds one chunk's edges, never its whole share's: at 10M nodes on
    4 hosts a share has 42M in-edges; fetched whole, with their scores and the sampler's layout,
    they would have added about 2.5 GB to a trainer and 7 GB to its peak (10 x what 4.2M in-edges
    added at 1M nodes: 0.25 GB and 0.7 GB). Every node's row is drawn
    from its own in-edges, so the chunks do not change the law; the chunks draw in turn from one
    generator seeded by :func:`redraw_seed`, so a redraw is a function of (seed, epoch, rank).

    Parameters
    ----------
    nodes : Tensor
        ``(n,)`` ids of the nodes this trainer redraws.
    fetch : callable
        ``fetch(chunk) -> (src, dst, scores, etypes, edge_ids)``: every in-edge of the nodes
        ``chunk`` (:func:`dist_in_edges` for a DistGraph).
    ks, method, seed, rank
        As :class:`TableResampler`.
    chunk_nodes : int
        Nodes per chunk.

    Example
    -------
    >>> import torch
    >>> src, dst = torch.tensor([5, 7, 9, 5]), torch.tensor([5, 5, 7, 7])
    >>> def fetch(chunk):
    ...     keep = torch.isin(dst, chunk)
    ...     return src[keep], dst[keep], torch.ones(1, int(keep.sum())), None, torch.nonzero(keep).squeeze(1)
    >>> r = ChunkedResampler(torch.tensor([5, 7]), fetch, ks=[2], method="topk", seed=0, rank=0, chunk_nodes=1)
    >>> [rows[0]["table"].sort(dim=1).values.tolist() for rows in r.draw_chunks(epoch=3)]
    [[[5, 7]], [[5, 9]]]
    """

    def __init__(self, nodes: torch.Tensor, fetch, ks: int | list[int], method: str, seed: int, rank: int,
                 chunk_nodes: int = REDRAW_CHUNK_NODES):
        from .._checks import check_positive_int

        _check_id_vectors(nodes=nodes)
        self.nodes, self.fetch, self.ks, self.method = nodes, fetch, ks, method
        self.seed, self.rank = seed, rank
        self.chunk_nodes = check_positive_int(chunk_nodes, "chunk_nodes")

    @classmethod
    def from_dist_graph(cls, graph, nodes: torch.Tensor, ks: int | list[int], method: str, seed: int, rank: int,
                        chunk_nodes: int = REDRAW_CHUNK_NODES) -> "ChunkedResampler":
        """A resampler for ``nodes`` of a DistGraph whose edge data hold :data:`SCORES_KEY`."""
        return cls(nodes, lambda chunk: dist_in_edges(graph, chunk), ks, method, seed, rank, chunk_nodes)

    def _chunks(self, epoch: int):
        gen = torch.Generator().manual_seed(redraw_seed(self.seed, epoch, self.rank))
        for chunk in self.nodes.split(self.chunk_nodes):
            src, dst, scores, etypes, edge_ids = self.fetch(chunk)
            yield gen, TableResampler(chunk, src, dst, scores, etypes, self.ks, self.method, self.seed, self.rank,
                                      edge_ids=edge_ids)

    def draw_chunks(self, epoch: int):
        """Every chunk's rows for ``epoch`` in turn (:meth:`TableResampler.draw`'s form)."""
        for gen, part in self._chunks(epoch):
            yield part.draw(epoch, gen)

    def redraw(self, graph, epoch: int) -> None:
        """Store every chunk's rows over the DistGraph's training draw 0; returns once the servers
        hold them."""
        t0 = time.perf_counter()
        for gen, part in self._chunks(epoch):
            part.redraw(graph, epoch, gen)
        logger.info("rank %d redrew the training tables of %d nodes in %.1f s", self.rank, len(self.nodes),
                    time.perf_counter() - t0)
