"""ScoreEstimatorConv: float64 loop reference, normalisation, temperature, blocks, errors."""
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


@pytest.mark.parametrize("num_heads,temperature", [(1, 1.0), (2, 0.3)])
def test_matches_float64_loop_reference(num_heads, temperature):
    g = typed_graph()
    conv = ScoreEstimatorConv(5, 3, num_heads=num_heads).double()
    randomise(conv)
    conv.set_temperature(temperature)
    feat = torch.randn(30, 5, dtype=torch.float64)
    out, att = conv(g, feat, get_attention=True)
    ref_out, ref_att = loop_reference(conv, g, feat)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(att, ref_att, rtol=0, atol=1e-12)


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


def test_zero_in_degree():
    g = dgl.graph(([0, 1], [1, 2]), num_nodes=4)
    conv = ScoreEstimatorConv(3, 2)
    with pytest.raises(DGLError, match="0-in-degree nodes"):
        conv(g, torch.randn(4, 3))
    conv = ScoreEstimatorConv(3, 2, allow_zero_in_degree=True)
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
    with pytest.raises(ValueError, match="clamp must be a positive number"):
        ScoreEstimatorConv(5, 3, clamp=0.0)
    with pytest.raises(TypeError, match="value_scale must be a float"):
        ScoreEstimatorConv(5, 3, value_scale="1")
