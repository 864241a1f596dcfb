"""sparsify: exact sampling laws, fixed degree, conventions, seeding, to_graphs and errors."""
import importlib
import itertools
import math

import dgl
import pytest
import torch
from dgl.base import DGLError

from dgl_rbgt.sampling import NeighbourTables, sparsify

# The module (the package's `sparsify` attribute is the function).
sparsify_module = importlib.import_module("dgl_rbgt.sampling.sparsifier")

SIGMAS = 5.0  # tolerance of every frequency check, in binomial standard deviations


def star_copies(weights: list[float], copies: int):
    """``copies`` destination nodes, each with ``len(weights)`` in-edges of its own sources.

    Destination ``c`` is node ``c``; its sources are ``copies + c * m + j``. Edge ``c * m + j``
    carries ``weights[j]``. Returns graph and scores (E,).
    """
    m = len(weights)
    dst = torch.arange(copies).repeat_interleave(m)
    src = copies + torch.arange(copies * m)
    g = dgl.graph((src, dst), num_nodes=copies * (m + 1))
    return g, torch.tensor(weights, dtype=torch.float64).repeat(copies)


def exact_inclusion(weights: list[float], k: int) -> list[float]:
    """Inclusion probabilities of successive weighted sampling without replacement (float64),
    by enumerating every ordered draw of k distinct items."""
    w = [float(x) for x in weights]
    incl = [0.0] * len(w)
    for seq in itertools.permutations(range(len(w)), k):
        p, left = 1.0, sum(w)
        for i in seq:
            p *= w[i] / left
            left -= w[i]
        for i in seq:
            incl[i] += p
    return incl


def assert_frequencies(counts: torch.Tensor, probs: list[float], trials: int) -> None:
    """Each count within SIGMAS binomial standard deviations of trials * p."""
    for j, (c, p) in enumerate(zip(counts.tolist(), probs)):
        sd = math.sqrt(trials * p * (1 - p)) if 0 < p < 1 else 0.0
        assert abs(c - trials * p) <= SIGMAS * sd + 1e-9, (j, c, trials * p, sd)


def slot_of_edges(nb: NeighbourTables, layer: int, copies: int, m: int) -> torch.Tensor:
    """(copies, k) index j of the kept edge within its star (edge id modulo m)."""
    return nb.edge_ids[layer][:copies] % m


@pytest.mark.parametrize("weights,k", [([1.0, 2.0, 3.0, 4.0, 10.0], 2), ([0.5, 1.0, 1.5, 7.0], 3),
                                       ([0.1, 0.2, 5.0, 5.0, 0.3], 2)])
@pytest.mark.parametrize("path", ["one-packed-sort", "two-sorts", "chunks"])
def test_inclusion_law_matches_successive_sampling(weights, k, path, monkeypatch):
    if path == "two-sorts":  # the path of ranges with more than 2^23 nodes
        monkeypatch.setattr(sparsify_module, "_PACKED_MIN_KEY_BITS", 64)
    if path == "chunks":  # ranges of 2-3 destinations (and of source nodes without in-edges)
        monkeypatch.setattr(sparsify_module, "_CHUNK_EDGES", 2 * len(weights) + 1)
    copies = 20000
    g, scores = star_copies(weights, copies)
    nb = sparsify(g, scores, k, generator=torch.Generator().manual_seed(11))
    slots = slot_of_edges(nb, 0, copies, len(weights))
    # Without replacement: k distinct edges per node.
    assert bool((slots.sort(1).values.diff(dim=1) > 0).all())
    counts = torch.bincount(slots.flatten(), minlength=len(weights))
    assert_frequencies(counts, exact_inclusion(weights, k), copies)
    # The first entry is the first successive draw: probability w / sum(w).
    first = torch.bincount(slots[:, 0], minlength=len(weights))
    assert_frequencies(first, [w / sum(weights) for w in weights], copies)


