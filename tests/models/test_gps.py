"""GPSTransformer and the global-attention factory it shares with RBTransformer."""
import dgl
import pytest
import torch
import torch.nn.functional as F
from dgl.nn import GraphConv

from dgl_rbgt.config import parse_recipe
from dgl_rbgt.models import GPSTransformer, RBTransformer
from dgl_rbgt.models.baselines import LOCAL_CONVS
from dgl_rbgt.models.global_attention import ATTENTIONS, attend, global_attention


def graph_and_feat(n=30, edges=90, feats=6, dtype=torch.float32):
    return dgl.rand_graph(n, edges), torch.randn(n, feats, dtype=dtype)


@pytest.mark.parametrize("local", LOCAL_CONVS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_local_and_attention_combination_trains(local, attention):
    g, x = graph_and_feat()
    model = GPSTransformer(6, 3, hidden=8, layers=2, local=local, attention=attention, num_heads=2, group_size=8)
    out = model(g, x)
    assert out.shape == (30, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    assert torch.equal(model(g, x), model(g, x))  # evaluation repeats (RBA's fixed grouping)


def test_attention_none_has_no_attention_parameters():
    names = [n for n, _ in GPSTransformer(6, 3, hidden=8, attention="none").named_parameters()]
    assert not any(n.startswith(("attns", "attn_outs", "attn_norms")) for n in names)
    assert any(n.startswith("attns") for n, _ in GPSTransformer(6, 3, hidden=8, num_heads=2).named_parameters())


@pytest.mark.parametrize("ego", [False, True])
def test_one_layer_without_attention_equals_a_plain_composition_float64(ego):
    """attention='none', one layer: Linear -> x + relu(GraphConv [+ ego Linear]) -> LN -> FFN residual
    -> LN -> Linear."""
    g, x = graph_and_feat(dtype=torch.float64)
    model = GPSTransformer(6, 3, hidden=8, layers=1, local="gcn", attention="none", norm="layer",
                           dropout=0.3, ego=ego).double().eval()
    sd = model.state_dict()
    assert ("egos.0.weight" in sd) == ego
    conv = GraphConv(8, 8, allow_zero_in_degree=True).double()
    conv.load_state_dict({"weight": sd["locals.0.weight"], "bias": sd["locals.0.bias"]})
    gl = dgl.add_self_loop(dgl.remove_self_loop(g))
    h = F.linear(x, sd["fc_in.weight"], sd["fc_in.bias"])
    m = conv(gl, h) + (F.linear(h, sd["egos.0.weight"], sd["egos.0.bias"]) if ego else 0)
    u = F.layer_norm(h + torch.relu(m), (8,), sd["local_norms.0.weight"], sd["local_norms.0.bias"])
    f = F.linear(torch.relu(F.linear(u, sd["ffns.0.0.weight"], sd["ffns.0.0.bias"])),
                 sd["ffns.0.3.weight"], sd["ffns.0.3.bias"])
    u = F.layer_norm(u + f, (8,), sd["ffn_norms.0.weight"], sd["ffn_norms.0.bias"])
    expected = F.linear(u, sd["fc_out.weight"], sd["fc_out.bias"])
    torch.testing.assert_close(model(g, x), expected, rtol=1e-12, atol=1e-12)


def test_attention_every_k_layers():
    """attention_every=2 of 4 layers: attention in layers 2 and 4 only; with attention_every larger
    than the depth no layer attends and the model is the local-only one."""
    assert set(GPSTransformer(6, 3, hidden=8, layers=4, num_heads=2, attention_every=2).attns) == {"1", "3"}
    g, x = graph_and_feat(dtype=torch.float64)
    sparse = GPSTransformer(6, 3, hidden=8, layers=2, num_heads=2, attention_every=3, norm="layer").double().eval()
    local = GPSTransformer(6, 3, hidden=8, layers=2, attention="none", norm="layer").double().eval()
    assert not len(sparse.attns)
    local.load_state_dict(sparse.state_dict())
    torch.testing.assert_close(sparse(g, x), local(g, x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="attention_every must be >= 1, got 0"):
        GPSTransformer(6, 3, attention_every=0)


def test_rba_with_groups_larger_than_the_graph_is_full_attention():
    """The factory passes the same options to both kinds: RBA with p >= N gives exact attention."""
    g, x = graph_and_feat(dtype=torch.float64)
    rba = GPSTransformer(6, 3, hidden=8, num_heads=2, attention="rba", group_size=64, norm="layer").double().eval()
    full = GPSTransformer(6, 3, hidden=8, num_heads=2, attention="full", norm="layer").double().eval()
    full.load_state_dict(rba.state_dict())
    torch.testing.assert_close(rba(g, x), full(g, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attention", ["rba", "full", "sgformer"])
def test_attention_stays_inside_each_graph_of_a_batch(attention):
    g1, x1 = graph_and_feat(20, 60)
    g2, x2 = graph_and_feat(12, 30)
    model = GPSTransformer(6, 3, hidden=8, num_heads=2, attention=attention, group_size=64, norm="layer").eval()
    out = model(dgl.batch([g1, g2]), torch.cat([x1, x2]))
    torch.testing.assert_close(out[:20], model(g1, x1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[20:], model(g2, x2), rtol=1e-5, atol=1e-5)


def test_node_batch_subgraph_with_isolated_nodes():
    g, x = graph_and_feat(60, 60)
    sub = dgl.node_subgraph(g, torch.randperm(60)[:25])
    for local in LOCAL_CONVS:
        model = GPSTransformer(6, 3, hidden=8, num_heads=2, local=local, group_size=8)
        out = model(sub, x[sub.ndata[dgl.NID]])
        assert out.shape == (25, 3) and torch.isfinite(out).all()


def test_reset_parameters_restores_the_initial_distribution():
    model = GPSTransformer(6, 3, hidden=8, num_heads=2, local="gat")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_parameters()
    after = model.state_dict()
    assert not torch.equal(before["attns.0.fc_q.weight"], after["attns.0.fc_q.weight"])
    assert torch.equal(after["local_norms.0.weight"], torch.ones(8))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"local": "gin"}, ValueError, r"local must be one of \['gcn', 'sage', 'gat'\], got 'gin'"),
    ({"attention": "linear"}, ValueError, r"attention must be one of \['rba', 'sgformer', 'full', 'memory', 'none'\]"),
    ({"norm": "group"}, ValueError, r"norm must be one of \['none', 'batch', 'layer'\]"),
    ({"hidden": 10, "num_heads": 4}, ValueError, r"num_heads must divide hidden .* num_heads=4 and hidden=10"),
    ({"hidden": 10, "num_heads": 4, "local": "gat", "attention": "none"}, ValueError, r"local='gat'"),
    ({"dropout": 1.5}, ValueError, r"dropout must be in \[0, 1\), got 1.5"),
    ({"layers": 0}, ValueError, r"layers must be >= 1, got 0"),
    ({"group_size": 2.5}, TypeError, r"group_size must be an int"),
    ({"eval_mode": "best"}, ValueError, r"eval_mode must be one of"),
])
def test_bad_arguments_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        GPSTransformer(6, 3, **kwargs)


def test_bad_inputs():
    model = GPSTransformer(6, 3, hidden=8, num_heads=2)
    g, x = graph_and_feat()
    with pytest.raises(ValueError, match=r"feat must have last dimension 6"):
        model(g, torch.randn(30, 5))
    with pytest.raises(dgl.DGLError, match=r"graph is a block"):
        model(dgl.to_block(g), x)


def test_recipe_schema_and_context_hops():
    recipe = parse_recipe({"name": "t", "dataset": {"name": "csbm"},
                           "model": {"name": "gps", "layers": 3, "local": "sage", "attention": "sgformer"}})
    assert recipe.model.norm == "batch" and GPSTransformer.context_hops(recipe.model) == 3
    with pytest.raises(Exception, match=r"model\.local"):
        parse_recipe({"name": "t", "dataset": {"name": "csbm"}, "model": {"name": "gps", "local": "gin"}})


def test_factory_builds_every_kind_and_merges_heads():
    g, x = graph_and_feat(feats=8)
    for kind in ATTENTIONS:
        mean = global_attention(kind, 8, num_heads=2, merge="mean", group_size=8)
        concat = global_attention(kind, 8, num_heads=2, merge="concat", group_size=8)
        if kind == "none":
            assert mean is None and concat is None
            continue
        assert attend(mean, g, x, merge="mean").shape == (30, 8)
        assert attend(concat, g, x, merge="concat").shape == (30, 8)
        if kind != "memory":  # the memory layer splits hidden over its heads in either merge
            assert concat.fc_q.weight.shape == (8, 8) and mean.fc_q.weight.shape == (16, 8)  # heads x head width


def test_memory_passes_reach_the_memory_layer_and_the_recipe():
    for passes in (1, 2):
        assert global_attention("memory", 8, num_heads=2, group_size=4, memory_passes=passes).passes == passes
        recipe = parse_recipe({"name": "t", "dataset": {"name": "csbm"},
                               "model": {"name": "gps", "attention": "memory", "memory_passes": passes}})
        assert recipe.model.memory_passes == passes
    assert GPSTransformer(6, 3, hidden=8, num_heads=2, attention="memory", memory_passes=1).attns["0"].passes == 1
    with pytest.raises(ValueError, match=r"memory_passes must be one of \[1, 2\], got 3"):
        global_attention("memory", 8, memory_passes=3)


def test_memory_chains_reach_the_memory_layer_and_the_recipe():
    assert global_attention("memory", 8, num_heads=2, group_size=4, memory_chains=3).chains == 3
    recipe = parse_recipe({"name": "t", "dataset": {"name": "csbm"},
                           "model": {"name": "gps", "attention": "memory", "memory_chains": 4}})
    assert recipe.model.memory_chains == 4
    assert GPSTransformer(6, 3, hidden=8, num_heads=2, attention="memory", memory_chains=2).attns["0"].chains == 2
    assert RBTransformer(6, 3, hidden=8, num_heads=2, attention="memory", memory_chains=2).attns[0].chains == 2
    with pytest.raises(ValueError, match="memory_chains must be >= 1"):
        global_attention("memory", 8, memory_chains=0)


def test_rbtransformer_holds_the_factory_layers_unwrapped():
    """RBTransformer's attention parameters keep their state_dict keys (checkpoints still load)."""
    keys = set(RBTransformer(8, 3, hidden=16, num_heads=2, group_size=16).state_dict())
    assert {"attns.0.fc_q.weight", "attns.0.fc_v.bias", "lns.0.weight"} <= keys


def test_tuned_block_equals_its_formula_float64():
    """block='tuned', one layer with attention: Drop(ReLU(BN(conv(h) + ego(h) + W_O attn(h)))), no
    identity path; with attention='none' it is the tuned GCN layer."""
    g, x = graph_and_feat(dtype=torch.float64)
    model = GPSTransformer(6, 3, hidden=8, layers=1, local="gcn", attention="full", num_heads=2, block="tuned",
                           ego=True, ffn=False, norm="batch").double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    model.eval()
    sd = model.state_dict()
    assert not len(model.attn_norms)
    conv = GraphConv(8, 8, allow_zero_in_degree=True).double()
    conv.load_state_dict({"weight": sd["locals.0.weight"], "bias": sd["locals.0.bias"]})
    gl = dgl.add_self_loop(dgl.remove_self_loop(g))
    h = F.linear(x, sd["fc_in.weight"], sd["fc_in.bias"])
    a = attend(model.attns["0"], g, h, merge="concat")
    m = conv(gl, h) + F.linear(h, sd["egos.0.weight"], sd["egos.0.bias"]) + F.linear(
        a, sd["attn_outs.0.weight"], sd["attn_outs.0.bias"])
    u = torch.relu(F.batch_norm(m, sd["local_norms.0.running_mean"], sd["local_norms.0.running_var"],
                                sd["local_norms.0.weight"], sd["local_norms.0.bias"]))
    expected = F.linear(u, sd["fc_out.weight"], sd["fc_out.bias"])
    torch.testing.assert_close(model(g, x), expected, rtol=1e-12, atol=1e-12)
    # The attention really enters: without it the output differs.
    assert not torch.allclose(model(g, x), F.linear(torch.relu(F.batch_norm(
        m - F.linear(a, sd["attn_outs.0.weight"], sd["attn_outs.0.bias"]), sd["local_norms.0.running_mean"],
        sd["local_norms.0.running_var"], sd["local_norms.0.weight"], sd["local_norms.0.bias"])),
        sd["fc_out.weight"], sd["fc_out.bias"]))
    with pytest.raises(ValueError, match=r"block must be one of \['graphgps', 'tuned'\], got 'x'"):
        GPSTransformer(6, 3, block="x")


@pytest.mark.parametrize("local, projection", [*((local, True) for local in LOCAL_CONVS),
                                                    *((local, False) for local in LOCAL_CONVS)])
def test_sparse_features_same_function_float64(local, projection):
    """The input projection (without one: the first layer's convolution and ego map, attention in
    the second layer) from sparse rows: the dense model's logits and gradients; in training, input
    dropout still acts on the raw features."""
    g, _ = graph_and_feat()
    gen = torch.Generator().manual_seed(5)
    x = ((torch.rand(30, 40, generator=gen) < 0.1) * torch.rand(30, 40, generator=gen)).double()
    kw = dict(hidden=8, layers=2, local=local, attention="full", num_heads=2, input_dropout=0.5)
    if not projection:
        kw.update(attention_every=2, block="tuned", ego=True, input_projection=False)
    dense = GPSTransformer(40, 3, **kw).double().eval()
    sparse = GPSTransformer(40, 3, sparse_features=True, **kw).double().eval()
    sparse.load_state_dict(dense.state_dict())
    assert list(dense.attns) == (["0", "1"] if projection else ["1"])
    torch.testing.assert_close(sparse(g, x), dense(g, x), rtol=0, atol=1e-12)
    for model in (dense, sparse):
        F.cross_entropy(model(g, x), torch.arange(30) % 3).backward()
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12, msg=name)
    sparse.train()
    assert not torch.allclose(sparse(g, x), sparse(g, x))


def test_without_input_projection_it_is_the_tuned_gnn_float64():
    """input_projection=False, attention='none', tuned block, ego, no FFN: the first GraphConv and
    ego map read the raw features, so the model is tunedGNN's GCN (conv + linear residual, norm,
    ReLU, dropout) with a linear head; no fc_in parameters exist."""
    g, x = graph_and_feat(dtype=torch.float64)
    model = GPSTransformer(6, 3, hidden=8, layers=2, local="gcn", attention="none", block="tuned", ego=True,
                           ffn=False, norm="layer", input_projection=False).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    model.eval()
    sd = model.state_dict()
    assert not any(k.startswith("fc_in") for k in sd) and sd["locals.0.weight"].shape == (6, 8)
    gl = dgl.add_self_loop(dgl.remove_self_loop(g))
    h = x
    for i, width in enumerate((6, 8)):
        conv = GraphConv(width, 8, allow_zero_in_degree=True).double()
        conv.load_state_dict({"weight": sd[f"locals.{i}.weight"], "bias": sd[f"locals.{i}.bias"]})
        m = conv(gl, h) + F.linear(h, sd[f"egos.{i}.weight"], sd[f"egos.{i}.bias"])
        h = torch.relu(F.layer_norm(m, (8,), sd[f"local_norms.{i}.weight"], sd[f"local_norms.{i}.bias"]))
    torch.testing.assert_close(model(g, x), F.linear(h, sd["fc_out.weight"], sd["fc_out.bias"]),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"block": "graphgps"}, r"input_projection=False needs block='tuned'"),
    ({"block": "tuned", "attention": "rba", "attention_every": 1}, r"attention_every must be >= 2 with attention='rba'"),
])
def test_without_input_projection_bad_combinations_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPSTransformer(6, 3, hidden=8, num_heads=2, input_projection=False, **kwargs)
    GPSTransformer(6, 3, hidden=8, num_heads=2, input_projection=False, block="tuned", attention="none")


