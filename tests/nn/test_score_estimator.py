"""ScoreEstimatorConv: float64 loop reference (both backends), the fused path's gradients,
normalisation, temperature, blocks, errors."""
import math

import dgl
import pytest
import torch
from dgl.base import DGLError

from dgl_rbgt.nn.score_estimator import ScoreEstimatorConv
from dgl_rbgt.transforms.edge_types import add_self_loops


def typed_graph(num_nodes: int = 30, num_edges: int = 90) -> dgl.DGLGraph:
    g = add_self_loops(dgl.rand_graph(num_nodes, num_edges))
    g.edata["etype"][: num_edges // 3] = 1  # some "expander" edges
    return g


def randomise(conv: ScoreEstimatorConv) -> None:
    with torch.no_grad():
        for p in conv.parameters():
            p.normal_(0.0, 0.7)


def loop_reference(conv: ScoreEstimatorConv, g: dgl.DGLGraph, feat: torch.Tensor):
    """Plain float64 loops over edges and heads."""
    h, d = conv._num_heads, conv._out_feats
    w = {name: p.detach().double() for name, p in conv.named_parameters()}
    x = feat.double()
    q = (x @ w["fc_q.weight"].T).view(-1, h, d)
    k = (x @ w["fc_k.weight"].T).view(-1, h, d)
    v = (x @ w["fc_v.weight"].T).view(-1, h, d)
    t = float(conv.temperature)
    src, dst = g.edges(order="eid")
    etype = g.edata["etype"]
    logits = torch.zeros(g.num_edges(), h, dtype=torch.float64)
    for e in range(g.num_edges()):
        i, j, ty = int(dst[e]), int(src[e]), int(etype[e])
        for head in range(h):
            z = w["edge_gain"][ty, head] * float(q[i, head] @ k[j, head]) / math.sqrt(d)
            z = (z + w["edge_bias"][ty, head]) / t
            logits[e, head] = max(-conv.clamp, min(conv.clamp, float(z)))
    att = torch.zeros_like(logits)
    out = torch.zeros(g.num_nodes(), h, d, dtype=torch.float64)
    for i in range(g.num_nodes()):
        edges = (dst == i).nonzero().flatten().tolist()
        for head in range(h):
            total = sum(math.exp(logits[e, head]) for e in edges)
            for e in edges:
                att[e, head] = math.exp(logits[e, head]) / total
                vj = v[int(src[e]), head]
                out[i, head] += att[e, head] * w["value_scale"] * vj / vj.norm()
    return out, att.unsqueeze(-1)


@pytest.mark.parametrize("backend", ["dgl", "torch"])
@pytest.mark.parametrize("num_heads,temperature", [(1, 1.0), (2, 0.3)])
def test_matches_float64_loop_reference(num_heads, temperature, backend):
    g = typed_graph()
    conv = ScoreEstimatorConv(5, 3, num_heads=num_heads, backend=backend).double()
    randomise(conv)
    conv.set_temperature(temperature)
    feat = torch.randn(30, 5, dtype=torch.float64)
    out, att = conv(g, feat, get_attention=True)
    ref_out, ref_att = loop_reference(conv, g, feat)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(att, ref_att, rtol=0, atol=1e-12)


def _pair(num_heads: int, clamp: float = 8.0):
    """The same layer on DGL's kernels and on the fused torch path."""
    a = ScoreEstimatorConv(6, 3, num_heads=num_heads, clamp=clamp, backend="dgl").double()
    randomise(a)
    b = ScoreEstimatorConv(6, 3, num_heads=num_heads, clamp=clamp, backend="torch").double()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("num_heads,clamp,temperature", [(1, 8.0, 1.0), (2, 8.0, 0.3), (2, 1.0, 1.0)])
def test_fused_gradients_match_dgl(num_heads, clamp, temperature):
    """Outputs, scores and every gradient (input, projections, gains, biases, value scale) agree to
    1e-10, also where many logits sit in the clamp (no gradient through them)."""
    g = typed_graph(60, 300)
    a, b = _pair(num_heads, clamp)
    a.set_temperature(temperature)
    b.set_temperature(temperature)
    feat = torch.randn(60, 6, dtype=torch.float64, requires_grad=True)
    out_a, att_a = a(g, feat, get_attention=True)
    out_b = b(g, feat)
    torch.testing.assert_close(out_b, out_a, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(b(g, feat, get_attention=True)[1], att_a, rtol=1e-10, atol=1e-12)
    if clamp < 2:  # the clamp case must really clamp some logits and leave others
        with torch.no_grad():
            src, dst = g.edges(order="eid")
            et = g.edata["etype"].long()
            q, k = a.fc_q(feat).view(-1, num_heads, 3), a.fc_k(feat).view(-1, num_heads, 3)
            z = (a.edge_gain[et] * (q[dst] * k[src]).sum(-1) / math.sqrt(3) + a.edge_bias[et]) / temperature
        assert 0.1 < float((z.abs() > clamp).double().mean()) < 0.9
    weight = torch.randn_like(out_a)
    grads_a = torch.autograd.grad((out_a * weight).sum(), [feat, *a.parameters()])
    grads_b = torch.autograd.grad((out_b * weight).sum(), [feat, *b.parameters()])
    for (name, _), ga, gb in zip([("feat", None), *a.named_parameters()], grads_a, grads_b):
        torch.testing.assert_close(gb, ga, rtol=1e-10, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


def test_fused_gradcheck():
    """Finite differences against the hand-written backward, through the input, the gains and the
    biases, with some logits clamped."""
    g = typed_graph(12, 30)
    conv = ScoreEstimatorConv(4, 2, num_heads=2, clamp=2.0, backend="torch").double()
    randomise(conv)
    feat = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    gain = conv.edge_gain.detach().clone().requires_grad_(True)
    bias = conv.edge_bias.detach().clone().requires_grad_(True)

    def f(x, gn, bs):
        return torch.func.functional_call(conv, {"edge_gain": gn, "edge_bias": bs}, (g, x))

    assert torch.autograd.gradcheck(f, (feat, gain, bias))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64])
def test_fused_path_leaves_the_graph_as_it_was(dtype):
    """No CSR/CSC format added to the graph, its edge types untouched (any integer dtype)."""
    g = typed_graph(40, 160)
    g.edata["etype"] = g.edata["etype"].to(dtype)
    codes = g.edata["etype"].clone()
    assert g.formats()["created"] == ["coo"]
    conv = ScoreEstimatorConv(6, 4, backend="torch")
    conv(g, torch.randn(40, 6)).sum().backward()
    assert g.formats()["created"] == ["coo"]
    assert g.edata["etype"].dtype == dtype and torch.equal(g.edata["etype"], codes)


def test_fused_structure_follows_the_edge_types():
    """Changing edata['etype'] in place rebuilds the cached layout (no stale types)."""
    g = typed_graph(40, 160)
    a, b = _pair(1)
    feat = torch.randn(40, 6, dtype=torch.float64)
    b(g, feat)
    g.edata["etype"][:50] = 1 - g.edata["etype"][:50].clamp(max=1)
    torch.testing.assert_close(b(g, feat), a(g, feat), rtol=1e-10, atol=1e-12)


def test_scores_normalised_and_values_unit_length():
    g = typed_graph(50, 200)
    conv = ScoreEstimatorConv(6, 4, num_heads=2).double()
    randomise(conv)
    feat = torch.randn(50, 6, dtype=torch.float64)
    out, att = conv(g, feat, get_attention=True)
    sums = torch.zeros(50, 2, dtype=torch.float64).index_add_(0, g.edges()[1], att.squeeze(-1))
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-12)
    # Convex combinations of vectors of norm |s|: output norm at most |s|.
    assert bool((out.norm(dim=-1) <= conv.value_scale.abs() + 1e-12).all())
    # Values are normalised: scaling W_V by a positive factor changes nothing.
    with torch.no_grad():
        conv.fc_v.weight.mul_(7.0)
    torch.testing.assert_close(conv(g, feat), out, rtol=0, atol=1e-12)


