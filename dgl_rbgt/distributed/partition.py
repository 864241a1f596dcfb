"""Partition a recipe's graph for DistDGL: one partition per host.

``partition(recipe, dist)`` loads the dataset and applies the recipe's transforms exactly like a
single-machine run (:func:`dgl_rbgt.train.builders.prepare_dataset`), then calls
:func:`dgl.distributed.partition_graph` (METIS; training nodes balanced across partitions with
``balance_ntypes=train_mask``) or, for a random partition with one halo hop, writes DGL's files one
part at a time (:mod:`dgl_rbgt.distributed.part_writer`: DGL's partitioner needs about 250 bytes
per edge more than the graph), and writes next to DGL's files a small report,
``rbgt_partition.json``: the partition sizes, the edge cut, the timings, what the trainers need
to know about the data (feature size, classes, metric), and a fingerprint of everything the
partitions depend on, so ``launch`` refuses partitions made from another dataset or layout.

For Spexphormer (``train.batching: neighbour_tables``) the partitions also hold the sampled
neighbour tables of stage 2 (:mod:`dgl_rbgt.distributed.tables`); stage 1 runs here if the recipe
names no ``stage1.scores`` file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..utils.files import atomic_write_text
from ..config import DistributedSection, partition_dir_of

__all__ = ["partition", "partition_inputs", "read_report", "check_partitions", "REPORT_NAME", "format_report"]

logger = logging.getLogger(__name__)

REPORT_NAME = "rbgt_partition.json"
# 2: Spexphormer partitions hold the stage-1 scores (tables redrawn by the trainers);
# 3: every partition holds ndata["dist_nid"] (the DistGraph id of each original id)
REPORT_FORMAT = 3


def partition_inputs(recipe, dist: DistributedSection) -> dict[str, Any]:
    """Everything the partitions depend on (the dataset, its transforms and the layout)."""
    return {
        "dataset": recipe.dataset.model_dump(mode="json"),
        "transforms": [t.model_dump(mode="json") for t in recipe.transforms],
        "seed": recipe.seed,
        "num_parts": len(dist.hosts),
        "trainers_per_host": dist.trainers_per_host,
        "partition_method": dist.partition_method,
        "balance_train": dist.balance_train,
        "balance_edges": dist.balance_edges,
        "num_hops": dist.num_hops,
        "graph_format": list(dist.graph_format),
        **(_table_inputs(recipe, dist) if recipe.train.batching == "neighbour_tables" else {}),
    }


def _table_inputs(recipe, dist: DistributedSection) -> dict[str, Any]:
    """What Spexphormer's stored neighbour tables depend on (stage 1 and the sampling)."""
    return {"stage1": recipe.stage1.model_dump(mode="json"),
            "neighbour_tables": recipe.neighbour_tables.model_dump(mode="json"),
            "layers": recipe.model.layers}


def _fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _partition_of_nodes(num_nodes: int, orig_nids: torch.Tensor, node_map: list[list[int]]) -> torch.Tensor:
    """Partition id of every original node id, from DGL's shuffled-id ranges."""
    part = torch.empty(num_nodes, dtype=torch.int64)
    for p, (start, end) in enumerate(node_map):
        part[orig_nids[start:end]] = p
    return part


def _store_node_ids(part_config: Path, orig_nids: torch.Tensor, table_keys: list[str]) -> None:
    """One pass over the partitions' node data, after DGL's renumbering:

    - adds ``ndata["dist_nid"]``: entry ``i`` (DistGraph node ``i``'s row) holds the DistGraph id of
      *original* node ``i``, so trainers read the ids of a range of original ids (one machine's
      evaluation parts) without a map of the graph's size of their own;
    - rewrites the node ids held in ``table_keys`` (Spexphormer's stored tables) from original
      into DistGraph ids.
    """
    from dgl.data.utils import load_tensors, save_tensors

    meta = json.loads(part_config.read_text())
    dist_nid = torch.empty_like(orig_nids)
    dist_nid[orig_nids] = torch.arange(len(orig_nids), dtype=orig_nids.dtype)
    for p, (start, end) in enumerate(meta["node_map"]["_N"]):
        path = part_config.parent / meta[f"part-{p}"]["node_feats"]
        feats = load_tensors(str(path))
        feats["_N/dist_nid"] = dist_nid[start:end].clone()
        for key in table_keys:
            feats[f"_N/{key}"] = dist_nid[feats[f"_N/{key}"]]
        tmp = path.with_name(path.name + ".tmp")
        save_tensors(str(tmp), feats)
        tmp.replace(path)