@pytest.mark.parametrize("block", ["tuned", "graphgps"])
def test_attn_gate_scales_the_attention_branch_float64(block):
    """A gate alpha gives the model without a gate whose attention output map is alpha W_O; at its
    initial 0 the output does not depend on the attention's weights, yet the gates get a gradient."""
    g, x = graph_and_feat(dtype=torch.float64)
    kwargs = dict(hidden=8, layers=2, local="gcn", attention="full", num_heads=2, block=block, ffn=False,
                  norm="layer")
    gated = GPSTransformer(6, 3, attn_gate=True, **kwargs).double()
    for p in gated.parameters():
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        gated.attn_gates["0"].fill_(0.3)
        gated.attn_gates["1"].fill_(-1.7)
    gated.eval()
    plain = GPSTransformer(6, 3, **kwargs).double().eval()
    sd = {k: v for k, v in gated.state_dict().items() if "attn_gates" not in k}
    for i, alpha in (("0", 0.3), ("1", -1.7)):
        sd[f"attn_outs.{i}.weight"] = alpha * sd[f"attn_outs.{i}.weight"]
        sd[f"attn_outs.{i}.bias"] = alpha * sd[f"attn_outs.{i}.bias"]
    plain.load_state_dict(sd)
    torch.testing.assert_close(gated(g, x), plain(g, x), rtol=1e-12, atol=1e-12)

    model = GPSTransformer(6, 3, attn_gate=True, **kwargs).double().eval()
    assert all(gate.item() == 0.0 for gate in model.attn_gates.values())
    out = model(g, x)
    with torch.no_grad():
        for p in [*model.attns.parameters(), *model.attn_outs.parameters()]:
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(model(g, x), out, rtol=0, atol=0)
    model(g, x).square().sum().backward()
    assert len(model.attn_gates) == 2 and all(gate.grad.abs() > 0 for gate in model.attn_gates.values())
    with torch.no_grad():
        model.attn_gates["0"].fill_(1.0)
    model.reset_parameters()
    assert all(gate.item() == 0.0 for gate in model.attn_gates.values())


