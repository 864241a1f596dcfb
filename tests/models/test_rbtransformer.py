"""RBTransformer: shapes, training signal, equivalences between attention choices, signature."""
import inspect
import typing

import dgl
import pytest
import torch
from dgl.base import DGLError

from dgl_rbgt.models.rbtransformer import RBTransformer
from dgl_rbgt.nn.full_attention import FullAttentionConv
from dgl_rbgt.nn.linear_attention import SGFormerAttention
from dgl_rbgt.nn.rba import RBAConv


def toy_graph(n=60, classes=3, feats=8):
    """Labels from a planted feature direction, edges mostly inside classes."""
    labels = torch.randint(0, classes, (n,))
    centers = torch.randn(classes, feats) * 2
    feat = centers[labels] + torch.randn(n, feats)
    src = torch.randint(0, n, (4 * n,))
    dst = torch.randint(0, n, (4 * n,))
    keep = labels[src] == labels[dst]
    g = dgl.to_bidirected(dgl.graph((src[keep], dst[keep]), num_nodes=n))
    return g, feat, labels


@pytest.mark.parametrize("attention,cls", [("rba", RBAConv), ("sgformer", SGFormerAttention),
                                           ("full", FullAttentionConv), ("none", None)])
def test_shapes_and_layers(attention, cls):
    g, feat, _ = toy_graph()
    model = RBTransformer(8, 3, hidden=16, num_heads=2, layers=2, group_size=16, attention=attention)
    assert model(g, feat).shape == (60, 3)
    assert len(model.attns) == (0 if cls is None else 2)
    assert all(type(a) is cls for a in model.attns)
    bg = dgl.batch([g, dgl.rand_graph(7, 10)])
    assert model.eval()(bg, torch.randn(67, 8)).shape == (67, 3)


def test_training_reduces_loss():
    g, feat, labels = toy_graph()
    model = RBTransformer(8, 3, hidden=16, group_size=16, dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(g, feat), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_full_equals_rba_with_large_groups():
    g, feat, _ = toy_graph(n=40)
    kw = dict(hidden=8, num_heads=2, layers=2, dropout=0.0)
    rba = RBTransformer(8, 3, group_size=64, attention="rba", **kw).double()
    full = RBTransformer(8, 3, attention="full", **kw).double()
    full.load_state_dict(rba.state_dict())
    feat = feat.double()
    for train in (False, True):  # evaluation, and training with a random permutation
        rba.train(train)
        full.train(train)
        assert torch.allclose(rba(g, feat), full(g, feat), rtol=0, atol=1e-10)


def test_node_batch_subgraph_and_branch_weights():
    g, feat, _ = toy_graph()
    nodes = torch.randperm(60)[:20]
    sub = dgl.node_subgraph(g, nodes)  # may contain isolated nodes
    model = RBTransformer(8, 3, hidden=8, group_size=8)
    out = model(sub, feat[nodes])
    assert out.shape == (20, 3) and torch.isfinite(out).all()
    only_trans = RBTransformer(8, 3, hidden=8, gnn_layers=0).eval()
    assert len(only_trans.gcns) == 0 and only_trans(g, feat).shape == (60, 3)
    only_gnn = RBTransformer(8, 3, hidden=8, gnn_weight=1.0, dropout=0.0).eval()
    a = only_gnn(g, feat)
    with torch.no_grad():  # the transformer branch has no effect at w = 1
        only_gnn.fc_in.weight.add_(1.0)
    assert torch.allclose(a, only_gnn(g, feat))


def test_reset_parameters_keeps_layer_init():
    model = RBTransformer(8, 3, hidden=8)
    model.reset_parameters()
    assert torch.all(model.attns[0].fc_q.bias == 0)  # RBAConv's own init, not nn.Linear's


def test_signature_is_schema_ready():
    sig = inspect.signature(RBTransformer.__init__)
    hints = typing.get_type_hints(RBTransformer.__init__)
    keyword = [p for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert keyword and all(p.name in hints and p.default is not p.empty for p in keyword)
    assert typing.get_args(hints["attention"]) == ("rba", "sgformer", "full", "none")
    assert RBTransformer.batching == ("full", "node_batch")


def test_errors():
    with pytest.raises(ValueError, match="attention must be one of"):
        RBTransformer(8, 3, attention="linear")
    with pytest.raises(ValueError, match=r"gnn_weight must be in \[0, 1\]"):
        RBTransformer(8, 3, gnn_weight=1.5)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        RBTransformer(8, 3, group_size=0)
    with pytest.raises(ValueError, match="eval_mode must be one of"):
        RBTransformer(8, 3, eval_mode="best")
    model = RBTransformer(8, 3, hidden=8)
    g = dgl.rand_graph(10, 20)
    with pytest.raises(DGLError, match="graph is a block"):
        model(dgl.to_block(g), torch.randn(10, 8))
    with pytest.raises(ValueError, match="feat must have last dimension 8"):
        model(g, torch.randn(10, 7))
    with pytest.raises(ValueError, match="feat contains NaN or Inf"):
        model(g, torch.full((10, 8), float("nan")))


def test_gnn_dropout_options():
    g, feat, _ = toy_graph()
    model = RBTransformer(8, 3, hidden=8, gnn_weight=1.0, dropout=0.0, gnn_dropout=0.0,
                          gnn_input_dropout=True)
    assert model.gnn_dropout.p == 0.0 and model.dropout.p == 0.0
    model.train()
    a = model(g, feat)
    assert torch.allclose(a, model(g, feat))  # rate 0: training mode is deterministic
    # dropout=0.9 applies to the transformer branch only, which has no effect at w = 1
    model.dropout.p = 0.9
    assert torch.allclose(a, model(g, feat))
    assert RBTransformer(8, 3, dropout=0.3).gnn_dropout.p == 0.3  # None: follows dropout
    # one GraphConv and no hidden dropout: the input dropout is the branch's only randomness
    kw = dict(hidden=8, gnn_weight=1.0, gnn_dropout=0.5, gnn_layers=1)
    keep = RBTransformer(8, 3, gnn_input_dropout=False, **kw).train()
    assert torch.allclose(keep(g, feat), keep(g, feat))
    drop_in = RBTransformer(8, 3, gnn_input_dropout=True, **kw).train()
    assert not torch.allclose(drop_in(g, feat), drop_in(g, feat))
    drop_in.eval()
    assert torch.allclose(drop_in(g, feat), drop_in(g, feat))
    with pytest.raises(ValueError, match="gnn_dropout"):
        RBTransformer(8, 3, gnn_dropout=1.5)
