"""AddExpanderEdges, random_expander_edges, spectral_gap and the shared edge-type helpers."""
import logging
import math

import dgl
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from dgl.base import DGLError
from scipy.sparse.csgraph import connected_components

from dgl_rbgt.transforms import expander as expander_module
from dgl_rbgt.transforms.edge_types import EdgeType, add_self_loops, edge_type_codes
from dgl_rbgt.transforms.expander import AddExpanderEdges, random_expander_edges, spectral_gap
from dgl_rbgt.transforms.virtual_nodes import AddVirtualNodes




def expander_part(g):
    keep = g.edata["etype"] == EdgeType.EXPANDER
    src, dst = g.edges()
    return src[keep], dst[keep]


def assert_simple_regular(src, dst, num_nodes, degree):
    """Exactly 2d in and out expander edges per node, symmetric, no loop, no repeated pair."""
    assert src.numel() == 2 * degree * num_nodes
    assert torch.equal(torch.bincount(dst, minlength=num_nodes), torch.full((num_nodes,), 2 * degree))
    assert torch.equal(torch.bincount(src, minlength=num_nodes), torch.full((num_nodes,), 2 * degree))
    assert not (src == dst).any()
    keys = src * num_nodes + dst
    assert keys.unique().numel() == keys.numel()  # no duplicate directed edge
    assert torch.equal(keys.sort().values, (dst * num_nodes + src).sort().values)  # symmetric


def base_graph(num_nodes=200, num_edges=600):
    g = dgl.rand_graph(num_nodes, num_edges)
    g.ndata["feat"] = torch.randn(num_nodes, 4)
    g.ndata["label"] = torch.randint(3, (num_nodes,))
    g.edata["w"] = torch.rand(num_edges, 2)
    g.edata["count"] = torch.randint(1, 5, (num_edges,), dtype=torch.int32)
    return g


@pytest.mark.parametrize("method", ["permutation", "hamiltonian"])
@pytest.mark.parametrize("degree", [1, 3])
def test_default_expander_is_simple_regular_and_symmetric(method, degree):
    g = base_graph()
    out = AddExpanderEdges(degree=degree, method=method)(g)
    assert out.num_edges() == g.num_edges() + 2 * degree * g.num_nodes()
    assert_simple_regular(*expander_part(out), g.num_nodes(), degree)


def test_hamiltonian_maps_are_single_cycles():
    n, d = 101, 3
    src, dst = random_expander_edges(n, d, "hamiltonian")
    for k in range(d):  # edges come as i -> pi_k(i) for each map, then reversed
        succ = dst[k * n : (k + 1) * n]
        assert torch.equal(src[k * n : (k + 1) * n], torch.arange(n))
        node, seen = 0, 0
        while True:
            node, seen = int(succ[node]), seen + 1
            if node == 0:
                break
        assert seen == n


@pytest.mark.parametrize("method", ["permutation", "hamiltonian"])
def test_connected(method):
    n = 500
    src, dst = random_expander_edges(n, 2, method)
    adj = sp.coo_matrix((np.ones(src.numel()), (src.numpy(), dst.numpy())), shape=(n, n))
    assert connected_components(adj, directed=False)[0] == 1


def test_seeded_reproducibility():
    g = base_graph()
    a = AddExpanderEdges(seed=7)(g)
    b = AddExpanderEdges(seed=7)(g)
    c = AddExpanderEdges(seed=8)(g)
    assert torch.equal(torch.stack(a.edges()), torch.stack(b.edges()))
    assert not torch.equal(torch.stack(a.edges()), torch.stack(c.edges()))
    # seed=None draws from torch's global generator: torch.manual_seed makes it repeat
    torch.manual_seed(3)
    d = AddExpanderEdges()(g)
    torch.manual_seed(3)
    e = AddExpanderEdges()(g)
    assert torch.equal(torch.stack(d.edges()), torch.stack(e.edges()))
    assert not torch.equal(torch.stack(d.edges()), torch.stack(AddExpanderEdges()(g).edges()))


def test_input_untouched_and_data_carried_over():
    g = base_graph()
    before_edges = [t.clone() for t in g.edges()]
    before = {k: v.clone() for k, v in g.edata.items()}
    feat = g.ndata["feat"].clone()
    out = AddExpanderEdges(degree=2)(g)
    assert all(torch.equal(a, b) for a, b in zip(before_edges, g.edges()))
    assert set(g.edata.keys()) == {"w", "count"}  # no etype written into the input
    assert all(torch.equal(before[k], g.edata[k]) for k in before)
    assert torch.equal(g.ndata["feat"], feat)
    e0 = g.num_edges()
    # graph edges first, unchanged and typed 0; expander edges typed 1 with zero data
    assert all(torch.equal(a[:e0], b) for a, b in zip(out.edges(), before_edges))
    assert out.edata["etype"].dtype == torch.int8  # one byte per edge
    assert (out.edata["etype"][:e0] == EdgeType.GRAPH).all()
    assert (out.edata["etype"][e0:] == EdgeType.EXPANDER).all()
    assert torch.equal(out.edata["w"][:e0], before["w"])
    assert out.edata["w"].shape == (out.num_edges(), 2) and (out.edata["w"][e0:] == 0).all()
    assert out.edata["count"].dtype == torch.int32 and (out.edata["count"][e0:] == 0).all()
    assert torch.equal(out.ndata["feat"], feat) and torch.equal(out.ndata["label"], g.ndata["label"])