def test_attn_gate_is_a_bool_and_ignored_without_attention():
    with pytest.raises(TypeError, match=r"attn_gate must be a bool, got float 0.0"):
        GPSTransformer(6, 3, attn_gate=0.0)
    local = GPSTransformer(6, 3, attention="none", attn_gate=True)
    assert not len(local.attn_gates)
    assert parse_recipe({"name": "r", "dataset": {"name": "csbm"},
                         "model": {"name": "gps", "attn_gate": True}}).model.attn_gate is True


@pytest.mark.parametrize("local", ["gcn", "sage"])
def test_propagation_is_personalised_pagerank_of_the_logits_float64(local):
    """propagation_steps=K, teleport=a: Z_0 = logits, Z_{k+1} = (1 - a) D_in^-1/2 (A + I) D_out^-1/2 Z_k + a logits,
    on a graph with self-loops already in it (replaced by one per node) and for a local layer that
    uses the graph without them (SAGE)."""
    g, x = graph_and_feat(dtype=torch.float64)
    g = dgl.add_edges(g, [0, 3], [0, 3])  # self-loops of its own: the propagation keeps one per node
    kwargs = dict(hidden=8, layers=2, local=local, attention="full", num_heads=2)
    propagated = GPSTransformer(6, 3, propagation_steps=4, teleport=0.2, **kwargs).double().eval()
    plain = GPSTransformer(6, 3, **kwargs).double().eval()
    plain.load_state_dict(propagated.state_dict())  # the propagation has no weights
    logits = plain(g, x)
    n = g.num_nodes()
    adj = torch.zeros(n, n, dtype=torch.float64)
    src, dst = dgl.remove_self_loop(g).edges()
    adj.index_put_((dst, src), torch.ones(len(src), dtype=torch.float64), accumulate=True)  # multi-edges count
    adj += torch.eye(n, dtype=torch.float64)
    a_hat = adj.sum(1).rsqrt()[:, None] * adj * adj.sum(0).rsqrt()[None, :]  # in- and out-degrees (directed graph)
    z = logits
    for _ in range(4):
        z = 0.8 * a_hat @ z + 0.2 * logits
    torch.testing.assert_close(propagated(g, x), z, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(z, logits)


def test_propagation_arguments_recipe_and_context_hops():
    for kwargs, error, message in [
        ({"propagation_steps": -1}, ValueError, r"propagation_steps must be >= 0, got -1"),
        ({"propagation_steps": 2.0}, TypeError, r"propagation_steps must be an int, got float 2.0"),
        ({"propagation_steps": 2, "teleport": 0.0}, ValueError, r"teleport must be a float in \(0, 1\] .*got 0.0"),
        ({"propagation_steps": 2, "teleport": 1.5}, ValueError, r"teleport must be a float in \(0, 1\] .*got 1.5"),
        ({"teleport": True}, ValueError, r"teleport must be a float in \(0, 1\] .*got True"),
    ]:
        with pytest.raises(error, match=message):
            GPSTransformer(6, 3, **kwargs)
    assert GPSTransformer(6, 3).propagation_steps == 0
    recipe = parse_recipe({"name": "t", "dataset": {"name": "csbm"},
                           "model": {"name": "gps", "layers": 3, "propagation_steps": 10, "teleport": 0.1}})
    assert GPSTransformer.context_hops(recipe.model) == 13
    with pytest.raises(Exception, match=r"model\.propagation_steps"):
        parse_recipe({"name": "t", "dataset": {"name": "csbm"}, "model": {"name": "gps", "propagation_steps": "ten"}})