def _partition_stats(graph, part: torch.Tensor, num_parts: int) -> dict[str, Any]:
    """Sizes per partition and the edge cut, vectorised over all edges."""
    src, dst = graph.edges()
    ps, pd = part[src], part[dst]
    cut = ps != pd
    n = graph.num_nodes()
    # 1-hop halo of a partition: nodes of other partitions with an edge into it (DGL stores the
    # in-edges of its nodes, so these are copied into the partition's structure).
    halo_keys = torch.unique(pd[cut] * n + src[cut])
    halo = torch.bincount(halo_keys // n, minlength=num_parts)
    counts = {k: torch.bincount(part[graph.ndata[f"{k}_mask"]], minlength=num_parts)
              for k in ("train", "val", "test") if f"{k}_mask" in graph.ndata}
    nodes = torch.bincount(part, minlength=num_parts)
    edges = torch.bincount(pd, minlength=num_parts)  # DGL assigns an edge to its destination's partition
    parts = []
    for p in range(num_parts):
        row = {"part": p, "nodes": int(nodes[p]), "edges": int(edges[p]), "halo_nodes": int(halo[p])}
        row.update({k: int(v[p]) for k, v in counts.items()})
        parts.append(row)
    num_edges = graph.num_edges()
    return {"edge_cut": int(cut.sum()), "edge_cut_fraction": float(cut.sum()) / max(num_edges, 1), "parts": parts}



def partition(recipe, dist: DistributedSection, *, out_dir: str | os.PathLike | None = None,
              progress: bool = False) -> dict[str, Any]:
    """Partition the recipe's graph into ``len(dist.hosts)`` parts; returns the report. With
    ``progress`` a bar names the running stage; every stage's time is logged either way."""
    import dgl

    from ..train.loop import seed_everything
    from ..utils.memory import peak_rss_bytes
    from ..utils.progress import Stages
    from ..train.pipeline import prepare_dataset

    out = Path(out_dir) if out_dir is not None else partition_dir_of(recipe, dist)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_NAME).unlink(missing_ok=True)  # a half-made partition must never look finished
    inputs = partition_inputs(recipe, dist)
    num_parts = inputs["num_parts"]
    spex = recipe.train.batching == "neighbour_tables"
    train_stage1 = spex and not recipe.stage1.scores
    names = [*(["stage 1"] if train_stage1 else []), "dataset", *(["tables"] if spex else []), "partition",
             "node ids"]
    with Stages(f"partition {recipe.name}", names, progress) as stages:
        t0 = time.perf_counter()
        scores_path, stage1_peak_mb = None, None
        if spex:
            from .tables import SCORES_KEY, draw_tables, scores_in_child

            scores_path = recipe.stage1.scores
            if scores_path:
                logger.info("stage 1 skipped: scores from %s", scores_path)
            else:
                with stages.stage("stage 1"):
                    # in a child, before this process loads the graph: stage 1's memory leaves with it
                    scores_path, stage1_peak_mb = scores_in_child(recipe, out, progress=progress)
        with stages.stage("dataset"):
            seed_everything(recipe.seed)
            dataset, graph = prepare_dataset(recipe, progress=progress)
        missing = [k for k in ("feat", "label", "train_mask", "val_mask", "test_mask") if k not in graph.ndata]
        if missing:
            raise UserError(f"dataset {dataset.name}: the graph lacks ndata {missing}; distributed training "
                            f"needs feat, label and train/val/test masks")
        tables = None
        if spex:
            with stages.stage("tables"):
                from ..train.two_stage import load_scores

                scores = load_scores(scores_path, recipe.model.layers, graph.num_edges())
                tables = draw_tables(recipe, graph, scores)
                graph.ndata.update(tables)
                # The trainers redraw the training tables from the scores (a float per edge and layer).
                graph.edata[SCORES_KEY] = scores.t().to(torch.float32).contiguous()  # (E, L)
                del scores
            logger.info("Spexphormer: scores, epoch 0's training tables and %d evaluation draws stored with "
                        "the partitions", recipe.neighbour_tables.eval_repeats)
        t_load = time.perf_counter() - t0
        logger.info("dataset %s: %d nodes, %d edges (%.1f s); partitioning into %d part(s) with %s",
                    dataset.name, graph.num_nodes(), graph.num_edges(), t_load, num_parts, dist.partition_method)
        t1 = time.perf_counter()
        with stages.stage("partition"):
            seed_everything(recipe.seed)  # random partitioning and METIS draw from the seeded generators
            balance = graph.ndata["train_mask"].to(torch.int64) if dist.balance_train else None
            # Original node ids travel with the partitions: trainers evaluate in single-machine order,
            # and predictions can be mapped back to the dataset's ids.
            graph.ndata["orig_nid"] = torch.arange(graph.num_nodes(), dtype=torch.int64)
            if dist.partition_method == "random" and dist.num_hops == 1:
                # DGL's partitioner holds every part at once (about 250 bytes per edge): ours
                # writes the same files one part at a time
                from .part_writer import random_assignment, write_random_partitions

                node_parts = random_assignment(graph.num_nodes(), num_parts,
                                               torch.Generator().manual_seed(recipe.seed))
                orig_nids = write_random_partitions(graph, node_parts, num_parts, out, recipe.name,
                                                    list(dist.graph_format))
                del node_parts
            else:
                orig_nids, _ = dgl.distributed.partition_graph(
                    graph, recipe.name, num_parts, str(out), num_hops=dist.num_hops,
                    part_method=dist.partition_method, balance_ntypes=balance, balance_edges=dist.balance_edges,
                    return_mapping=True, num_trainers_per_machine=dist.trainers_per_host,
                    graph_formats=list(dist.graph_format))
        t_part = time.perf_counter() - t1
        config_path = out / f"{recipe.name}.json"
        with stages.stage("node ids"):  # node ids in the tables: DistGraph ids from here on
            _store_node_ids(config_path, orig_nids, [k for k in tables or () if k.endswith("_table")])
    meta = json.loads(config_path.read_text())
    node_map = meta["node_map"]["_N"]
    part = _partition_of_nodes(graph.num_nodes(), orig_nids, node_map)
    stats = _partition_stats(graph, part, num_parts)
    label = graph.ndata["label"]
    report = {
        "format": REPORT_FORMAT,
        "recipe": recipe.name,
        "graph_name": recipe.name,
        "part_config": config_path.name,
        "fingerprint": _fingerprint(inputs),
        "made_from": inputs,
        "dataset": dataset.name,
        "num_nodes": graph.num_nodes(),
        "num_edges": graph.num_edges(),
        "in_feats": int(graph.ndata["feat"].shape[1]),
        "num_classes": int(dataset.num_classes),
        "metric": dataset.metric,
        "label_shape": list(label.shape[1:]),
        "label_dtype": str(label.dtype).removeprefix("torch."),
        "tables": None if tables is None else {
            "layers": recipe.model.layers,
            "eval_draws": recipe.neighbour_tables.eval_repeats,
            "resample_every": recipe.neighbour_tables.resample_every},
        "seconds": {"load": round(t_load, 3), "partition": round(t_part, 3),
                    "total": round(time.perf_counter() - t0, 3)},
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
        # Spexphormer's stage 1, trained in a child process before this one loaded the graph
        "stage1_peak_rss_mb": None if stage1_peak_mb is None else round(stage1_peak_mb, 1),
        **stats,
    }
    atomic_write_text(out / REPORT_NAME, json.dumps(report, indent=2, sort_keys=True) + "\n")
    logger.info("partitions written to %s (edge cut %.1f%%, %.1f s)", out, 100 * report["edge_cut_fraction"],
                report["seconds"]["total"])
    return report


