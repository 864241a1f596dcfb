"""Partitioning: sizes, edge cut and halo agree with DGL's own partition files; stale partitions are
refused with what differs."""
import json

import dgl
import pytest
import torch

from dgl_rbgt.config import parse_distributed
from dgl_rbgt.distributed.partition import REPORT_NAME, check_partitions, format_report, partition
from dgl_rbgt.errors import UserError
from dgl_rbgt.config import parse_recipe

N = 800


def recipe_and_dist(tmp_path, **dist):
    recipe = parse_recipe({"name": "ptest", "seed": 3, "dataset": {"name": "csbm", "params": {"num_nodes": N}},
                           "model": {"name": "gcn"}, "train": {"batching": "neighbor", "fanouts": [5, 5]}})
    d = parse_distributed({"hosts": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}],
                           "partition_dir": str(tmp_path / "parts-{name}"), **dist})
    return recipe, d


@pytest.mark.parametrize("method", ["metis", "random"])
def test_report_matches_dgl_partitions(tmp_path, method):
    recipe, dist = recipe_and_dist(tmp_path, partition_method=method)
    report = partition(recipe, dist)
    out = tmp_path / "parts-ptest"
    assert json.loads((out / REPORT_NAME).read_text()) == report
    assert (report["num_nodes"], report["num_classes"], report["metric"], report["in_feats"]) == (N, 5, "accuracy", 32)
    parts = report["parts"]
    assert len(parts) == 2 and sum(p["nodes"] for p in parts) == N
    assert sum(p["edges"] for p in parts) == report["num_edges"]
    cut_edges = 0
    orig_nid, dist_nid = [], []  # node data in DistGraph id order, over all parts
    for p in parts:
        g, node_feats, _, gpb, name, _, _ = dgl.distributed.load_partition(str(out / report["part_config"]), p["part"])
        assert name == "ptest"
        orig_nid.append(node_feats["_N/orig_nid"])
        dist_nid.append(node_feats["_N/dist_nid"])
        inner = g.ndata["inner_node"].bool()
        assert int(inner.sum()) == p["nodes"]
        assert int((~inner).sum()) == p["halo_nodes"]  # 1-hop halo: the other partitions' in-neighbours
        assert int(node_feats["_N/train_mask"].sum()) == p["train"]
        dst_inner = inner[g.edges()[1]]
        assert int(dst_inner.sum()) == p["edges"]
        cut_edges += int((dst_inner & ~inner[g.edges()[0]]).sum())
    assert cut_edges == report["edge_cut"]
    orig_nid, dist_nid = torch.cat(orig_nid), torch.cat(dist_nid)
    assert sorted(orig_nid.tolist()) == list(range(N))
    assert torch.equal(dist_nid[orig_nid], torch.arange(N))  # entry i: the DistGraph id of original node i
    assert 0 < report["edge_cut_fraction"] < 1
    if method == "metis":  # METIS with the training-node constraint balances training nodes
        train = [p["train"] for p in parts]
        assert abs(train[0] - train[1]) <= 0.1 * sum(train)
        assert report["edge_cut_fraction"] < 0.45  # well below random's ~(1 - 1/parts)
    assert "edge cut" in format_report(report)


def test_stale_partitions_are_refused(tmp_path):
    recipe, dist = recipe_and_dist(tmp_path, partition_method="random")
    with pytest.raises(UserError, match=r"no partitions in .*run `dgl-rbgt partition RECIPE` first"):
        check_partitions(recipe, dist)
    partition(recipe, dist)
    assert check_partitions(recipe, dist)["graph_name"] == "ptest"
    three = parse_distributed({**dist.model_dump(), "hosts": [{"address": f"10.0.0.{i}"} for i in (1, 2, 3)]})
    with pytest.raises(UserError, match=r"do not match this recipe: num_parts \(2 there, 3 now\)"):
        check_partitions(recipe, three)
    other = parse_recipe({**recipe.model_dump(mode="json"), "dataset": {"name": "csbm", "params": {"num_nodes": N + 1}}})
    with pytest.raises(UserError, match=r"do not match this recipe: dataset .*run `dgl-rbgt partition RECIPE` again"):
        check_partitions(other, dist)
