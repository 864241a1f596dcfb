"""SpexphormerConv: float64 loop reference, equality with ExphormerConv on the sampled graph,
per-head independence, masking, and argument errors."""
import math

import dgl
import pytest
import torch

from dgl_rbgt.nn.exphormer import ExphormerConv
from dgl_rbgt.nn.spexphormer import SpexphormerConv, TableBlock
from dgl_rbgt.transforms.edge_types import add_self_loops
from dgl_rbgt.sampling import sparsify


def randomise(module: torch.nn.Module, std: float = 0.7) -> None:
    """Fresh random values in every parameter (the default init has an all-ones edge table)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


def loop_reference(conv: SpexphormerConv, table, feat, etype, valid=None, clamp=5.0):
    """Plain float64 loops over nodes, heads and entries."""
    h, d = conv._num_heads, conv._out_feats
    w = {name: p.detach().double() for name, p in conv.named_parameters()}
    x = feat.double()
    q = x @ w["fc_q.weight"].T + (w["fc_q.bias"] if "fc_q.bias" in w else 0)
    k = x @ w["fc_k.weight"].T + (w["fc_k.bias"] if "fc_k.bias" in w else 0)
    v = x @ w["fc_v.weight"].T + (w["fc_v.bias"] if "fc_v.bias" in w else 0)
    emb = w["edge_emb.weight"]
    n, kk = table.shape
    out = torch.zeros(n, h, d, dtype=torch.float64)
    att = torch.zeros(n, kk, h, dtype=torch.float64)
    for i in range(n):
        for head in range(h):
            cols = slice(head * d, (head + 1) * d)
            logits = []
            for m in range(kk):
                j, t = int(table[i, m]), int(etype[i, m])
                z = float((q[i, cols] * k[j, cols] * emb[t, cols]).sum()) / math.sqrt(d)
                if "edge_bias" in w:
                    z += float(w["edge_bias"][t, head])
                logits.append(max(-clamp, min(clamp, z)))
            keep = [m for m in range(kk) if valid is None or bool(valid[i, m])]
            total = sum(math.exp(logits[m]) for m in keep)
            for m in keep:
                a = math.exp(logits[m]) / total
                att[i, m, head] = a
                out[i, head] += a * v[int(table[i, m]), cols]
    return out, att


@pytest.mark.parametrize("edge_bias", [False, True])
def test_matches_float64_loop_reference(edge_bias):
    n_src, n_dst, k = 12, 5, 4
    conv = SpexphormerConv(6, 3, num_heads=2, bias=True, edge_bias=edge_bias).double()
    randomise(conv)
    feat = torch.randn(n_src, 6, dtype=torch.float64)
    table = torch.randint(0, n_src, (n_dst, k))
    etype = torch.randint(0, 3, (n_dst, k))
    out, att = conv(table, feat, get_attention=True, etype=etype)
    ref_out, ref_att = loop_reference(conv, table, feat, etype)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(att, ref_att, rtol=0, atol=1e-12)


def assert_close_to_scale(got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """Max abs difference at most tol times the largest magnitude of the reference."""
    scale = float(want.abs().max())
    diff = float((got - want).abs().max())
    assert diff <= tol * scale, (diff, scale)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("num_heads", [1, 3])
def test_equals_exphormer_conv_on_sampled_graph(dtype, tol, num_heads):
    """The same parameters give ExphormerConv's result on the graph of the table's edges (one
    in-edge per entry; repeated draws are parallel edges), head by head. Float64 agrees to 1e-13
    of the output's scale; float32 to 1e-6 (the two sum in different orders; the rounding of
    logits near the clamp is amplified by exp, so the parameters here have std 0.3, for which
    40 seeds gave at most 3.4e-7, while std 0.7 reaches 1e-6)."""
    g = add_self_loops(dgl.rand_graph(120, 400))  # includes deficient nodes (fewer than k)
    g.edata["etype"][:150] = 1
    nb = sparsify(g, torch.rand(g.num_edges()), 6)
    sub = nb.to_graphs()[0]
    ex = ExphormerConv(16, 4, num_heads, bias=True).to(dtype)
    randomise(ex, std=0.3)
    conv = SpexphormerConv(16, 4, num_heads, bias=True).to(dtype)
    conv.load_state_dict(ex.state_dict())
    feat = torch.randn(120, 16, dtype=dtype)
    want, want_att = ex(sub, feat, get_attention=True)
    got, got_att = conv(TableBlock(nb.tables[0], nb.etypes[0], nb.valid[0], num_src=120), feat,
                        get_attention=True)
    assert_close_to_scale(got, want, tol)
    # Edge v * k + j of the sampled graph is entry (v, j); weights lie in [0, 1].
    assert_close_to_scale(got_att, want_att.view(120, 6, num_heads), tol)


def test_masked_rows_match_exphormer_zero_in_degree():
    """Nodes without in-edges have masked rows: output 0, like ExphormerConv's zero-in-degree
    output; gradients stay finite."""
    g = dgl.graph(([0, 1, 2, 3, 4, 1], [1, 2, 1, 2, 2, 4]), num_nodes=6)  # 0, 3, 5 have no in-edge
    nb = sparsify(g, torch.rand(g.num_edges()), 3)
    ex = ExphormerConv(5, 2, 2, bias=True, allow_zero_in_degree=True).double()
    randomise(ex)
    conv = SpexphormerConv(5, 2, 2, bias=True).double()
    conv.load_state_dict(ex.state_dict())
    sub = nb.to_graphs()[0]
    feat = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    out = conv(nb.tables[0], feat, etype=nb.etypes[0], valid=nb.valid[0])
    torch.testing.assert_close(out, ex(sub, feat), rtol=0, atol=1e-12)
    assert bool((out[[0, 3, 5]] == 0).all())
    out.sum().backward()
    assert bool(torch.isfinite(feat.grad).all())


def test_partial_mask_excludes_entries():
    conv = SpexphormerConv(4, 2, num_heads=2).double()
    randomise(conv)
    feat = torch.randn(8, 4, dtype=torch.float64)
    table = torch.randint(0, 8, (3, 5))
    etype = torch.randint(0, 3, (3, 5))
    valid = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    out, att = conv(table, feat, get_attention=True, etype=etype, valid=valid)
    ref_out, ref_att = loop_reference(conv, table, feat, etype, valid)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(att, ref_att, rtol=0, atol=1e-12)
    assert bool((att[~valid] == 0).all())


def test_heads_are_independent():
    """Changing one head's query weights changes that head's output only."""
    conv = SpexphormerConv(6, 3, num_heads=3).double()
    randomise(conv)
    feat = torch.randn(10, 6, dtype=torch.float64)
    table = torch.randint(0, 10, (10, 4))
    before = conv(table, feat)
    with torch.no_grad():
        conv.fc_q.weight[3:6] += 1.0  # head 1's channels
    after = conv(table, feat)
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]], rtol=0, atol=0)
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_entry_order_and_pair_input():
    """Permuting a row's entries changes nothing; a (src, dst) pair equals the prefix input."""
    conv = SpexphormerConv((6, 6), 3, num_heads=2).double()
    randomise(conv)
    feat = torch.randn(9, 6, dtype=torch.float64)
    table = torch.randint(0, 9, (4, 5))
    etype = torch.randint(0, 3, (4, 5))
    perm = torch.randperm(5)
    a = conv(table, feat, etype=etype)
    b = conv(table[:, perm], feat, etype=etype[:, perm])
    c = conv(table, (feat, feat[:4]), etype=etype)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_clamp_and_no_etype():
    conv = SpexphormerConv(4, 2, num_heads=1, clamp=None).double()
    randomise(conv)
    with torch.no_grad():
        conv.fc_q.weight.mul_(50)  # logits far beyond 5
    feat = torch.randn(6, 4, dtype=torch.float64)
    table = torch.randint(0, 6, (6, 3))
    zeros = torch.zeros(6, 3, dtype=torch.int64)
    torch.testing.assert_close(conv(table, feat), conv(table, feat, etype=zeros), rtol=0, atol=0)
    out, att = conv(table, feat, get_attention=True)
    _, ref_att = loop_reference(conv, table, feat, zeros, clamp=float("inf"))
    torch.testing.assert_close(att, ref_att, rtol=0, atol=1e-12)


