"""Spexphormer's sampled neighbour tables, stored in DistDGL partitions.

Stage 2 of Spexphormer trains on fixed-degree neighbourhoods sampled from stage 1's attention
scores (:func:`~dgl_rbgt.sampling.sparsify`). For a distributed run, ``dgl-rbgt
partition`` computes the scores once on the partitioning machine (stage 1 is the narrow network,
cheap by design, or an earlier run's ``scores.pt`` named by ``stage1.scores``), draws the tables,
and stores them as node data, so every trainer pulls the rows of the nodes it needs from the
servers that own them, like features:

- ``train_draws`` training draws (``distributed.table_draws``), seeded like the single-machine
  draws of epochs ``0, r, 2r, ...`` (``r = neighbour_tables.resample_every``); a run cycles through
  them, since a trainer cannot resample from scores it does not hold;
- ``eval_repeats`` evaluation draws, with the single-machine seeds (``eval_seed + i``), so a
  distributed evaluation sees exactly the neighbourhoods a single machine would.

Each draw and layer is three node-data fields (:func:`table_key`): the source node of every entry
(rewritten into DistGraph ids after partitioning, :func:`remap_tables`), its edge type and its
validity flag.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

__all__ = ["TABLE_KINDS", "StoredNeighbourTables", "table_key", "draw_tables", "remap_tables", "partition_scores"]

logger = logging.getLogger(__name__)

TABLE_KINDS = ("train", "eval")
_PARTS = ("table", "etype", "valid")


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


def draw_tables(recipe, graph, scores: torch.Tensor, train_draws: int) -> dict[str, torch.Tensor]:
    """Every stored table field of a recipe, keyed by :func:`table_key`, in the graph's node ids.

    Example
    -------
    >>> import dgl, torch
    >>> from types import SimpleNamespace
    >>> from dgl_rbgt.transforms.edge_types import add_self_loops
    >>> g = add_self_loops(dgl.rand_graph(30, 90))
    >>> nt = SimpleNamespace(ks=[3, 2], resample_every=1, eval_repeats=2, eval_seed=0, method="reservoir")
    >>> recipe = SimpleNamespace(seed=0, neighbour_tables=nt)
    >>> fields = draw_tables(recipe, g, torch.rand(2, g.num_edges()), train_draws=1)
    >>> sorted(fields)[:2], fields["rbgt_eval1_l0_table"].shape
    (['rbgt_eval0_l0_etype', 'rbgt_eval0_l0_table'], torch.Size([30, 3]))
    """
    from ..train.loop import epoch_seed
    from ..sampling import sparsify

    nt = recipe.neighbour_tables
    ks = nt.ks if isinstance(nt.ks, (list, tuple)) else [nt.ks] * scores.shape[0]
    seeds = {"train": [epoch_seed(recipe.seed, d * max(nt.resample_every, 1)) for d in range(train_draws)],
             "eval": [nt.eval_seed + i for i in range(nt.eval_repeats)]}
    fields: dict[str, torch.Tensor] = {}
    for kind in TABLE_KINDS:
        for draw, seed in enumerate(seeds[kind]):
            nb = sparsify(graph, scores, ks, method=nt.method, generator=torch.Generator().manual_seed(seed))
            for layer in range(nb.num_layers):
                fields[table_key(kind, draw, layer, "table")] = nb.tables[layer]
                # int8: three codes and a flag; a quarter of the bytes every trainer pulls
                fields[table_key(kind, draw, layer, "etype")] = nb.etypes[layer].to(torch.int8)
                fields[table_key(kind, draw, layer, "valid")] = nb.valid[layer].to(torch.int8)
    return fields


def remap_tables(part_config: str | Path, orig_nids: torch.Tensor, keys: list[str]) -> None:
    """Rewrite the stored ``table`` fields of every partition from original into DistGraph ids.

    ``orig_nids[i]`` is the original id of DistGraph node ``i`` (``partition_graph``'s mapping);
    ``keys`` are the node-data names holding node ids.
    """
    import json

    from dgl.data.utils import load_tensors, save_tensors

    part_config = Path(part_config)
    meta = json.loads(part_config.read_text())
    new_id = torch.empty_like(orig_nids)
    new_id[orig_nids] = torch.arange(len(orig_nids), dtype=orig_nids.dtype)
    for p in range(meta["num_parts"]):
        path = part_config.parent / meta[f"part-{p}"]["node_feats"]
        feats = load_tensors(str(path))
        for key in keys:
            name = f"_N/{key}"
            feats[name] = new_id[feats[name]]
        tmp = path.with_name(path.name + ".tmp")
        save_tensors(str(tmp), feats)
        tmp.replace(path)


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
