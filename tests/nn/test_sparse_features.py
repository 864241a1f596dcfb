"""Sparse input features: every first layer computed from sparse rows against the same layer on the
dense rows in float64 (outputs and gradients), on graphs, blocks and isolated nodes; dropout's law
on the stored entries; clear errors."""
import dgl
import pytest
import torch
from dgl.nn import GATConv, GraphConv, SAGEConv
from torch import nn

from dgl_rbgt.nn.sparse_features import dropout_values, sparse_apply, sparse_rows


def bag_of_words(rows, cols, density=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return ((torch.rand(rows, cols, generator=gen) < density) * torch.rand(rows, cols, generator=gen)).double()


def layers(cols, out):
    return [nn.Linear(cols, out), nn.Linear(cols, out, bias=False), nn.Identity(),
            GraphConv(cols, out, allow_zero_in_degree=True),
            GraphConv(cols, out, bias=False, activation=torch.tanh, allow_zero_in_degree=True),
            SAGEConv(cols, out, "mean"), SAGEConv(cols, out, "mean", bias=False, activation=torch.tanh,
                                                   norm=nn.LayerNorm(out)),
            GATConv(cols, out, 3, allow_zero_in_degree=True),
            GATConv(cols, out, 1, bias=False, activation=torch.tanh, allow_zero_in_degree=True)]


def graph_calls():
    torch.manual_seed(1)
    g = dgl.rand_graph(30, 90)  # random: some nodes have no in- or out-edges
    block = dgl.to_block(dgl.in_subgraph(g, torch.arange(12)), torch.arange(12))
    return [("graph", g, torch.arange(30)), ("block", block, block.srcdata[dgl.NID])]


@pytest.mark.parametrize("index", range(9))
@pytest.mark.parametrize("kind", ["graph", "block"])
def test_sparse_apply_equals_the_layer_on_dense_rows(index, kind):
    name, g, src_ids = next(c for c in graph_calls() if c[0] == kind)
    x = bag_of_words(30, 40, seed=index)[src_ids]
    torch.manual_seed(index)
    layer = layers(40, 40 if index == 2 else 6)[index].double()
    ref = layers(40, 40 if index == 2 else 6)[index].double()
    for p in layer.parameters():  # non-zero attention vectors and biases
        torch.nn.init.normal_(p, std=0.5)
    ref.load_state_dict(layer.state_dict())
    conv = isinstance(layer, (GraphConv, SAGEConv, GATConv))
    out = sparse_apply(layer, sparse_rows(x), g if conv else None)
    want = ref(g, x) if conv else ref(x)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    if not list(layer.parameters()):  # Identity
        return
    weights = torch.randn_like(want)
    (out * weights).sum().backward()
    (want * weights).sum().backward()
    for (pname, p), q in zip(layer.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12, msg=f"gradient of {pname}")


def test_sparse_rows_are_detached_and_coalesced():
    x = bag_of_words(5, 7).requires_grad_()
    xs = sparse_rows(x)
    assert xs.is_sparse and xs.is_coalesced() and not xs.requires_grad
    assert xs._nnz() == int((x != 0).sum())
    assert xs.to_dense().equal(x.detach())


def test_dropout_values_has_dropouts_law_on_the_stored_entries():
    torch.manual_seed(0)
    x = bag_of_words(400, 50, density=0.2) + 0  # about 4,000 stored entries
    xs = sparse_rows(x)
    out = dropout_values(xs, nn.Dropout(0.3)).to_dense()
    kept = out[x != 0] != 0
    n = kept.numel()
    # Each stored entry is kept with probability 0.7 (4 standard deviations of a binomial).
    assert abs(kept.float().mean().item() - 0.7) < 4 * (0.7 * 0.3 / n) ** 0.5
    torch.testing.assert_close(out[x != 0][kept], x[x != 0][kept] / 0.7)  # survivors rescaled
    assert out[x == 0].eq(0).all()
    assert dropout_values(xs, nn.Dropout(0.3).eval()).to_dense().equal(x)


def test_unsupported_layers_and_inputs_are_named():
    g = dgl.rand_graph(10, 20)
    xs = sparse_rows(bag_of_words(10, 8))
    with pytest.raises(ValueError, match="residual=False"):
        sparse_apply(GATConv(8, 4, 2, residual=True).double(), xs, g)
    with pytest.raises(ValueError, match="one input size"):
        sparse_apply(GATConv((8, 8), 4, 2).double(), xs, g)
    with pytest.raises(ValueError, match=r"GATConv\(feat_drop=0\)"):
        sparse_apply(GATConv(8, 4, 2, feat_drop=0.5).double(), xs, g)
    with pytest.raises(ValueError, match="BatchNorm1d"):
        sparse_apply(nn.BatchNorm1d(8).double(), xs, g)
    with pytest.raises(ValueError, match="'pool'"):
        sparse_apply(SAGEConv(8, 4, "pool").double(), xs, g)
    with pytest.raises(ValueError, match="feat_drop"):
        sparse_apply(SAGEConv(8, 4, "mean", feat_drop=0.5).double(), xs, g)
    with pytest.raises(ValueError, match="norm='both'"):
        sparse_apply(GraphConv(8, 4, norm="right").double(), xs, g)
    with pytest.raises(ValueError, match="needs its graph"):
        sparse_apply(GraphConv(8, 4).double(), xs)
    with pytest.raises(ValueError, match="sparse COO"):
        sparse_apply(nn.Linear(8, 4), bag_of_words(10, 8).float())


def test_sparse_rows_cache_follows_the_tensor_and_its_edits():
    import copy
    import pickle

    from dgl_rbgt.nn.sparse_features import SparseRows

    rows = SparseRows()
    feat = bag_of_words(6, 5)
    first = rows(feat)
    assert rows(feat) is first  # the same tensor, unmodified
    assert rows(feat.clone()) is not first  # an equal but different tensor
    again = rows(feat)
    feat[0, 0] = 7.0  # an in-place edit
    edited = rows(feat)
    assert edited is not again and edited.to_dense().equal(feat)
    del feat  # a dead tensor is never matched, whatever lands at its address
    other = bag_of_words(6, 5, seed=1)
    assert rows(other).to_dense().equal(other)
    for clone in (copy.deepcopy(rows), pickle.loads(pickle.dumps(rows))):
        assert clone._rows is None


def test_leading_rows_are_the_first_rows():
    from dgl_rbgt.nn.sparse_features import leading_rows

    x = bag_of_words(9, 6, density=0.4)
    xs = sparse_rows(x)
    assert leading_rows(xs, 9) is xs
    for n in (0, 1, 4):
        assert leading_rows(xs, n).to_dense().equal(x[:n])
    with pytest.raises(ValueError, match=r"n must be in \[0, 9\]"):
        leading_rows(xs, 10)


def test_bad_rows_are_named():
    from dgl_rbgt.nn.sparse_features import leading_rows

    with pytest.raises(ValueError, match="feat must be a 2-D dense tensor"):
        sparse_rows(torch.ones(3))
    with pytest.raises(ValueError, match="feat must be a 2-D dense tensor"):
        sparse_rows(sparse_rows(torch.eye(2)))
    with pytest.raises(ValueError, match="xs must be a 2-D sparse COO tensor"):
        dropout_values(torch.eye(2), nn.Dropout(0.5))
    with pytest.raises(ValueError, match="xs must be a 2-D sparse COO tensor"):
        leading_rows([[1.0]], 1)