def test_errors():
    conv = SpexphormerConv(4, 2, num_heads=2)
    feat = torch.randn(6, 4)
    table = torch.randint(0, 6, (3, 2))
    with pytest.raises(ValueError, match=r"table holds values in \[.*\], but must lie in \[0, 6\)"):
        conv(table + 6, feat)
    with pytest.raises(TypeError, match="table must be an int64 or int32 tensor"):
        conv(table.float(), feat)
    with pytest.raises(ValueError, match="table must have 2 dimensions"):
        conv(table.flatten(), feat)
    with pytest.raises(ValueError, match="table has 7 destination rows but feat only 6"):
        conv(torch.zeros(7, 2, dtype=torch.int64), feat)
    with pytest.raises(ValueError, match=r"etype must have shape \(3, 2\)"):
        conv(table, feat, etype=torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"etype holds values in .*\(num_edge_types=3\)"):
        conv(table, feat, etype=torch.full((3, 2), 3))
    with pytest.raises(ValueError, match=r"valid must be a bool tensor of shape \(3, 2\)"):
        conv(table, feat, valid=torch.ones(3, 2))
    with pytest.raises(ValueError, match="feat must have last dimension 4"):
        conv(table, torch.randn(6, 5))
    with pytest.raises(ValueError, match="feat contains NaN or Inf"):
        conv(table, torch.full((6, 4), float("nan")))
    with pytest.raises(ValueError, match="feat must have 9 rows"):
        conv(TableBlock(table, num_src=9), feat)
    with pytest.raises(ValueError, match=r"feat \(destination\) must have 3 rows"):
        conv(table, (feat, feat[:2]))
    with pytest.raises(ValueError, match="out_feats must be >= 1"):
        SpexphormerConv(4, 0)
    with pytest.raises(TypeError, match="num_heads must be an int"):
        SpexphormerConv(4, 2, num_heads=1.5)
    with pytest.raises(ValueError, match="clamp must be a finite number > 0"):
        SpexphormerConv(4, 2, clamp=-1.0)
    with pytest.raises(TypeError, match="clamp must be a float"):
        SpexphormerConv(4, 2, clamp="5")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("clamp", [None, 0.8])
def test_gradients_match_finite_differences_in_chunks(monkeypatch, masked, clamp):
    """The hand-written backward, with the destinations cut into many chunks and in one."""
    import dgl_rbgt.nn.spexphormer as module

    torch.manual_seed(3)
    conv = SpexphormerConv(5, 3, num_heads=2, bias=True, edge_bias=True, clamp=clamp).double()
    randomise(conv)
    feat = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    table = torch.randint(0, 9, (7, 4))
    etype = torch.randint(0, 3, (7, 4))
    valid = None
    if masked:
        valid = torch.rand(7, 4) > 0.4
        valid[2] = False  # a row without valid entries
    inputs = [feat, *conv.parameters()]
    results = []
    for chunk_bytes in (1, 1 << 30):  # one destination per chunk; everything in one chunk
        monkeypatch.setattr(module, "_CHUNK_BYTES", chunk_bytes)
        assert torch.autograd.gradcheck(lambda *_: conv(table, feat, etype=etype, valid=valid), inputs,
                                        eps=1e-6, atol=1e-6)
        out = conv(table, feat, etype=etype, valid=valid)
        results.append((out, torch.autograd.grad(out.square().sum(), inputs)))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-12)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
