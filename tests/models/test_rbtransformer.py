"""RBTransformer: shapes, training signal, equivalences between attention choices, signature."""
import inspect
import typing

import dgl
import pytest
import torch
from dgl.base import DGLError

from dgl_rbgt.models.rbtransformer import RBTransformer
from dgl_rbgt.nn import FullAttentionConv, RBAConv, SGFormerAttention


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
    assert typing.get_args(hints["attention"]) == ("rba", "sgformer", "full", "memory", "none")
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


def test_param_groups_split_branches():
    model = RBTransformer(8, 3, hidden=8, group_size=8, trans_weight_decay=0.01)
    trans, rest = model.param_groups(5e-4)
    assert (trans["weight_decay"], rest["weight_decay"]) == (0.01, 5e-4)
    ids = [id(p) for p in trans["params"]] + [id(p) for p in rest["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # a partition
    assert id(model.fc_in.weight) in {id(p) for p in trans["params"]}  # SGFormer: input fc is the transformer's
    assert id(model.fc_out.weight) in {id(p) for p in rest["params"]}
    assert {id(p) for p in model.gcns.parameters()} <= {id(p) for p in rest["params"]}
    same = RBTransformer(8, 3, hidden=8, group_size=8).param_groups(0.1)
    assert [g["weight_decay"] for g in same] == [0.1, 0.1]
    torch.optim.Adam(model.param_groups(5e-4), lr=0.01)  # valid torch param groups
    with pytest.raises(ValueError, match="trans_weight_decay"):
        RBTransformer(8, 3, trans_weight_decay=-1.0)
    with pytest.raises(TypeError, match="trans_weight_decay must be a float"):
        RBTransformer(8, 3, trans_weight_decay="1e-4")


@pytest.mark.parametrize("optimizer,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_trainer_uses_param_groups(optimizer, cls):
    from dgl_rbgt.config import TrainSection
    from dgl_rbgt.batching import FullGraph
    from dgl_rbgt.train.loop import Trainer
    from dgl_rbgt.train.metrics import get_metric

    g, feat, labels = toy_graph()
    g.ndata["feat"] = feat
    model = RBTransformer(8, 3, hidden=8, group_size=8, trans_weight_decay=0.01)
    ids = torch.arange(60)
    trainer = Trainer(model, FullGraph(g), labels, {"train": ids[:30], "val": ids[30:45], "test": ids[45:]},
                      get_metric("accuracy"), TrainSection(epochs=2, weight_decay=5e-4, optimizer=optimizer),
                      progress=False)
    assert type(trainer.optimizer) is cls
    assert [grp["weight_decay"] for grp in trainer.optimizer.param_groups] == [0.01, 5e-4]
    assert trainer.fit().summary["epochs_run"] == 2


def test_use_act_relu_after_attention():
    g, feat, _ = toy_graph()
    kw = dict(hidden=8, group_size=8, gnn_layers=0, dropout=0.0, use_ln=False, attention="sgformer")
    plain = RBTransformer(8, 3, **kw).eval()
    act = RBTransformer(8, 3, use_act=True, **kw).eval()
    act.load_state_dict(plain.state_dict())
    x = plain._transformer(g, feat)
    assert bool((x < 0).any())  # without the activation the branch output can be negative
    assert torch.allclose(act._transformer(g, feat), torch.relu(x))


@pytest.mark.parametrize("attention", ["rba", "sgformer"])
def test_sparse_features_same_function(attention):
    g, feat, labels = toy_graph()
    feat = feat * (torch.rand_like(feat) < 0.3)  # mostly zeros, as bag-of-words
    kw = dict(hidden=8, group_size=16, gnn_layers=2, attention=attention, gnn_input_dropout=True)
    dense = RBTransformer(8, 3, **kw)
    sparse = RBTransformer(8, 3, sparse_features=True, **kw)
    sparse.load_state_dict(dense.state_dict())
    for model in (dense, sparse):
        model.eval()
    assert torch.allclose(dense(g, feat), sparse(g, feat), atol=1e-5)
    grads = []
    for model in (dense, sparse):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(g, feat), labels).backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))
    sparse.train()  # dropout on the non-zero entries: runs, and differs between calls
    assert not torch.allclose(sparse(g, feat), sparse(g, feat))
    sparse.load_state_dict(dense.state_dict())  # undo the BatchNorm statistics of those calls
    sub = dgl.node_subgraph(g, torch.arange(20))  # isolated nodes: degrees clamp to 1 as GraphConv
    assert torch.allclose(dense.eval()(sub, feat[:20]), sparse.eval()(sub, feat[:20]), atol=1e-5)