def test_pair_law_and_per_layer_scores():
    """Unordered pairs follow the exact law; each layer uses its own score row and k."""
    w0, w1 = [1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 1.0, 1.0]
    copies = 20000
    g, s0 = star_copies(w0, copies)
    _, s1 = star_copies(w1, copies)
    nb = sparsify(g, torch.stack([s0, s1]), [2, 3], generator=torch.Generator().manual_seed(3))
    assert nb.ks == [2, 3]
    slots = slot_of_edges(nb, 0, copies, 4).sort(1).values
    pairs = list(itertools.combinations(range(4), 2))
    code = slots[:, 0] * 4 + slots[:, 1]
    counts = torch.stack([(code == a * 4 + b).sum() for a, b in pairs])
    exact = []
    for a, b in pairs:  # P({a, b}) = P(a then b) + P(b then a)
        total = sum(w0)
        exact.append(w0[a] / total * w0[b] / (total - w0[a]) + w0[b] / total * w0[a] / (total - w0[b]))
    assert abs(sum(exact) - 1) < 1e-12
    assert_frequencies(counts, exact, copies)
    counts1 = torch.bincount(slot_of_edges(nb, 1, copies, 4).flatten(), minlength=4)
    assert_frequencies(counts1, exact_inclusion(w1, 3), copies)


def test_fixed_degree_and_consistency_on_random_graph():
    g = dgl.rand_graph(300, 2500)
    g.edata["etype"] = torch.randint(0, 3, (g.num_edges(),))
    scores = torch.rand(3, g.num_edges())
    nb = sparsify(g, scores, [1, 4, 9])
    src, dst = g.edges(order="eid")
    in_deg = g.in_degrees()
    for layer, k in enumerate([1, 4, 9]):
        eids, table = nb.edge_ids[layer], nb.tables[layer]
        assert eids.shape == table.shape == nb.etypes[layer].shape == (300, k)
        has = in_deg > 0
        assert bool(nb.valid[layer][has].all()) and not bool(nb.valid[layer][~has].any())
        e = eids[has]
        assert bool((dst[e] == torch.arange(300)[has].unsqueeze(1)).all())  # row = destination
        assert torch.equal(src[e], table[has])
        assert torch.equal(g.edata["etype"][e], nb.etypes[layer][has])
        # Nodes with at least k candidates: k distinct edges.
        full = in_deg >= k
        assert bool((eids[full].sort(1).values.diff(dim=1) > 0).all())


def test_deficient_nodes_keep_all_and_fill_with_replacement():
    """Candidates [1, 3] and a zero-score edge, k = 5: both candidates once, then i.i.d. draws
    with P = w / sum(w); the zero-score edge never appears."""
    weights = [1.0, 0.0, 3.0]
    copies, k = 20000, 5
    g, scores = star_copies(weights, copies)
    nb = sparsify(g, scores, k)
    slots = slot_of_edges(nb, 0, copies, 3)
    assert not bool((slots == 1).any())
    head = slots[:, :2].sort(1).values
    assert bool((head == torch.tensor([0, 2])).all())
    fill = slots[:, 2:].flatten()
    counts = torch.bincount(fill, minlength=3)
    assert_frequencies(counts, [0.25, 0.0, 0.75], len(fill))
    # Draws with replacement: fill slots are independent of each other (pairs equal 0/0 at 1/16).
    both_zero = ((slots[:, 2] == 0) & (slots[:, 3] == 0)).sum()
    assert_frequencies(both_zero.view(1), [1 / 16], copies)


@pytest.mark.parametrize("packed", [True, False], ids=["one-packed-sort", "two-sorts"])
def test_uniform_method_ignores_scores(packed, monkeypatch):
    if not packed:
        monkeypatch.setattr(sparsify_module, "_PACKED_MIN_KEY_BITS", 64)
    copies = 20000
    g, scores = star_copies([1.0, 100.0, 0.0, 5.0], copies)
    nb = sparsify(g, scores, 2, method="uniform")
    counts = torch.bincount(slot_of_edges(nb, 0, copies, 4).flatten(), minlength=4)
    assert_frequencies(counts, [0.5] * 4, copies)