def test_existing_codes_kept_and_foreign_etype_refused():
    g = base_graph(60, 100)
    vg = AddVirtualNodes(2)(g)
    out = AddExpanderEdges(degree=2)(vg)
    e0 = vg.num_edges()
    assert torch.equal(out.edata["etype"][:e0], vg.edata["etype"])
    assert (out.edata["etype"][e0:] == EdgeType.EXPANDER).all()
    foreign = g.clone()
    foreign.edata["etype"] = torch.randint(0, 9, (g.num_edges(),))
    foreign.edata["etype"][0] = 8
    with pytest.raises(DGLError, match="another meaning"):
        AddExpanderEdges()(foreign)
    foreign.edata["etype"] = torch.rand(g.num_edges())
    with pytest.raises(DGLError, match="integer tensor"):
        AddExpanderEdges()(foreign)


def test_batched_graph_gets_one_expander_per_member():
    graphs = [base_graph(20, 30), base_graph(35, 50), base_graph(9, 10)]
    bg = dgl.batch(graphs)
    out = AddExpanderEdges(degree=2, seed=0)(bg)
    assert out.batch_num_nodes().tolist() == [20, 35, 9]
    assert out.batch_num_edges().tolist() == [30 + 80, 50 + 140, 10 + 36]
    for member, orig in zip(dgl.unbatch(out), graphs):
        assert_simple_regular(*expander_part(member), orig.num_nodes(), 2)
        e0 = orig.num_edges()
        assert all(torch.equal(a[:e0], b) for a, b in zip(member.edges(), orig.edges()))
        assert torch.equal(member.edata["w"][:e0], orig.edata["w"])


def test_self_loops_and_duplicates_when_allowed_keep_regularity():
    n, d = 12, 3
    loops = dups = 0
    for seed in range(20):
        g = dgl.graph(([], []), num_nodes=n)
        out = AddExpanderEdges(degree=d, seed=seed, self_loops=True, allow_duplicates=True)(g)
        src, dst = expander_part(out)
        assert torch.equal(torch.bincount(dst, minlength=n), torch.full((n,), 2 * d))
        is_loop = src == dst
        assert (torch.bincount(src[is_loop], minlength=n) % 2 == 0).all()  # loops come in pairs
        loops += int(is_loop.sum())
        keys = (src * n + dst)[~is_loop]
        dups += keys.numel() - keys.unique().numel()
    assert loops > 0 and dups > 0  # ~d fixed points per draw: the options really keep them