@pytest.mark.parametrize("attention", ["rba", "sgformer", "full"])
def test_attn_gate_starts_closed_and_learns(attention):
    g, feat, labels = toy_graph()
    kw = dict(hidden=8, num_heads=2, layers=2, group_size=16, attention=attention, dropout=0.0)
    gated = RBTransformer(8, 3, attn_gate=True, **kw)
    ref = RBTransformer(8, 3, **kw)
    ref.load_state_dict(gated.state_dict(), strict=False)  # everything but the gates
    assert gated.attn_gates.shape == (2,) and not gated.attn_gates.any()
    # Closed gates: the attention layers' weights do not matter, the branch is ((0 + x) / 2).
    before = gated.eval()(g, feat)
    with torch.no_grad():
        for attn in gated.attns:
            attn.fc_v.weight.mul_(10.0).add_(1.0)
    assert torch.equal(gated(g, feat), before)
    assert not torch.allclose(ref.eval()(g, feat), before)  # the ungated model does depend on them
    # The gates get a gradient, so training can open them.
    gated.train()
    torch.nn.functional.cross_entropy(gated(g, feat), labels).backward()
    assert bool((gated.attn_gates.grad != 0).all())
    trans, _ = gated.param_groups(0.0)
    assert id(gated.attn_gates) in {id(p) for p in trans["params"]}
    # Open gates of 1 give back the ungated model.
    with torch.no_grad():
        gated.attn_gates.fill_(1.0)
    ref.load_state_dict(gated.state_dict(), strict=False)
    assert torch.allclose(gated.eval()(g, feat), ref.eval()(g, feat), atol=1e-6)
    assert RBTransformer(8, 3, attention="none", attn_gate=True).attn_gates is None


def test_sgformer_global_term_weighs_one_over_n():
    """SGFormer's attention returns each node's own value up to O(1/N), for any weights."""
    torch.manual_seed(0)
    for n in (100, 1000, 10000):
        conv = SGFormerAttention(16, 16, num_heads=1, mean_heads=False)
        x = torch.randn(n, 16)
        v = conv.fc_v(x).view(n, 1, 16)
        rel = float((conv(dgl.rand_graph(n, 0), x) - v).norm() / v.norm())
        assert rel < 1.0 / n, (n, rel)  # measured: about 0.1 / n


def test_memory_attention_trains_in_both_models():
    """``attention: memory`` (recurrent memory over segments of group_size nodes) in RBTransformer
    and in the GPS backbone: one step of each, finite, and seeded evaluation repeats."""
    import dgl

    from dgl_rbgt.models import GPSTransformer
    from dgl_rbgt.nn import MemoryTransformer

    g = dgl.add_self_loop(dgl.rand_graph(60, 240))
    x = torch.randn(60, 7)
    for model in (RBTransformer(7, 3, hidden=16, attention="memory", group_size=16, memory_tokens=4),
                  GPSTransformer(7, 3, hidden=16, num_heads=2, attention="memory", group_size=16, memory_tokens=4)):
        assert any(isinstance(m, MemoryTransformer) for m in model.modules())
        loss = model(g, x).logsumexp(1).mean()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.eval()
        assert torch.equal(model(g, x), model(g, x))
    with pytest.raises(ValueError, match="eval_mode 'full' is exact attention"):
        RBTransformer(7, 3, hidden=16, attention="memory", eval_mode="full")