def test_zero_fallback_uniform_and_error():
    copies = 20000
    g, scores = star_copies([0.0, 0.0, 0.0, 0.0], copies)
    nb = sparsify(g, scores, 2)
    counts = torch.bincount(slot_of_edges(nb, 0, copies, 4).flatten(), minlength=4)
    assert_frequencies(counts, [0.5] * 4, copies)
    assert bool(nb.valid[0][:copies].all())
    with pytest.raises(ValueError, match="all zero on the in-edges of 20000 node"):
        sparsify(g, scores, 2, zero_fallback="error")
    with pytest.raises(ValueError, match="zero_fallback must be one of"):
        sparsify(g, scores, 2, zero_fallback="skip")


def test_zero_in_degree_nodes_are_masked_self_references():
    g = dgl.graph(([0, 1, 2], [1, 2, 1]), num_nodes=4)  # nodes 0 and 3 have no in-edges
    nb = sparsify(g, torch.ones(3), 3)
    table, valid = nb.tables[0], nb.valid[0]
    for v in (0, 3):
        assert table[v].tolist() == [v] * 3
        assert nb.edge_ids[0][v].tolist() == [-1] * 3
        assert nb.etypes[0][v].tolist() == [0] * 3
        assert not bool(valid[v].any())
    assert bool(valid[[1, 2]].all()) and not nb.all_valid
    sub = nb.to_graphs()[0]
    assert sub.in_degrees().tolist() == [0, 3, 3, 0]


def test_topk_takes_highest_scores_with_ties_by_edge_id():
    # Node 0: scores 5, 1, 5, 3, 5 -> top 2 among the tied 5s are the lower ids 0 and 2.
    g = dgl.graph(([1, 2, 3, 4, 5, 0], [0, 0, 0, 0, 0, 1]))
    scores = torch.tensor([5.0, 1.0, 5.0, 3.0, 5.0, 2.0])
    for seed in range(3):
        nb = sparsify(g, scores, 2, method="topk", generator=torch.Generator().manual_seed(seed))
        assert nb.edge_ids[0][0].tolist() == [0, 2]
    nb = sparsify(g, scores, 4, method="topk")
    assert nb.edge_ids[0][0].tolist() == [0, 2, 4, 3]
    # Node 1 has one candidate: kept, then filled with itself.
    assert nb.edge_ids[0][1].tolist() == [5, 5, 5, 5]


def test_seeded_draws_repeat():
    g = dgl.rand_graph(500, 4000)
    scores = torch.rand(2, g.num_edges())
    a = sparsify(g, scores, [3, 7], generator=torch.Generator().manual_seed(5))
    b = sparsify(g, scores, [3, 7], generator=torch.Generator().manual_seed(5))
    c = sparsify(g, scores, [3, 7], generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a.edge_ids, b.edge_ids))
    assert not all(torch.equal(x, y) for x, y in zip(a.edge_ids, c.edge_ids))
    torch.manual_seed(1)
    d = sparsify(g, scores, [3, 7], method="uniform")
    torch.manual_seed(1)
    e = sparsify(g, scores, [3, 7], method="uniform")
    assert all(torch.equal(x, y) for x, y in zip(d.tables, e.tables))


def test_to_graphs_maps_edges_back():
    g = dgl.add_self_loop(dgl.rand_graph(100, 600))
    g.edata["etype"] = torch.randint(0, 3, (g.num_edges(),))
    scores = torch.rand(g.num_edges())  # one row used for both layers of k = [2, 5]
    nb = sparsify(g, scores, [2, 5], return_graphs=True)
    assert nb.num_layers == 2 and nb.graphs is not None
    for layer, (sub, k) in enumerate(zip(nb.graphs, [2, 5])):
        assert sub.num_nodes() == 100 and sub.num_edges() == 100 * k
        assert bool((sub.in_degrees() == k).all())
        s, d = sub.edges(order="eid")
        eid = sub.edata[dgl.EID]
        gs, gd = g.find_edges(eid)
        assert torch.equal(s, gs) and torch.equal(d, gd)
        assert torch.equal(sub.edata["etype"], g.edata["etype"][eid])
        # Row-major order: edge v * k + j is entry (v, j).
        assert torch.equal(eid.view(100, k), nb.edge_ids[layer])