def test_temperature_sharpens_and_is_saved():
    """Entropy of softmax(z / T) grows with T (the clamp is widened so it does not interfere)."""
    g = typed_graph(40, 200)
    conv = ScoreEstimatorConv(6, 4, clamp=1e3).double()
    randomise(conv)
    feat = torch.randn(40, 6, dtype=torch.float64)

    def entropy():
        a = conv(g, feat, get_attention=True)[1].squeeze(-1).clamp_min(1e-300)
        return float(-(a * a.log()).sum())

    values = []
    for t in (2.0, 1.0, 0.3, 0.05):
        conv.set_temperature(t)
        values.append(entropy())
    assert values == sorted(values, reverse=True)
    assert float(conv.state_dict()["temperature"]) == 0.05
    with pytest.raises(ValueError, match="temperature must be positive"):
        conv.set_temperature(0.0)


def test_block_matches_full_graph():
    g = typed_graph(40, 160)
    conv = ScoreEstimatorConv(6, 4, num_heads=2)
    feat = torch.randn(40, 6)
    full = conv(g, feat)
    seeds = torch.tensor([3, 7, 11, 20])
    block = dgl.to_block(dgl.in_subgraph(g, seeds), dst_nodes=seeds)
    out = conv(block, feat[block.srcdata[dgl.NID]])
    torch.testing.assert_close(out, full[seeds], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["dgl", "torch"])