def test_self_loops_without_duplicates():
    n, d = 10, 3
    for seed in range(10):
        src, dst = random_expander_edges(
            n, d, self_loops=True, generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(torch.bincount(dst, minlength=n), torch.full((n,), 2 * d))
        keys = src * n + dst
        loop_keys = keys[src == dst]
        assert (torch.bincount(loop_keys // (n + 1), minlength=n) <= 2).all()  # one pair at most
        other = keys[src != dst]
        assert other.unique().numel() == other.numel()


@pytest.mark.parametrize("method, num_nodes", [("permutation", 7), ("permutation", 9), ("hamiltonian", 9)])
def test_smallest_graphs_are_still_simple_and_regular(method, num_nodes):
    degree = (num_nodes - 1) // 2  # N = 2d + 1: the expander must be the complete graph
    src, dst = random_expander_edges(num_nodes, degree, method, generator=torch.Generator().manual_seed(0))
    assert_simple_regular(src, dst, num_nodes, degree)


def test_hamiltonian_impossible_small_case_raises():
    with pytest.raises(DGLError, match="Hamiltonian cycles"):
        random_expander_edges(10, 4, "hamiltonian", generator=torch.Generator().manual_seed(0))


def test_spectral_gap_of_10k_draw_is_near_ramanujan_bound():
    n, d = 10_000, 3
    torch.manual_seed(0)
    gap, bound = spectral_gap(random_expander_edges(n, d), n)
    assert bound == pytest.approx(6 - 2 * math.sqrt(5))
    # observed: |gap / bound - 1| < 0.01 (random regular graphs are nearly Ramanujan)
    assert abs(gap / bound - 1) < 0.05


def test_spectral_gap_sparse_solver_matches_dense(monkeypatch):
    n = 1200
    src, dst = random_expander_edges(n, 2)
    sparse = spectral_gap((src, dst), n)
    monkeypatch.setattr(expander_module, "_DENSE_EIG_LIMIT", 10_000)
    dense = spectral_gap((src, dst), n)
    assert sparse.gap == pytest.approx(dense.gap, rel=1e-6)
    assert sparse.ramanujan_bound == dense.ramanujan_bound


def test_spectral_gap_of_graph_uses_expander_edges_and_sees_disconnection():
    g = AddExpanderEdges(degree=3, seed=1)(base_graph(300, 900))
    from_graph = spectral_gap(g)
    assert from_graph == spectral_gap(expander_part(g), 300)
    assert from_graph.gap > 1.0
    two = torch.cat([torch.arange(50).repeat(2), torch.arange(50, 100).repeat(2)])
    ring = torch.cat([(torch.arange(50) + 1) % 50, (torch.arange(50) - 1) % 50])
    ring = torch.cat([ring, ring + 50])
    assert spectral_gap((two, ring), 100).gap == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="num_nodes is required"):
        spectral_gap((two, ring))


def test_check_spectral_gap_logs_and_respects_limit(caplog):
    g = dgl.graph(([], []), num_nodes=300)
    with caplog.at_level(logging.INFO, logger="dgl_rbgt.transforms.expander"):
        AddExpanderEdges(check_spectral_gap=True, max_tries=3, seed=0)(g)
    assert "spectral gap" in caplog.text and "Ramanujan bound" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dgl_rbgt.transforms.expander"):
        AddExpanderEdges(check_spectral_gap=True, spectral_gap_nodes_limit=100)(g)
    assert "skipped" in caplog.text


def test_spectral_check_keeps_the_best_draw(monkeypatch):
    gaps = iter([0.2, 0.9, 0.5])
    monkeypatch.setattr(expander_module, "spectral_gap", lambda edges, n: (next(gaps), 1.5))
    draws = []
    real = expander_module.random_expander_edges

    def recording(*args, **kwargs):
        draws.append(real(*args, **kwargs))
        return draws[-1]

    monkeypatch.setattr(expander_module, "random_expander_edges", recording)
    out = AddExpanderEdges(check_spectral_gap=True, max_tries=3, seed=0)(dgl.graph(([], []), num_nodes=30))
    assert len(draws) == 3
    assert torch.equal(torch.stack(expander_part(out)), torch.stack(draws[1]))


def test_errors():
    with pytest.raises(ValueError, match="degree must be >= 1"):
        AddExpanderEdges(degree=0)
    with pytest.raises(TypeError, match="degree must be an int"):
        AddExpanderEdges(degree=2.5)
    with pytest.raises(ValueError, match="method must be one of"):
        AddExpanderEdges(method="ring")
    with pytest.raises(ValueError, match="max_tries must be >= 1"):
        AddExpanderEdges(max_tries=0)
    with pytest.raises(TypeError, match="self_loops must be a bool"):
        AddExpanderEdges(self_loops=1)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        AddExpanderEdges(seed=-1)
    with pytest.raises(DGLError, match="needs at least 7 nodes, the graph has 6"):
        AddExpanderEdges(degree=3)(dgl.rand_graph(6, 10))
    AddExpanderEdges(degree=3, allow_duplicates=True)(dgl.rand_graph(6, 10))  # fine with duplicates
    with pytest.raises(DGLError, match="graph 1 of the batch"):
        AddExpanderEdges(degree=3)(dgl.batch([dgl.rand_graph(20, 10), dgl.rand_graph(5, 3)]))
    hetero = dgl.heterograph({("a", "r", "b"): ([0], [1])})
    with pytest.raises(DGLError, match="homogeneous"):
        AddExpanderEdges()(hetero)
    block = dgl.to_block(dgl.sampling.sample_neighbors(dgl.rand_graph(20, 60), torch.tensor([0, 1]), 2))
    with pytest.raises(DGLError, match="is a block"):
        AddExpanderEdges()(block)


def test_repr():
    text = repr(AddExpanderEdges(degree=2, method="hamiltonian", seed=3))
    assert text.startswith("AddExpanderEdges(degree=2, method='hamiltonian', seed=3,")
    assert "spectral_gap_nodes_limit=50000" in text


# --- shared edge-type helpers (dgl_rbgt/transforms/edge_types.py) ---


def test_edge_type_codes_are_fixed():
    assert [int(t) for t in EdgeType] == [0, 1, 2, 3, 4]
    assert [t.name for t in EdgeType] == ["GRAPH", "EXPANDER", "SELF_LOOP", "VIRTUAL_IN", "VIRTUAL_OUT"]
    g = dgl.rand_graph(5, 7)
    assert torch.equal(edge_type_codes(g), torch.zeros(7, dtype=torch.int64))


def test_add_self_loops_typed_on_batched_graph():
    graphs = [base_graph(4, 5), base_graph(6, 3)]
    bg = dgl.batch(graphs)
    out = add_self_loops(bg)
    assert "etype" not in bg.edata
    assert out.batch_num_edges().tolist() == [9, 9]
    for member, orig in zip(dgl.unbatch(out), graphs):
        n, e0 = orig.num_nodes(), orig.num_edges()
        src, dst = member.edges()
        assert torch.equal(src[e0:], torch.arange(n)) and torch.equal(dst[e0:], torch.arange(n))
        assert (member.edata["etype"][e0:] == EdgeType.SELF_LOOP).all()
        assert (member.edata["etype"][:e0] == EdgeType.GRAPH).all()
        assert (member.edata["w"][e0:] == 0).all()