def test_tiny_positive_scores_do_not_overflow():
    """Keys are taken in log space: weights near the float64 minimum still count as candidates."""
    g = dgl.graph(([1, 2, 3], [0, 0, 0]))
    scores = torch.tensor([1e-320, 0.0, 1e-300], dtype=torch.float64)
    nb = sparsify(g, scores, 2)
    assert sorted(nb.edge_ids[0][0].tolist()) == [0, 2]


def test_errors_name_the_argument():
    g = dgl.rand_graph(10, 30)
    ok = torch.rand(30)
    with pytest.raises(ValueError, match="scores must have last dimension 30"):
        sparsify(g, torch.rand(29), 2)
    with pytest.raises(ValueError, match="scores must have 1 or 2 dimensions"):
        sparsify(g, torch.rand(2, 2, 30), 2)
    with pytest.raises(ValueError, match="scores must have 1 or 2 dimensions"):
        sparsify(g, torch.tensor(1.0), 2)
    with pytest.raises(TypeError, match="scores must be a floating-point tensor"):
        sparsify(g, torch.ones(30, dtype=torch.int64), 2)
    with pytest.raises(TypeError, match="scores must be a torch.Tensor"):
        sparsify(g, [1.0] * 30, 2)
    with pytest.raises(ValueError, match="scores must be nonnegative"):
        sparsify(g, ok - 2, 2)
    for bad in (float("nan"), float("inf")):
        s = ok.clone()
        s[3] = bad
        with pytest.raises(ValueError, match="scores contains NaN or Inf"):
            sparsify(g, s, 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        sparsify(g, ok, 0)
    with pytest.raises(ValueError, match=r"k\[1\] must be >= 1"):
        sparsify(g, ok, [2, 0])
    with pytest.raises(TypeError, match="k must be an int or a list of ints"):
        sparsify(g, ok, 2.0)
    with pytest.raises(TypeError, match=r"k\[0\] must be an int"):
        sparsify(g, ok, [2.5])
    with pytest.raises(ValueError, match="k must be an int or a non-empty list"):
        sparsify(g, ok, [])
    with pytest.raises(ValueError, match="k has 3 entries but scores has 2 layers"):
        sparsify(g, torch.rand(2, 30), [1, 2, 3])
    with pytest.raises(ValueError, match="method must be one of"):
        sparsify(g, ok, 2, method="max")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        sparsify(g, ok, 2, generator=0)
    with pytest.raises(TypeError, match="g must be a dgl.DGLGraph"):
        sparsify("graph", ok, 2)
    hetero = dgl.heterograph({("a", "r", "b"): ([0], [0]), ("b", "s", "a"): ([0], [0])})
    with pytest.raises(DGLError, match="g must be homogeneous"):
        sparsify(hetero, torch.rand(2), 1)
    block = dgl.to_block(dgl.in_subgraph(g, [0, 1]), dst_nodes=torch.tensor([0, 1]))
    with pytest.raises(DGLError, match="g is a block"):
        sparsify(block, torch.rand(block.num_edges()), 1)
    with pytest.raises(DGLError, match="g has no nodes"):
        sparsify(dgl.graph(([], []), num_nodes=0), torch.rand(0), 1)
    with pytest.raises(DGLError, match="g has no edges"):
        sparsify(dgl.graph(([], []), num_nodes=3), torch.rand(0), 1)


def test_integer_keys_keep_float_order():
    """The float64 -> int64 key map used for the fast integer sorts preserves order."""
    from dgl_rbgt.sampling.sparsifier import _ordered_int64

    scale = torch.full((5000,), 10.0, dtype=torch.float64) ** torch.randint(-300, 300, (5000,))
    x = torch.cat([torch.randn(5000, dtype=torch.float64) * scale,
                   torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 5e-324, -5e-324],
                                dtype=torch.float64)])
    assert bool(torch.isfinite(x[:5000]).all())
    keys = _ordered_int64(x)
    order = torch.sort(keys, stable=True).indices
    assert bool((x[order].diff() >= 0).all())


