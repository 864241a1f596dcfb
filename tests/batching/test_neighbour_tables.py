"""TableBatching: layer-wise batches (prefix property, valid indices, size bound), exactness
against the full-graph forward, resampling, evaluation draws, errors."""
import math

import dgl
import pytest
import torch

from dgl_rbgt.models.spexphormer import Spexphormer
from dgl_rbgt.batching import TableBatching
from dgl_rbgt.sampling import grow_batch
from dgl_rbgt.transforms.edge_types import add_self_loops
from dgl_rbgt.sampling import sparsify

KS = [4, 2, 3]


def feat_graph(n: int = 400, e: int = 1600) -> dgl.DGLGraph:
    g = add_self_loops(dgl.rand_graph(n, e))
    g.edata["etype"][: e // 3] = 1
    g.ndata["feat"] = torch.randn(n, 5)
    return g


def eval_model(layers: int = 3) -> Spexphormer:
    """float64, eval mode, random BatchNorm statistics: the forward is a fixed function."""
    model = Spexphormer(5, 3, hidden=8, num_heads=2, layers=layers).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_batches_have_prefix_property_valid_indices_and_bounded_size():
    g = feat_graph()
    nb = sparsify(g, torch.rand(3, g.num_edges()), KS)
    targets = torch.randperm(400)[:25]
    node_lists, blocks = grow_batch(nb, targets)
    assert len(node_lists) == 4 and torch.equal(node_lists[-1], targets)
    for layer, block in enumerate(blocks):
        src, dst = node_lists[layer], node_lists[layer + 1]
        assert len(torch.unique(src)) == len(src)  # each node once
        assert torch.equal(src[: len(dst)], dst)  # prefix property
        assert block.num_dst == len(dst) and block.num_src == len(src) and block.k == KS[layer]
        assert int(block.table.min()) >= 0 and int(block.table.max()) < len(src)
        # Remapped entries point at the same global nodes as the full tables.
        assert torch.equal(src[block.table], nb.tables[layer][dst])
        assert torch.equal(block.etype, nb.etypes[layer][dst])
        # Each list grows by at most a factor 1 + k.
        assert len(src) <= len(dst) * (1 + KS[layer])
    assert len(node_lists[0]) <= 25 * math.prod(1 + k for k in KS)


def test_mini_batch_forward_equals_full_graph_forward():
    """Batching is exact: every eval batch's logits equal the full-table forward's rows."""
    g = feat_graph()
    g.ndata["feat"] = g.ndata["feat"].double()
    nt = TableBatching(g, scores=torch.rand(3, g.num_edges()), ks=KS, batch_size=50, eval_batch_size=37)
    model = eval_model()
    full = model(nt._eval_tables[0], g.ndata["feat"])  # every node list = all nodes
    nodes = torch.randperm(400)[:150]
    seen = []
    with torch.no_grad():
        for batch in nt.eval_batches(nodes):
            torch.testing.assert_close(batch.run(model), full[batch.output_nodes], rtol=0, atol=1e-12)
            seen.append(batch.output_nodes)
    assert torch.equal(torch.cat(seen), nodes)
    # Training batches too (same function of their own tables).
    torch.manual_seed(0)
    batches = list(nt.train_batches(nodes, epoch=0))
    full_train = model(nt.train_tables, g.ndata["feat"])
    for batch in batches:
        torch.testing.assert_close(batch.run(model), full_train[batch.output_nodes], rtol=0, atol=1e-12)
    assert torch.equal(torch.cat([b.output_nodes for b in batches]).sort().values, nodes.sort().values)
    assert nt.num_train_batches(nodes) == len(batches) == 3


def test_eval_averages_logits_over_fixed_draws():
    g = feat_graph()
    g.ndata["feat"] = g.ndata["feat"].double()
    scores = torch.rand(3, g.num_edges())
    nt = TableBatching(g, scores=scores, ks=KS, batch_size=400, eval_repeats=3, eval_seed=7)
    model = eval_model()
    fulls = [model(sparsify(g, scores, KS, generator=torch.Generator().manual_seed(7 + i)), g.ndata["feat"])
             for i in range(3)]
    nodes = torch.arange(400)
    with torch.no_grad():
        (batch,) = list(nt.eval_batches(nodes))
        first = batch.run(model)
        torch.testing.assert_close(first, torch.stack(fulls).mean(0), rtol=0, atol=1e-12)
        (again,) = list(nt.eval_batches(nodes))
        assert torch.equal(again.run(model), first)  # deterministic evaluation


def tables_of(nt: TableBatching):
    return [t.clone() for t in nt.train_tables.tables]


def drain(nt: TableBatching, epoch: int, seed: int):
    torch.manual_seed(seed)  # what the loop does before each epoch
    return list(nt.train_batches(torch.arange(400), epoch))


@pytest.mark.parametrize("resample_every", [1, 2, 0])
def test_resampling_schedule(resample_every):
    g = feat_graph()
    scores = torch.rand(3, g.num_edges())
    nt = TableBatching(g, scores=scores, ks=KS, batch_size=128, resample_every=resample_every)
    drawn = []
    for epoch in range(4):
        drain(nt, epoch, seed=100 + epoch)
        drawn.append(tables_of(nt))
    changed = [not all(torch.equal(a, b) for a, b in zip(drawn[e - 1], drawn[e])) for e in range(1, 4)]
    want = {1: [True, True, True], 2: [False, True, False], 0: [False, False, False]}[resample_every]
    assert changed == want
    # Draws come from the global generator: the same seed gives the same tables.
    other = TableBatching(g, scores=scores, ks=KS, batch_size=128, resample_every=resample_every)
    drain(other, 0, seed=100)
    assert all(torch.equal(a, b) for a, b in zip(drawn[0], tables_of(other)))


def test_scores_from_file(tmp_path):
    g = feat_graph()
    scores = torch.rand(3, g.num_edges())
    torch.save(scores, tmp_path / "scores.pt")
    nt = TableBatching(g, scores=tmp_path / "scores.pt", ks=2, batch_size=10, eval_seed=5)
    same = TableBatching(g, scores=scores, ks=2, batch_size=10, eval_seed=5)
    assert nt.ks == [2, 2, 2]
    assert all(torch.equal(a, b) for a, b in zip(nt._eval_tables[0].tables, same._eval_tables[0].tables))


def test_errors():
    g = feat_graph()
    scores = torch.rand(3, g.num_edges())
    with pytest.raises(ValueError, match="scores has 10 columns but the graph has"):
        TableBatching(g, scores=torch.rand(3, 10), ks=2, batch_size=8)
    with pytest.raises(ValueError, match=r"scores must have shape \(L, E\)"):
        TableBatching(g, scores=scores[0], ks=2, batch_size=8)
    with pytest.raises(TypeError, match="scores must be a tensor"):
        TableBatching(g, scores=[0.5], ks=2, batch_size=8)
    with pytest.raises(ValueError, match="ks must be an int or a list of 3 ints"):
        TableBatching(g, scores=scores, ks=[2, 2], batch_size=8)
    with pytest.raises(ValueError, match=r"ks\[1\] must be >= 1"):
        TableBatching(g, scores=scores, ks=[2, 0, 2], batch_size=8)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TableBatching(g, scores=scores, ks=2, batch_size=0)
    with pytest.raises(ValueError, match="resample_every must be >= 0"):
        TableBatching(g, scores=scores, ks=2, batch_size=8, resample_every=-1)
    with pytest.raises(ValueError, match="eval_repeats must be >= 1"):
        TableBatching(g, scores=scores, ks=2, batch_size=8, eval_repeats=0)
    with pytest.raises(ValueError, match="method must be one of"):
        TableBatching(g, scores=scores, ks=2, batch_size=8, method="max")
    with pytest.raises(ValueError, match="scores must be nonnegative"):
        TableBatching(g, scores=-scores, ks=2, batch_size=8)
    g.ndata.pop("feat")
    with pytest.raises(ValueError, match=r"graph has no ndata\['feat'\]"):
        TableBatching(g, scores=scores, ks=2, batch_size=8)
    nb = sparsify(g, scores, 2)
    with pytest.raises(ValueError, match="targets must be distinct"):
        grow_batch(nb, torch.tensor([1, 2, 1]))


def test_stored_draws_are_compact_and_batch_the_same():
    """Kept draws hold 32-bit ids and 8-bit types without edge ids; batches widen them."""
    g = feat_graph()
    scores = torch.rand(3, g.num_edges())
    nt = TableBatching(g, scores=scores, ks=KS, batch_size=50, eval_seed=3)
    stored = nt._eval_tables[0]
    full = sparsify(g, scores, KS, generator=torch.Generator().manual_seed(3))
    assert stored.edge_ids is None
    assert all(t.dtype == torch.int32 for t in stored.tables) and all(e.dtype == torch.int8 for e in stored.etypes)
    for a, b in zip(stored.tables, full.tables):
        assert torch.equal(a.long(), b)
    for a, b in zip(stored.etypes, full.etypes):
        assert torch.equal(a.long(), b)
    with pytest.raises(ValueError, match="without edge ids"):
        stored.to_graphs()
    _, blocks = grow_batch(stored, torch.arange(10))
    assert all(b.table.dtype == torch.int64 and b.etype.dtype == torch.int64 for b in blocks)


def test_node_batches_keep_the_components_of_a_batched_graph():
    """SGFormer's node batches of a dgl.batch stay a batch: attention never mixes components."""
    from dgl_rbgt.batching import NodeBatches

    sizes = [7, 5, 9]
    g = dgl.batch([dgl.rand_graph(n, 3 * n) for n in sizes])
    g.ndata["feat"] = torch.randn(g.num_nodes(), 3)
    component = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    seen = []
    for batch in NodeBatches(g, batch_size=8).train_batches(torch.arange(21), epoch=0):
        subs = []
        batch.run(lambda sub, feat: subs.append(sub) or feat)
        sub, ids = subs[0], batch.output_nodes
        comp = component[ids]
        assert bool((comp[1:] >= comp[:-1]).all())  # grouped by component, in order
        assert sub.batch_num_nodes().tolist() == [int(c) for c in torch.bincount(comp) if c > 0]
        src, dst = sub.edges()
        assert torch.equal(comp[src], comp[dst])  # induced edges never cross components
        assert int(sub.batch_num_edges().sum()) == sub.num_edges()
        seen.append(ids)
    assert sorted(torch.cat(seen).tolist()) == list(range(21))