def format_report(report: dict[str, Any]) -> str:
    """A small table: one row per partition, then the edge cut and timings."""
    keys = ["part", "nodes", "edges", "halo_nodes", "train", "val", "test"]
    rows = [[str(p.get(k, "")) for k in keys] for p in report["parts"]]
    widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    s = report["seconds"]
    lines.append(f"edge cut {report['edge_cut']} of {report['num_edges']} edges "
                 f"({100 * report['edge_cut_fraction']:.1f}%); load {s['load']:.1f} s, "
                 f"partition {s['partition']:.1f} s, peak memory {report['peak_rss_mb']:.0f} MB"
                 + (f" (stage 1 in its own process: {report['stage1_peak_rss_mb']:.0f} MB)"
                    if report.get("stage1_peak_rss_mb") else ""))
    return "\n".join(lines)


def read_report(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / REPORT_NAME
    if not path.is_file():
        raise UserError(f"no partitions in {folder} ({REPORT_NAME} missing); run `dgl-rbgt partition RECIPE` first")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); run `dgl-rbgt partition RECIPE` again") from None
    if report.get("format") != REPORT_FORMAT:
        raise UserError(f"{path} was written by another dgl-rbgt version; run `dgl-rbgt partition RECIPE` again")
    return report


def check_partitions(recipe, dist: DistributedSection, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The partition report for this recipe and layout; UserError naming what differs otherwise."""
    folder = Path(folder) if folder is not None else partition_dir_of(recipe, dist)
    report = read_report(folder)
    want = partition_inputs(recipe, dist)
    if report["fingerprint"] != _fingerprint(want):
        made = report.get("made_from", {})
        diff = [f"{k} ({made.get(k)!r} there, {v!r} now)" for k, v in want.items() if made.get(k) != v]
        raise UserError(f"partitions in {folder} do not match this recipe: {'; '.join(diff) or 'fingerprint'}; "
                        f"run `dgl-rbgt partition RECIPE` again")
    if not (folder / report["part_config"]).is_file():
        raise UserError(f"{folder / report['part_config']} is missing; run `dgl-rbgt partition RECIPE` again")
    return report
