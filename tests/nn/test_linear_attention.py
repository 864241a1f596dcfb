"""SGFormer's simple global attention against a plain float64 reference with the N x N matrix."""
import dgl
import pytest
import torch
from dgl.base import DGLError

import dgl_rbgt.nn.functional.linear as la
from dgl_rbgt.nn import SGFormerAttention
from dgl_rbgt.nn.functional import sgformer_attention


def reference(q, k, v):
    """The formula written out per head with the explicit all-pair matrix (float64)."""
    n = q.shape[0]
    qn = q / q.norm()  # Frobenius norm over nodes and heads
    kn = k / k.norm()
    out = torch.empty_like(v)
    for h in range(q.shape[1]):
        a = qn[:, h] @ kn[:, h].T  # (n, n)
        out[:, h] = (n * v[:, h] + a @ v[:, h]) / (n + a.sum(1, keepdim=True))
    return out


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def module_reference(att, feat):
    n, h, d = feat.shape[0], att._num_heads, att._out_feats
    q = att.fc_q(feat).view(n, h, d).double()
    k = att.fc_k(feat).view(n, h, d).double()
    v = att.fc_v(feat).view(n, h, d).double()
    return q, k, v


def test_functional_matches_reference():
    q, k, v = (torch.randn(13, 3, 5, dtype=torch.float64) for _ in range(3))
    v = torch.randn(13, 3, 4, dtype=torch.float64)  # value width may differ from key width
    assert rel_err(sgformer_attention(q, k, v), reference(q, k, v)) <= 1e-12


def test_module_matches_reference_and_averages_heads():
    g = dgl.rand_graph(20, 50)
    att = SGFormerAttention(6, 4, num_heads=3, mean_heads=True).double()
    feat = torch.randn(20, 6, dtype=torch.float64)
    ref = reference(*module_reference(att, feat))
    assert rel_err(att(g, feat), ref.mean(1)) <= 1e-12
    att.mean_heads = False
    assert att(g, feat).shape == (20, 3, 4)
    assert rel_err(att(g, feat), ref) <= 1e-12


@pytest.mark.parametrize("chunk", [1 << 24, 7])  # 7: one feature column per slice
def test_batched_graphs_are_separate(monkeypatch, chunk):
    monkeypatch.setattr(la, "_CHUNK_ELEMENTS", chunk)
    sizes = [5, 9, 1, 6]
    g = dgl.batch([dgl.rand_graph(s, s) for s in sizes])
    att = SGFormerAttention(4, 3, num_heads=2, mean_heads=False).double()
    feat = torch.randn(21, 4, dtype=torch.float64)
    out = att(g, feat)
    q, k, v = module_reference(att, feat)
    start = 0
    for s in sizes:
        sl = slice(start, start + s)
        assert rel_err(out[sl], reference(q[sl], k[sl], v[sl])) <= 1e-12
        start += s
    feat2 = feat.clone()
    feat2[5:14] += 3 * torch.randn(9, 4, dtype=torch.float64)
    out2 = att(g, feat2)
    assert torch.allclose(out2[:5], out[:5], rtol=0, atol=1e-14)
    assert torch.allclose(out2[14:], out[14:], rtol=0, atol=1e-14)


def test_gradcheck():
    q, k, v = (torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: sgformer_attention(a, b, c), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: sgformer_attention(a, b, c, segments=[2, 4]), (q, k, v))


def test_dtypes():
    g = dgl.rand_graph(30, 60)
    att = SGFormerAttention(8, 4, num_heads=2, mean_heads=True)
    feat = torch.randn(30, 8)
    ref = reference(*module_reference(att, feat)).mean(1)
    assert rel_err(att(g, feat), ref) <= 1e-5
    out = att.to(torch.bfloat16)(g, feat.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) < 5e-2


def test_zero_queries_give_values():
    q = torch.zeros(4, 1, 2, dtype=torch.float64)
    k, v = torch.randn(4, 1, 2, dtype=torch.float64), torch.randn(4, 1, 3, dtype=torch.float64)
    assert torch.allclose(sgformer_attention(q, k, v), v)


def test_errors():
    att = SGFormerAttention(4, 2)
    g = dgl.rand_graph(5, 8)
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        SGFormerAttention(4, 2, num_heads=0)
    with pytest.raises(TypeError, match="out_feats must be an int"):
        SGFormerAttention(4, 2.0)
    with pytest.raises(TypeError, match="mean_heads must be a bool"):
        SGFormerAttention(4, 2, mean_heads="no")
    with pytest.raises(ValueError, match="feat must have 5 rows"):
        att(g, torch.randn(4, 4))
    with pytest.raises(ValueError, match="feat contains NaN or Inf"):
        att(g, torch.full((5, 4), float("inf")))
    with pytest.raises(TypeError, match="feat has dtype torch.float64"):
        att(g, torch.randn(5, 4, dtype=torch.float64))
    with pytest.raises(DGLError, match="graph has no nodes"):
        att(dgl.graph(([], []), num_nodes=0), torch.randn(0, 4))
    with pytest.raises(DGLError, match="graph is a block"):
        att(dgl.to_block(g), torch.randn(5, 4))
    hetero = dgl.heterograph({("a", "r", "b"): ([0], [0]), ("b", "s", "a"): ([0], [0])})
    with pytest.raises(DGLError, match="graph must be homogeneous"):
        att(hetero, torch.randn(1, 4))
    q = torch.randn(5, 1, 2)
    with pytest.raises(ValueError, match="segments must sum to the number of nodes 5"):
        sgformer_attention(q, q, q, segments=[2, 2])


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e15])
@pytest.mark.parametrize("segments", [None, [5, 1, 6]])
def test_any_scale_of_queries_and_keys_gives_the_same_finite_output(scale, segments):
    # The output is invariant to the scale of Q and K. A model whose attention weights decay
    # towards zero (weight decay behind a closed gate) reached entries near 1e-11, where the
    # gradient of 1 / (|Q| |K|) overflowed in float32 and training turned NaN; at 1e-20 the
    # forward fails too.
    q, k = (torch.randn(12, 2, 3, dtype=torch.float64) for _ in range(2))
    v = torch.randn(12, 2, 4, dtype=torch.float64)
    q32 = (scale * q.float()).requires_grad_()
    k32 = (scale * k.float()).requires_grad_()
    v32 = v.float().requires_grad_()
    out = sgformer_attention(q32, k32, v32, segments=segments)
    bounds = [0, 12] if segments is None else [0, 5, 6, 12]
    ref = torch.cat([reference(q[a:b], k[a:b], v[a:b]) for a, b in zip(bounds, bounds[1:])])
    assert rel_err(out, ref) <= 1e-5
    out.square().sum().backward()
    for x in (q32, k32, v32):
        assert torch.isfinite(x.grad).all()