def test_zero_in_degree(backend):
    g = dgl.graph(([0, 1], [1, 2]), num_nodes=4)
    conv = ScoreEstimatorConv(3, 2, backend=backend)
    with pytest.raises(DGLError, match="0-in-degree nodes"):
        conv(g, torch.randn(4, 3))
    conv = ScoreEstimatorConv(3, 2, allow_zero_in_degree=True, backend=backend)
    out = conv(g, torch.randn(4, 3))
    assert bool((out[[0, 3]] == 0).all())
    conv.set_allow_zero_in_degree(False)  # as DGL's layers
    with pytest.raises(DGLError, match="0-in-degree nodes"):
        conv(g, torch.randn(4, 3))


def test_errors():
    g = typed_graph()
    conv = ScoreEstimatorConv(5, 3, num_edge_types=1)
    with pytest.raises(DGLError, match="holds code 2 but the layer has num_edge_types=1"):
        conv(g, torch.randn(30, 5))
    conv = ScoreEstimatorConv(5, 3)
    with pytest.raises(ValueError, match="feat must have 30 rows"):
        conv(g, torch.randn(29, 5))
    with pytest.raises(ValueError, match="feat must have last dimension 5"):
        conv(g, torch.randn(30, 4))
    with pytest.raises(DGLError, match="graph must be homogeneous"):
        conv(dgl.heterograph({("a", "r", "b"): ([0], [0]), ("b", "s", "a"): ([0], [0])}), torch.randn(1, 5))
    with pytest.raises(ValueError, match="in_feats must be >= 1"):
        ScoreEstimatorConv(0, 3)
    with pytest.raises(ValueError, match="clamp must be a finite number > 0"):
        ScoreEstimatorConv(5, 3, clamp=0.0)
    with pytest.raises(TypeError, match="value_scale must be a float"):
        ScoreEstimatorConv(5, 3, value_scale="1")
    with pytest.raises(ValueError, match="value_scale must be a finite number > 0"):
        ScoreEstimatorConv(5, 3, value_scale=float("nan"))
    with pytest.raises(TypeError, match="allow_zero_in_degree must be a bool"):
        ScoreEstimatorConv(5, 3, allow_zero_in_degree=1)
