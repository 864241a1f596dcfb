"""Random partitions written one part at a time: DGL's loader reads them, and they hold exactly
what DGL's own partitioner puts in a part (ids, halo, edge ownership, features)."""
import dgl
import pytest
import torch

from dgl_rbgt.distributed.part_writer import random_assignment, write_random_partitions


def test_random_assignment_is_balanced_and_seeded():
    a = random_assignment(1001, 4, torch.Generator().manual_seed(3))
    assert torch.bincount(a).tolist() == [251, 250, 250, 250]
    assert torch.equal(a, random_assignment(1001, 4, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, random_assignment(1001, 4, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="cannot cut 2 nodes into 3"):
        random_assignment(2, 3)


@pytest.mark.parametrize("num_parts", [1, 3])
def test_parts_match_the_graph(tmp_path, num_parts):
    torch.manual_seed(0)
    n = 300
    g = dgl.rand_graph(n, 2400)
    g.ndata["feat"] = torch.randn(n, 4)
    g.ndata["train_mask"] = torch.rand(n) < 0.5
    g.edata["score"] = torch.rand(g.num_edges(), 2)
    parts = random_assignment(n, num_parts, torch.Generator().manual_seed(0))
    orig_nids = write_random_partitions(g, parts, num_parts, tmp_path, "toy")
    src, dst = g.edges()
    edge_of = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(src.tolist(), dst.tolist()))}
    assert len(edge_of) == g.num_edges()  # no multi-edges, so an edge is named by its endpoints
    assert sorted(orig_nids.tolist()) == list(range(n))
    seen_edges = []
    for p in range(num_parts):
        part, nfeat, efeat, gpb, name, ntypes, etypes = dgl.distributed.load_partition(str(tmp_path / "toy.json"), p)
        assert name == "toy" and ntypes == ["_N"]
        inner = part.ndata["inner_node"].bool()
        k = int(inner.sum())
        assert bool(inner[:k].all()) and not bool(inner[k:].any())  # inner nodes first
        new_ids = part.ndata[dgl.NID]
        inner_orig = orig_nids[new_ids[:k]]
        assert torch.equal(torch.sort(inner_orig).values, torch.nonzero(parts == p).squeeze(1))
        assert torch.equal(gpb.nid2partid(new_ids), part.ndata["part_id"])  # the partition book agrees
        assert bool((part.ndata["part_id"][:k] == p).all()) and bool((part.ndata["part_id"][k:] != p).all())
        torch.testing.assert_close(nfeat["_N/feat"], g.ndata["feat"][inner_orig])
        assert torch.equal(nfeat["_N/train_mask"].bool(), g.ndata["train_mask"][inner_orig])
        # edges: the in-edges of the inner nodes (owned) and their out-edges to other parts
        u, v = part.formats(["coo", "csc"]).edges(order="eid")
        ou, ov = orig_nids[new_ids[u]], orig_nids[new_ids[v]]
        orig_e = torch.tensor([edge_of[(a, b)] for a, b in zip(ou.tolist(), ov.tolist())], dtype=torch.int64)
        owned = part.edata["inner_edge"].bool()
        assert torch.equal(owned, parts[ov] == p)
        expected = torch.nonzero((parts[dst] == p) | (parts[src] == p)).squeeze(1)
        assert torch.equal(torch.sort(orig_e).values, expected)
        assert torch.equal(gpb.eid2partid(part.edata[dgl.EID]), parts[ov])  # edge ids in their owner's range
        # edge features are stored in global-id order of the part's own edges
        global_owned = part.edata[dgl.EID][owned]
        row = global_owned - global_owned.min()
        torch.testing.assert_close(efeat["_N:_E:_N/score"][row], g.edata["score"][orig_e[owned]])
        assert len(part.adj_tensors("csc")[2]) == 0  # edges numbered in CSC order: no edge-id array stored
        halo = orig_nids[new_ids[k:]]
        assert set(halo.tolist()) == set(torch.cat([ou, ov]).tolist()) - set(inner_orig.tolist())
        seen_edges.append(part.edata[dgl.EID][owned])
    new_eids = torch.sort(torch.cat(seen_edges)).values
    assert torch.equal(new_eids, torch.arange(g.num_edges()))  # every edge owned exactly once


def test_bad_input_is_refused(tmp_path):
    g = dgl.rand_graph(10, 30)
    parts = torch.tensor([0, 1] * 5)
    with pytest.raises(ValueError, match=r"node_parts must be an int64 tensor of shape \(10,\)"):
        write_random_partitions(g, parts.float(), 2, tmp_path, "bad")
    with pytest.raises(ValueError, match=r"node_parts must be an int64 tensor of shape \(10,\)"):
        write_random_partitions(g, parts[:9], 2, tmp_path, "bad")
    with pytest.raises(ValueError, match=r"node_parts must name every part 0..2 at least once"):
        write_random_partitions(g, parts, 3, tmp_path, "bad")
    hetero = dgl.heterograph({("a", "r", "b"): (torch.tensor([0]), torch.tensor([0]))})
    with pytest.raises(ValueError, match="takes a homogeneous graph"):
        write_random_partitions(hetero, torch.zeros(2, dtype=torch.int64), 1, tmp_path, "bad")
