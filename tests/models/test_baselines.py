"""GCN, SAGE and GAT: defaults are the classic models, options are tunedGNN's."""
import math

import dgl
import pytest
import torch
import torch.nn.functional as F
from dgl.nn import GATConv, GraphConv, SAGEConv

from dgl_rbgt.models import GAT, GCN, SAGE
from dgl_rbgt.models.baselines import local_conv, norm_layer, residual_map


def graph_and_feat(n=40, edges=120, feats=6, dtype=torch.float32):
    return dgl.rand_graph(n, edges), torch.randn(n, feats, dtype=dtype)


def test_default_gcn_is_the_classic_gcn():
    """Same seed, same weights and same dropout draws as the GCN written out of GraphConv layers."""
    g, x = graph_and_feat()
    torch.manual_seed(0)
    model = GCN(6, 3, hidden=16, layers=3)
    torch.manual_seed(0)
    convs = [GraphConv(a, b, allow_zero_in_degree=True) for a, b in ((6, 16), (16, 16), (16, 3))]
    assert set(model.state_dict()) == {f"convs.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    gl = dgl.add_self_loop(dgl.remove_self_loop(g))

    def reference():
        h = x
        for i, conv in enumerate(convs):
            h = conv(gl, F.dropout(h, 0.5, training=True))
            h = torch.relu(h) if i < 2 else h
        return h

    torch.manual_seed(1)
    out = model(g, x)  # training mode: dropout on
    torch.manual_seed(1)
    assert torch.equal(out, reference())


def test_default_gat_is_the_classic_gat():
    g, x = graph_and_feat()
    torch.manual_seed(0)
    model = GAT(6, 3, hidden=4, num_heads=2)
    torch.manual_seed(0)
    convs = [GATConv(6, 4, 2, feat_drop=0.6, attn_drop=0.6, activation=F.elu, allow_zero_in_degree=True),
             GATConv(8, 3, 2, feat_drop=0.6, attn_drop=0.6, allow_zero_in_degree=True)]
    assert set(model.state_dict()) == {k for i, c in enumerate(convs) for k in (f"convs.{i}.{p}" for p in c.state_dict())}
    gl = dgl.add_self_loop(dgl.remove_self_loop(g))
    torch.manual_seed(1)
    out = model(g, x)
    torch.manual_seed(1)
    expected = convs[1](gl, convs[0](gl, x).flatten(1)).mean(1)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("cls", [GCN, SAGE, GAT])
@pytest.mark.parametrize("options", [
    {},
    {"residual": "identity"},
    {"norm": "batch"},
    {"norm": "layer", "residual": "identity", "head": "linear"},
    {"residual": "identity", "norm": "layer", "jk": True, "head": "linear", "input_dropout": False},
])
def test_options_run_and_train(cls, options):
    g, x = graph_and_feat()
    model = cls(6, 3, hidden=8, layers=3, **options)
    out = model(g, x)
    assert out.shape == (40, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_tuned_gcn_equals_its_formula_float64():
    """Two residual hidden layers with LayerNorm, jumping knowledge and a linear head, no dropout."""
    g, x = graph_and_feat(dtype=torch.float64)
    model = GCN(6, 3, hidden=8, layers=2, dropout=0.0, residual="identity", norm="layer", jk=True,
                head="linear").double()
    sd = model.state_dict()
    gl = dgl.add_self_loop(dgl.remove_self_loop(g))
    conv = GraphConv(6, 8, allow_zero_in_degree=True).double()

    def layer(i, h, res):
        conv.weight.data, conv.bias.data = sd[f"convs.{i}.weight"], sd[f"convs.{i}.bias"]
        z = conv(gl, h) + res
        return torch.relu(F.layer_norm(z, (8,), sd[f"norms.{i}.weight"], sd[f"norms.{i}.bias"]))

    h1 = layer(0, x, x @ sd["residuals.0.weight"].T)  # widths 6 -> 8: a linear residual
    h2 = layer(1, h1, h1)  # widths agree: identity
    expected = F.linear(h1 + h2, sd["head.weight"], sd["head.bias"])
    torch.testing.assert_close(model(g, x), expected, rtol=1e-12, atol=1e-12)


def test_linear_residual_equals_tunedgnn_formula_float64():
    """residual="linear": conv(h) + W h + b in every hidden layer (tunedGNN), batch norm, linear head."""
    g, x = graph_and_feat(dtype=torch.float64)
    model = SAGE(6, 3, hidden=8, layers=2, dropout=0.0, residual="linear", norm="batch", head="linear").double()
    for p in model.parameters():  # non-trivial norm and bias values
        torch.nn.init.normal_(p)
    model.eval()
    sd = model.state_dict()
    def layer(i, h):
        conv = SAGEConv(h.shape[1], 8, "mean").double()
        conv.load_state_dict({k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith(f"convs.{i}.")})
        z = conv(g, h) + F.linear(h, sd[f"residuals.{i}.weight"], sd[f"residuals.{i}.bias"])
        z = F.batch_norm(z, sd[f"norms.{i}.running_mean"], sd[f"norms.{i}.running_var"],
                         sd[f"norms.{i}.weight"], sd[f"norms.{i}.bias"])
        return torch.relu(z)

    h2 = layer(1, layer(0, x))
    expected = F.linear(h2, sd["head.weight"], sd["head.bias"])
    assert all(isinstance(r, torch.nn.Linear) and r.bias is not None for r in model.residuals)
    torch.testing.assert_close(model(g, x), expected, rtol=1e-12, atol=1e-12)


def test_tuned_gat_equals_tunedgnn_formula_float64():
    """tunedGNN's GAT: one head, relu(LN(gat(h) + W h + b)) in every hidden layer, a linear head."""
    g, x = graph_and_feat(dtype=torch.float64)
    model = GAT(6, 3, hidden=8, num_heads=1, layers=2, dropout=0.0, attn_dropout=0.0, residual="linear",
                norm="layer", head="linear", input_dropout=False, activation="relu").double()
    for p in model.parameters():  # non-trivial attention, norm and bias values
        torch.nn.init.normal_(p, std=0.5)
    sd = model.state_dict()
    gl = dgl.add_self_loop(dgl.remove_self_loop(g))

    def layer(i, h):
        conv = GATConv(h.shape[1], 8, 1, allow_zero_in_degree=True).double()
        conv.load_state_dict({k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith(f"convs.{i}.")})
        z = conv(gl, h).flatten(1) + F.linear(h, sd[f"residuals.{i}.weight"], sd[f"residuals.{i}.bias"])
        return torch.relu(F.layer_norm(z, (8,), sd[f"norms.{i}.weight"], sd[f"norms.{i}.bias"]))

    expected = F.linear(layer(1, layer(0, x)), sd["head.weight"], sd["head.bias"])
    out = model(g, x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    elu = GAT(6, 3, hidden=8, num_heads=1, layers=2, dropout=0.0, attn_dropout=0.0, residual="linear",
              norm="layer", head="linear", input_dropout=False).double()
    elu.load_state_dict(sd)
    assert not torch.allclose(elu(g, x), out)  # the activation is really switched


def test_blocks_give_the_full_graph_output_with_residual_and_jk():
    """Full-neighbour blocks reproduce the full-graph logits of the output nodes (the residual
    and jumping-knowledge rows follow the blocks' destination nodes)."""
    g, x = graph_and_feat(60, 200)
    model = SAGE(6, 3, hidden=8, layers=2, residual="identity", norm="layer", jk=True, head="linear").eval()
    seeds = torch.tensor([3, 10, 11, 42])
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(2)
    input_nodes, output_nodes, blocks = sampler.sample_blocks(g, seeds)
    out = model(blocks, x[input_nodes])
    torch.testing.assert_close(out, model(g, x)[output_nodes], rtol=1e-5, atol=1e-5)


def test_shared_builders():
    g, x = graph_and_feat()
    assert isinstance(local_conv("gcn", 6, 4), GraphConv) and isinstance(local_conv("sage", 6, 4), SAGEConv)
    assert local_conv("gat", 6, 4, num_heads=3)(g, x).shape == (40, 3, 4)
    assert isinstance(norm_layer("batch", 4), torch.nn.BatchNorm1d) and isinstance(norm_layer("none", 4), torch.nn.Identity)
    assert isinstance(residual_map(4, 4), torch.nn.Identity) and residual_map(4, 5).bias is None
    assert residual_map(4, 4, "linear").bias is not None


@pytest.mark.parametrize("cls, kwargs, message", [
    (GCN, {"jk": True}, r"jk=True needs head='linear'"),
    (GCN, {"norm": "group"}, r"norm must be one of \['none', 'batch', 'layer'\], got 'group'"),
    (SAGE, {"head": "mlp"}, r"head must be one of \['conv', 'linear'\]"),
    (GCN, {"residual": True}, r"residual must be one of \['none', 'identity', 'linear'\], got True"),
    (GAT, {"num_heads": 0}, r"num_heads must be >= 1, got 0"),
    (GAT, {"activation": "tanh"}, r"activation must be one of \['elu', 'relu'\], got 'tanh'"),
    (SAGE, {"layers": 0}, r"layers must be >= 1, got 0"),
])
def test_bad_arguments_name_the_argument(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(6, 3, **kwargs)


def test_wrong_number_of_blocks():
    g, x = graph_and_feat()
    blocks = dgl.dataloading.MultiLayerFullNeighborSampler(1).sample_blocks(g, torch.arange(5))[2]
    with pytest.raises(ValueError, match=r"got 1 blocks for a model with 2 layers"):
        GCN(6, 3)(blocks, x)


@pytest.mark.parametrize("cls, kwargs", [
    (GCN, {}),  # the first convolution is the last: straight to the classes
    (GCN, {"layers": 1}),
    (GCN, {"layers": 3, "residual": "linear", "norm": "layer", "jk": True, "head": "linear"}),
    (SAGE, {"residual": "identity", "norm": "batch"}),  # a bias-free map from the 30 columns
    (SAGE, {"layers": 2, "residual": "linear", "norm": "layer", "head": "linear", "input_dropout": False}),
    (GAT, {"num_heads": 2, "attn_dropout": 0.0}),
    (GAT, {"num_heads": 1, "layers": 2, "residual": "linear", "norm": "layer", "head": "linear",
           "activation": "relu", "attn_dropout": 0.0, "input_dropout": False}),
])
def test_sparse_features_same_function_float64(cls, kwargs):
    """The first layer from sparse rows gives the dense model's logits and gradients, on the full
    graph and on blocks; in training, dropout still acts on the raw features."""
    g, _ = graph_and_feat(60, 200)
    gen = torch.Generator().manual_seed(3)
    x = ((torch.rand(60, 30, generator=gen) < 0.1) * torch.rand(60, 30, generator=gen)).double()
    dense = cls(30, 3, hidden=8, **kwargs).double()
    sparse = cls(30, 3, hidden=8, sparse_features=True, **kwargs).double()
    sparse.load_state_dict(dense.state_dict())
    dense.eval(), sparse.eval()
    torch.testing.assert_close(sparse(g, x), dense(g, x), rtol=0, atol=1e-12)
    labels = torch.arange(60) % 3
    for model in (dense, sparse):
        F.cross_entropy(model(g, x), labels).backward()
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12, msg=name)
    layers = len(dense.convs)
    _, _, blocks = dgl.dataloading.MultiLayerFullNeighborSampler(layers).sample_blocks(
        dgl.add_self_loop(dgl.remove_self_loop(g)) if dense.self_loops else g, torch.tensor([0, 7, 33]))
    inputs = x[blocks[0].srcdata[dgl.NID]]
    torch.testing.assert_close(sparse(blocks, inputs), dense(blocks, inputs), rtol=0, atol=1e-12)
    if sparse.input_dropout:
        sparse.train()
        assert not torch.allclose(sparse(g, x), sparse(g, x))


def test_pyg_initialisation_draws_pygs_distributions():
    # PyG's GATConv: glorot-uniform projection and attention vectors; DGL's projection is
    # Glorot-normal with the ReLU gain, sqrt(2) wider. PyG's SAGEConv: torch-default Linear maps.
    torch.manual_seed(0)
    gat = local_conv("gat", 600, 200, num_heads=2, init="pyg")
    bound = math.sqrt(6 / (600 + 400))
    assert gat.fc.weight.abs().max() <= bound
    assert gat.fc.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert gat.attn_l.abs().max() <= math.sqrt(6 / (2 + 200))
    assert gat.attn_r.std().item() == pytest.approx(math.sqrt(6 / 202) / math.sqrt(3), rel=0.1)
    torch.manual_seed(0)
    dgl_gat = local_conv("gat", 600, 200, num_heads=2)
    assert dgl_gat.fc.weight.std().item() == pytest.approx(math.sqrt(2) * bound / math.sqrt(3), rel=0.02)

    sage = local_conv("sage", 400, 300, init="pyg")
    for w in (sage.fc_neigh.weight, sage.fc_self.weight):
        assert w.abs().max() <= 1 / math.sqrt(400)
        assert w.std().item() == pytest.approx(1 / math.sqrt(3 * 400), rel=0.02)
    bias = sage.fc_self.bias
    assert bias.abs().max() <= 1 / math.sqrt(400) and bias.std().item() > 0.5 / math.sqrt(3 * 400)

    torch.manual_seed(3)
    gcn_pyg = GCN(6, 3, init="pyg").state_dict()
    torch.manual_seed(3)
    gcn_dgl = GCN(6, 3).state_dict()
    assert all(torch.equal(gcn_pyg[k], gcn_dgl[k]) for k in gcn_dgl)  # GCNConv draws as GraphConv


@pytest.mark.parametrize("cls", [GCN, SAGE, GAT])
def test_init_reaches_every_convolution_and_is_checked(cls):
    torch.manual_seed(0)
    model = cls(500, 3, hidden=64, layers=3, head="linear", residual="linear", init="pyg")
    if cls is SAGE:
        assert all(c.fc_neigh.weight.abs().max() <= 1 / math.sqrt(c.fc_neigh.weight.shape[1]) for c in model.convs)
    if cls is GAT:
        assert all(c.fc.weight.abs().max() <= math.sqrt(6 / sum(c.fc.weight.shape)) for c in model.convs)
    with pytest.raises(ValueError, match=r"init must be one of \['dgl', 'pyg'\], got 'torch'"):
        cls(6, 3, init="torch")


def test_gps_local_init_reaches_its_local_convolutions():
    from dgl_rbgt.models import GPSTransformer
    torch.manual_seed(0)
    model = GPSTransformer(300, 3, hidden=64, layers=2, local="sage", attention="none", local_init="pyg")
    assert all(c.fc_neigh.weight.abs().max() <= 1 / math.sqrt(64) for c in model.locals)
    torch.manual_seed(0)
    model = GPSTransformer(300, 3, hidden=64, layers=2, local="sage", attention="none")
    assert any(c.fc_neigh.weight.abs().max() > 1 / math.sqrt(64) for c in model.locals)
    with pytest.raises(ValueError, match=r"local_init must be one of \['dgl', 'pyg'\], got 'torch'"):
        GPSTransformer(300, 3, local_init="torch")