@pytest.mark.parametrize("chunk_edges", [1, 5, 64, 1 << 21])
def test_chunked_draws_keep_every_convention(chunk_edges, monkeypatch):
    """Ranges smaller than one node's in-edges, zero in-degree nodes, all-zero scores and deficient
    nodes inside and across chunk boundaries: same conventions at every chunk size."""
    monkeypatch.setattr(sparsify_module, "_CHUNK_EDGES", chunk_edges)
    torch.manual_seed(0)
    g = dgl.graph((torch.randint(0, 60, (400,)), torch.randint(0, 50, (400,))), num_nodes=60)  # 50-59: no in-edges
    scores = torch.rand(2, g.num_edges())
    scores[:, g.in_edges(7, form="eid")] = 0.0  # node 7: all-zero scores -> uniform fallback
    deg = g.in_degrees()
    nb = sparsify(g, scores, [3, 12], generator=torch.Generator().manual_seed(1))
    src, dst = g.edges()
    for layer, k in enumerate([3, 12]):
        eids, table, valid = nb.edge_ids[layer], nb.tables[layer], nb.valid[layer]
        assert torch.equal(valid.all(1), deg > 0) and not bool(valid[deg == 0].any())
        assert torch.equal(table[deg == 0], torch.arange(50, 60).unsqueeze(1).expand(-1, k))
        kept = eids[valid]
        assert torch.equal(dst[kept], torch.arange(60).unsqueeze(1).expand(-1, k)[valid])  # in-edges of the row
        assert torch.equal(src[kept], table[valid])
        for v in range(50):
            row = eids[v].tolist()
            if deg[v] >= k:  # without replacement
                assert len(set(row)) == k
            else:  # all candidates first, then refills among them
                assert set(row) == set(g.in_edges(v, form="eid").tolist())


def test_sparsifier_draws_equal_sparsify():
    torch.manual_seed(0)
    g = dgl.add_self_loop(dgl.rand_graph(80, 500))
    g.edata["etype"] = torch.randint(0, 3, (g.num_edges(),))
    scores = torch.rand(2, g.num_edges())
    sampler = sparsify_module.Sparsifier(g, scores)
    assert sampler.num_layers == 2 and sparsify_module.Sparsifier(g, scores[0]).num_layers is None
    for seed in (0, 1):
        a = sampler.draw([4, 2], generator=torch.Generator().manual_seed(seed))
        b = sparsify(g, scores, [4, 2], generator=torch.Generator().manual_seed(seed))
        for name in ("tables", "edge_ids", "etypes", "valid"):
            assert all(torch.equal(x, y) for x, y in zip(getattr(a, name), getattr(b, name)))
        assert all(torch.equal(e, g.edata["etype"][i]) for e, i in zip(a.etypes, a.edge_ids))
    with pytest.raises(ValueError, match="k has 3 entries but scores has 2 layers"):
        sampler.draw([1, 2, 3])
    with pytest.raises(ValueError, match="return_graphs needs the edge ids"):
        sampler.draw([4, 2], compact=True, return_graphs=True)
    compact = sampler.draw([4, 2], generator=torch.Generator().manual_seed(0), compact=True)
    full = sampler.draw([4, 2], generator=torch.Generator().manual_seed(0))
    assert compact.edge_ids is None and compact.tables[0].dtype == torch.int32
    assert all(torch.equal(a.long(), b) for a, b in zip(compact.tables + compact.etypes, full.tables + full.etypes))


def test_k_defaults_to_the_papers_setting():
    """``sparsify(g, scores)``, the call the library is known for, works without k: 5 per layer."""
    from dgl_rbgt.sampling import DEFAULT_K
    from dgl_rbgt.transforms import sparsify as public_sparsify

    g = dgl.add_self_loop(dgl.rand_graph(30, 150))
    nb = public_sparsify(g, torch.rand(3, g.num_edges()))
    assert DEFAULT_K == 5 and nb.ks == [5, 5, 5]
    assert public_sparsify is sparsify
