"""Random Batch Attention: values against plain float64 references, invariances, laws, errors."""
import itertools
import math

import dgl
import pytest
import torch
from dgl.base import DGLError

from dgl_rbgt.nn import FullAttentionConv, RBAAttention, RBAConv
from dgl_rbgt.nn.functional import full_attention, random_batch_attention
from dgl_rbgt.nn.functional.grouping import random_plan


# ----------------------------------------------------------------------------- references


def plain_attention(q, k, v):
    """Softmax multi-head attention of every row over all rows, written out: (n, H, D)."""
    logits = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(q.shape[-1])  # (H, n, n)
    return torch.einsum("hij,jhd->ihd", torch.softmax(logits, dim=-1), v)


def grouped_reference(q, k, v, groups):
    """Attention restricted to each group (a list of node-id tensors), float64."""
    out = torch.full_like(v, float("nan"))
    for g in groups:
        out[g] = plain_attention(q[g], k[g], v[g])
    return out


def groups_of(perm, group_size, segments=None):
    """The groups an explicit perm defines: each segment cut into p-chunks plus its remainder."""
    segments = [len(perm)] if segments is None else segments
    groups, start = [], 0
    for n in segments:
        seg = perm[start:start + n]
        groups += [seg[i:i + group_size] for i in range(0, n, group_size)]
        start += n
    return [g for g in groups if len(g)]


def segment_perm(segments):
    """A random permutation that shuffles inside each segment only."""
    parts, start = [], 0
    for n in segments:
        parts.append(start + torch.randperm(n))
        start += n
    return torch.cat(parts)


def qkv(n, heads=2, dim=4, dtype=torch.float64):
    return [torch.randn(n, heads, dim, dtype=dtype) for _ in range(3)]


def randomize(conv):
    """Non-zero biases everywhere: padded keys would not be zero (the reason masks matter)."""
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return conv


def conv_reference(conv, feat, groups):
    """RBAConv's output from its own weights and the plain grouped reference (float64)."""
    n = feat.shape[0]
    heads, dim = conv._num_heads, conv._out_feats
    q = conv.fc_q(feat).view(n, heads, dim).double()
    k = conv.fc_k(feat).view(n, heads, dim).double()
    v = conv.fc_v(feat).view(n, heads, dim).double()
    return grouped_reference(q, k, v, groups)


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("n,p", [(12, 12), (13, 20), (7, 100)])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_group_size_at_least_n_is_full_attention(n, p, dtype, tol):
    q, k, v = qkv(n, heads=3, dim=5, dtype=dtype)
    ref = plain_attention(q.double(), k.double(), v.double())
    assert rel_err(random_batch_attention(q, k, v, p), ref) <= tol
    assert rel_err(full_attention(q, k, v), ref) <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_conv_with_large_group_equals_full_mha(dtype, tol):
    n = 11  # not a multiple of anything below
    g = dgl.rand_graph(n, 30)
    conv = randomize(RBAConv(6, 4, num_heads=3, group_size=16)).to(dtype)
    feat = torch.randn(n, 6, dtype=dtype)
    ref = conv_reference(conv, feat, [torch.arange(n)])
    for mode in (True, False):  # training (random perm) and evaluation
        conv.train(mode)
        assert rel_err(conv(g, feat), ref) <= tol
    full = FullAttentionConv(6, 4, num_heads=3).to(dtype)
    full.load_state_dict(conv.state_dict())
    assert rel_err(full(g, feat), ref) <= tol


@pytest.mark.parametrize("n,p", [(16, 4), (17, 4), (10, 3), (5, 4)])
def test_each_output_is_attention_within_its_group(n, p):
    q, k, v = qkv(n)
    perm = torch.randperm(n)
    out = random_batch_attention(q, k, v, p, perm=perm)
    ref = grouped_reference(q, k, v, groups_of(perm, p))
    assert rel_err(out, ref) <= 1e-12


def test_batched_groups_with_different_remainders_match_reference():
    # Remainders 2, 1, 0, 3 -> the masked (padded) path; one graph smaller than p.
    segments = [10, 5, 8, 3]
    n, p = sum(segments), 4
    q, k, v = qkv(n, heads=2, dim=3)
    perm = segment_perm(segments)
    out = random_batch_attention(q, k, v, p, perm=perm, segments=segments)
    assert rel_err(out, grouped_reference(q, k, v, groups_of(perm, p, segments))) <= 1e-12
    # Equal remainders (unmasked path) and a graph with no nodes in the batch.
    segments = [6, 0, 10, 2]
    perm = segment_perm(segments)
    q, k, v = qkv(18)
    out = random_batch_attention(q, k, v, 4, perm=perm, segments=segments)
    assert rel_err(out, grouped_reference(q, k, v, groups_of(perm, 4, segments))) <= 1e-12


def test_conv_matches_reference_under_its_own_grouping():
    g = dgl.batch([dgl.rand_graph(9, 20), dgl.rand_graph(6, 10), dgl.rand_graph(2, 2)])
    conv = randomize(RBAConv(5, 3, num_heads=2, group_size=4)).double()
    feat = torch.randn(17, 5, dtype=torch.float64)
    out, att = conv(g, feat, get_attention=True)
    groups = [torch.tensor(sorted(set(r[r >= 0].tolist()))) for r in att.members]
    groups = list({tuple(x.tolist()): x for x in groups}.values())
    assert sorted(len(x) for x in groups) == [1, 2, 2, 4, 4, 4]  # 9=4+4+1, 6=4+2, 2=2
    assert rel_err(out, conv_reference(conv, feat, groups)) <= 1e-12


def test_padding_never_leaks():
    # Large key/value biases: a zero padding row would have a non-zero key and value.
    segments = [7, 2, 5]  # remainders 3, 2, 1 of p = 4: masked path
    g = dgl.batch([dgl.rand_graph(s, s) for s in segments])
    conv = randomize(RBAConv(4, 3, num_heads=2, group_size=4)).double()
    with torch.no_grad():
        conv.fc_k.bias.fill_(5.0)
        conv.fc_v.bias.fill_(7.0)
    feat = torch.randn(14, 4, dtype=torch.float64)
    out, att = conv(g, feat, get_attention=True)
    groups = list({tuple(sorted(r[r >= 0].tolist())) for r in att.members})
    assert rel_err(out, conv_reference(conv, feat, [torch.tensor(x) for x in groups])) <= 1e-12
    pad = att.members < 0
    assert torch.all(att.weights.masked_select(pad[:, None, :].expand_as(att.weights)) == 0)
    assert torch.allclose(att.weights.sum(-1), torch.ones(14, 2, dtype=torch.float64))
    # A remainder group of one node attends only to itself.
    single = [i for i in range(14) if (att.members[i] >= 0).sum() == 1]
    assert single and torch.allclose(out[single], (feat[single] @ conv.fc_v.weight.T
                                                   + conv.fc_v.bias).view(-1, 2, 3))


def test_get_attention_reproduces_output():
    n, heads, dim = 23, 2, 3
    g = dgl.rand_graph(n, 40)
    conv = randomize(RBAConv(5, dim, num_heads=heads, group_size=8)).double()
    feat = torch.randn(n, 5, dtype=torch.float64)
    out, att = conv(g, feat, get_attention=True)
    assert isinstance(att, RBAAttention)
    assert att.members.shape == (n, 8) and att.weights.shape == (n, heads, 8)
    v = conv.fc_v(feat).view(n, heads, dim)
    vm = v[att.members.clamp_min(0)]  # (N, m, H, D)
    rebuilt = torch.einsum("nhm,nmhd->nhd", att.weights, vm)
    assert rel_err(out, rebuilt) <= 1e-12
    assert torch.all(att.members[torch.arange(n)].eq(torch.arange(n)[:, None]).any(1))  # self in group


def test_gradcheck_functional_and_conv():
    segments = [5, 3, 6]  # p = 4: remainders 1, 3, 2 (masked path) + full groups
    q, k, v = (x.requires_grad_() for x in qkv(14, heads=1, dim=2))
    perm = segment_perm(segments)
    assert torch.autograd.gradcheck(
        lambda a, b, c: random_batch_attention(a, b, c, 4, perm=perm, segments=segments), (q, k, v))
    q, k, v = (x.requires_grad_() for x in qkv(9, heads=1, dim=2))
    perm = torch.randperm(9)
    assert torch.autograd.gradcheck(lambda a, b, c: random_batch_attention(a, b, c, 4, perm=perm), (q, k, v))
    g = dgl.rand_graph(7, 10)
    conv = randomize(RBAConv(3, 2, num_heads=2, group_size=3, eval_mode="mean", eval_repeats=2)).double().eval()
    feat = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: conv(g, x), (feat,))


def test_no_saved_tensor_of_size_n_p():
    """Autograd keeps O(N H D) per layer: nothing N x p (or N x p x p) is saved for backward."""
    n, p, heads, dim = 2048 + 100, 512, 2, 4
    q, k, v = (x.requires_grad_() for x in qkv(n, heads, dim, dtype=torch.float32))
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = random_batch_attention(q, k, v, p)
    out.square().sum().backward()
    assert max(sizes) <= 2 * n * heads * dim < n * p


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize("mode", ["train", "fixed", "mean", "full"])
def test_batched_graphs_never_mix(mode):
    g = dgl.batch([dgl.rand_graph(7, 14), dgl.rand_graph(9, 18), dgl.rand_graph(4, 4)])
    conv = randomize(RBAConv(4, 3, num_heads=2, group_size=3, eval_mode=mode if mode != "train" else "fixed",
                             eval_repeats=3)).double()
    conv.train(mode == "train")
    feat = torch.randn(20, 4, dtype=torch.float64)
    torch.manual_seed(1)
    out1, att = conv(g, feat, get_attention=True)
    feat2 = feat.clone()
    feat2[7:16] = torch.randn(9, 4, dtype=torch.float64) * 10  # perturb graph 2 only
    torch.manual_seed(1)
    out2 = conv(g, feat2)
    assert torch.equal(out1[:7], out2[:7]) and torch.equal(out1[16:], out2[16:])
    assert not torch.allclose(out1[7:16], out2[7:16])
    gid = torch.repeat_interleave(torch.arange(3), torch.tensor([7, 9, 4]))
    members = att.members.reshape(-1, 20, att.members.shape[-1])
    for m in members:  # every member of node i's group is in node i's graph
        assert torch.all((m < 0) | (gid[m.clamp_min(0)] == gid[:, None]))


# ----------------------------------------------------------------------------- randomness


def test_training_draws_fresh_groupings_that_repeat_with_the_seed():
    g = dgl.rand_graph(40, 80)
    conv = randomize(RBAConv(4, 3, num_heads=2, group_size=8)).train()
    feat = torch.randn(40, 4)
    torch.manual_seed(123)
    a, b = conv(g, feat), conv(g, feat)
    torch.manual_seed(123)
    c = conv(g, feat)
    assert not torch.allclose(a, b)
    assert torch.equal(a, c)


def test_functional_generator_and_default_generator():
    q, k, v = qkv(30)
    out = [random_batch_attention(q, k, v, 4, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(out[0], out[1]) and not torch.allclose(out[0], out[2])


def test_eval_fixed_repeats_and_leaves_global_generator_alone():
    g = dgl.rand_graph(50, 100)
    conv = randomize(RBAConv(4, 3, num_heads=2, group_size=8, eval_seed=3)).eval()
    feat = torch.randn(50, 4)
    state = torch.get_rng_state()
    a, b = conv(g, feat), conv(g, feat)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    other = RBAConv(4, 3, num_heads=2, group_size=8, eval_seed=4).eval()
    other.load_state_dict(conv.state_dict())
    assert not torch.allclose(a, other(g, feat))


@pytest.mark.parametrize("segments,p,expected", [
    ([7], 3, {(0, 0): 12 / 42}),  # groups 3, 3, 1
    ([4, 3], 2, {(0, 0): 4 / 12, (1, 1): 2 / 6, (0, 1): 0.0}),  # 2+2 | 2+1, never across
])
def test_co_grouping_probability(segments, p, expected):
    """P(i and j share a group) = sum_s s(s-1) / (n(n-1)) over the group sizes s of their graph."""
    n, draws = sum(segments), 2000
    counts = torch.tensor(segments) if len(segments) > 1 else None
    gid = torch.repeat_interleave(torch.arange(len(segments)), torch.tensor(segments))
    together = torch.zeros(n, n)
    for _ in range(draws):
        plan = random_plan(n, p, counts, None, torch.device("cpu"))
        sizes = [p] * plan.num_full + plan.rem_sizes
        label = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        group = torch.empty(n, dtype=torch.long)
        group[plan.order] = label  # group of every node
        together += (group[:, None] == group[None, :]).float()
    freq = together / draws
    for (a, b), prob in expected.items():
        pairs = (gid[:, None] == a) & (gid[None, :] == b) & ~torch.eye(n, dtype=torch.bool)
        sigma = max(math.sqrt(prob * (1 - prob) / draws), 1e-12)
        assert torch.all((freq[pairs] - prob).abs() <= 5 * sigma), (a, b)


def test_mean_mode_converges_to_the_expectation_over_partitions():
    n, p = 5, 2  # groups 2, 2, 1
    g = dgl.rand_graph(n, 8)
    conv = randomize(RBAConv(3, 2, num_heads=2, group_size=p)).double()
    feat = torch.randn(n, 3, dtype=torch.float64)
    heads = 2
    q = conv.fc_q(feat).view(n, heads, 2).detach()
    k = conv.fc_k(feat).view(n, heads, 2).detach()
    v = conv.fc_v(feat).view(n, heads, 2).detach()
    exact = torch.stack([random_batch_attention(q, k, v, p, perm=torch.tensor(s))
                         for s in itertools.permutations(range(n))]).mean(0)
    errs = {}
    with torch.no_grad():
        for r in (1, 16, 512):
            conv.eval_mode, conv.eval_repeats = "mean", r
            errs[r] = rel_err(conv.eval()(g, feat), exact)
    assert errs[16] < errs[1] and errs[512] < errs[1] / 4 and errs[512] < 0.05


def test_attention_dropout_only_in_training():
    g = dgl.rand_graph(20, 40)
    conv = randomize(RBAConv(4, 3, num_heads=2, group_size=32, attn_drop=0.5))
    feat = torch.randn(20, 4)
    ref = conv_reference(conv, feat, [torch.arange(20)])
    assert rel_err(conv.eval()(g, feat), ref) <= 1e-5
    assert rel_err(conv.train()(g, feat), ref) > 1e-3


def _dropout_chunk_reference(q, k, v, perm, p, per_chunk, dropout_p):
    """SDPA with dropout on ``per_chunk`` groups at a time, in group order: the calls the chunked
    CPU path makes, so the same seed gives the same masks; autograd keeps every mask here."""
    qg, kg, vg = (t[perm].reshape(-1, p, *t.shape[1:]).transpose(1, 2) for t in (q, k, v))  # (G, H, p, D)
    outs = [torch.nn.functional.scaled_dot_product_attention(
        qg[a:a + per_chunk], kg[a:a + per_chunk], vg[a:a + per_chunk], dropout_p=dropout_p)
        for a in range(0, qg.shape[0], per_chunk)]
    out = torch.cat(outs).transpose(1, 2).reshape(-1, *v.shape[1:])  # rows in group order
    return torch.empty_like(out).index_copy(0, perm, out)  # node order


@pytest.mark.parametrize("track", [True, False])
def test_cpu_attention_dropout_runs_in_chunks_with_the_masks_of_its_forward(monkeypatch, track):
    """Chunked CPU dropout: outputs and gradients equal a per-chunk SDPA with the same seed in
    float64, so the backward pass recomputed every chunk with its forward pass's mask."""
    import dgl_rbgt.nn.functional.grouping as grouping

    n, heads, dim, p = 80, 2, 4, 8  # 10 groups, chunks of 3 (the last one 1)
    monkeypatch.setattr(grouping, "DROPOUT_CHUNK_WEIGHTS", 3 * heads * p * p)
    q, k, v = (torch.randn(n, heads, dim, dtype=torch.float64, requires_grad=track) for _ in range(3))
    perm = torch.randperm(n)
    r = torch.randn(n, heads, dim, dtype=torch.float64)
    results = []
    for run in ("chunked", "reference"):
        torch.manual_seed(7)
        with torch.set_grad_enabled(track):
            if run == "chunked":
                out = random_batch_attention(q, k, v, p, perm=perm, dropout_p=0.4)
            else:
                out = _dropout_chunk_reference(q, k, v, perm, p, 3, 0.4)
        grads = torch.autograd.grad((out * r).sum(), (q, k, v)) if track else ()
        results.append((out, *grads))
    for ours, ref in zip(*results):
        assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    dropped = (results[0][0] - random_batch_attention(q, k, v, p, perm=perm)).abs().max()
    assert dropped > 1e-3  # dropout did act


def test_cpu_attention_dropout_never_keeps_all_weights_for_backward(monkeypatch):
    """Without chunks, SDPA's unfused kernel saves the (G, H, p, p) dropped weights for backward."""
    import dgl_rbgt.nn.functional.grouping as grouping

    n, heads, dim, p = 512, 2, 4, 16
    monkeypatch.setattr(grouping, "DROPOUT_CHUNK_WEIGHTS", 4 * heads * p * p)
    q, k, v = (torch.randn(n, heads, dim, requires_grad=True) for _ in range(3))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = random_batch_attention(q, k, v, p, dropout_p=0.3)
    weights = (n // p) * heads * p * p
    assert max(saved) <= n * heads * dim < weights  # q, k and v
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    monkeypatch.setattr(grouping, "DROPOUT_CHUNK_WEIGHTS", weights)  # one chunk: the unfused kernel
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        random_batch_attention(q, k, v, p, dropout_p=0.3)
    assert max(saved) >= weights


# ----------------------------------------------------------------------------- dtypes, devices, layer manners


def test_bfloat16_runs_close_to_float64():
    g = dgl.rand_graph(64, 100)
    conv = randomize(RBAConv(8, 4, num_heads=2, group_size=16)).eval()
    feat = torch.randn(64, 8)
    ref = conv.double()(g, feat.double())
    out = conv.to(torch.bfloat16)(g, feat.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert rel_err(out, ref) < 5e-2
    out.float().sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = dgl.rand_graph(300, 600)
    conv = randomize(RBAConv(8, 4, num_heads=2, group_size=32)).eval()
    feat = torch.randn(300, 8)
    cpu = conv(g, feat)
    gpu = conv.cuda()(g.to("cuda"), feat.cuda())
    assert rel_err(gpu.cpu(), cpu) < 1e-4  # same grouping: the eval generator lives on CPU


def test_residual_activation_reset_and_local_scope():
    g = dgl.rand_graph(10, 20)
    g.ndata["h"] = torch.ones(10, 1)
    conv = RBAConv(6, 3, num_heads=2, group_size=16, residual=True, activation=torch.relu).eval()
    assert isinstance(conv.res_fc, torch.nn.Identity)
    feat = torch.randn(10, 6)
    base = RBAConv(6, 3, num_heads=2, group_size=16).eval()
    base.load_state_dict(conv.state_dict(), strict=False)
    assert torch.allclose(conv(g, feat), torch.relu(base(g, feat) + feat.view(10, 2, 3)))
    assert set(g.ndata) == {"h"}
    conv2 = RBAConv(5, 3, num_heads=2, group_size=4, residual=True)
    assert isinstance(conv2.res_fc, torch.nn.Linear)
    before = conv2.fc_q.weight.clone()
    conv2.reset_parameters()
    assert not torch.equal(before, conv2.fc_q.weight) and torch.all(conv2.fc_q.bias == 0)
    assert "group_size=4" in repr(conv2)


def test_full_attention_conv_shares_parameters_and_limits_size():
    g = dgl.batch([dgl.rand_graph(6, 10), dgl.rand_graph(9, 10)])
    rba = randomize(RBAConv(4, 3, num_heads=2, group_size=64)).double()
    full = FullAttentionConv(4, 3, num_heads=2).double()
    full.load_state_dict(rba.state_dict())
    feat = torch.randn(15, 4, dtype=torch.float64)
    ref = conv_reference(rba, feat, [torch.arange(6), torch.arange(6, 15)])
    assert rel_err(full.train()(g, feat), ref) <= 1e-12
    assert rel_err(rba.eval()(g, feat), ref) <= 1e-12
    small = FullAttentionConv(4, 3, num_heads=2, max_nodes=8)
    with pytest.raises(DGLError, match="full_max_nodes=8"):
        small(g, feat.float())
    rba_full = RBAConv(4, 3, num_heads=2, group_size=2, eval_mode="full", full_max_nodes=8).eval()
    with pytest.raises(DGLError, match="got a graph with 9 nodes"):
        rba_full(g, feat.float())


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(group_size=0), ValueError, "group_size must be >= 1"),
    (dict(group_size=2.5), TypeError, "group_size must be an int"),
    (dict(group_size=True), TypeError, "group_size must be an int"),
    (dict(num_heads=0), ValueError, "num_heads must be >= 1"),
    (dict(in_feats=0), ValueError, "in_feats must be >= 1"),
    (dict(eval_mode="median"), ValueError, r"eval_mode must be one of \['fixed', 'mean', 'full'\]"),
    (dict(eval_repeats=0), ValueError, "eval_repeats must be >= 1"),
    (dict(eval_seed=-1), ValueError, "eval_seed must be >= 0"),
    (dict(attn_drop=1.0), ValueError, r"attn_drop must be in \[0, 1\)"),
    (dict(feat_drop="x"), TypeError, "feat_drop must be a float"),
    (dict(activation=3), TypeError, "activation must be callable"),
])
def test_constructor_errors(kwargs, err, match):
    args = dict(in_feats=4, out_feats=2, num_heads=2, group_size=4)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        RBAConv(**args)


def test_forward_errors():
    conv = RBAConv(4, 2, num_heads=2, group_size=4)
    g = dgl.rand_graph(5, 8)
    with pytest.raises(TypeError, match="graph must be a dgl.DGLGraph"):
        conv(torch.zeros(5, 5), torch.randn(5, 4))
    with pytest.raises(ValueError, match="feat must have 5 rows"):
        conv(g, torch.randn(6, 4))
    with pytest.raises(ValueError, match="feat must have last dimension 4"):
        conv(g, torch.randn(5, 3))
    with pytest.raises(ValueError, match="feat must have 2 dimensions"):
        conv(g, torch.randn(5, 1, 4))
    with pytest.raises(TypeError, match="feat must be a floating-point tensor"):
        conv(g, torch.ones(5, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="feat must be a torch.Tensor"):
        conv(g, [[0.0] * 4] * 5)
    with pytest.raises(TypeError, match="feat has dtype torch.float64 but the layer's parameters are torch.float32"):
        conv(g, torch.randn(5, 4, dtype=torch.float64))
    for bad in (float("nan"), float("inf")):
        feat = torch.randn(5, 4)
        feat[2, 1] = bad
        with pytest.raises(ValueError, match="feat contains NaN or Inf"):
            conv(g, feat)
    with pytest.raises(DGLError, match="graph has no nodes"):
        conv(dgl.graph(([], []), num_nodes=0), torch.randn(0, 4))
    hetero = dgl.heterograph({("a", "r", "b"): ([0, 1], [1, 0]), ("b", "s", "a"): ([0], [1])})
    with pytest.raises(DGLError, match="graph must be homogeneous"):
        conv(hetero, torch.randn(2, 4))
    block = dgl.to_block(g)
    with pytest.raises(DGLError, match="graph is a block"):
        conv(block, torch.randn(block.num_src_nodes(), 4))


def test_functional_errors():
    q, k, v = qkv(6)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        random_batch_attention(q, k, v, 0)
    with pytest.raises(TypeError, match="group_size must be an int"):
        random_batch_attention(q, k, v, 2.0)
    with pytest.raises(ValueError, match="k must have the shape of q"):
        random_batch_attention(q, k[:5], v, 2)
    with pytest.raises(ValueError, match="v must have the same nodes and heads as q"):
        random_batch_attention(q, k, v[:, :1], 2)
    with pytest.raises(TypeError, match="q, k, v must share one dtype"):
        random_batch_attention(q, k.float(), v, 2)
    with pytest.raises(ValueError, match="q must have 3 dimensions"):
        random_batch_attention(q[:, 0], k, v, 2)
    bad = q.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="q contains NaN or Inf"):
        random_batch_attention(bad, k, v, 2)
    with pytest.raises(ValueError, match="segments must sum to the number of nodes 6"):
        random_batch_attention(q, k, v, 2, segments=[3, 2])
    with pytest.raises(ValueError, match="segments must be >= 0"):
        random_batch_attention(q, k, v, 2, segments=[8, -2])
    with pytest.raises(TypeError, match="segments must hold integers"):
        random_batch_attention(q, k, v, 2, segments=torch.tensor([3.0, 3.0]))
    with pytest.raises(TypeError, match="segments must be a 1-D integer tensor or a sequence of ints"):
        random_batch_attention(q, k, v, 2, segments="3,3")
    with pytest.raises(ValueError, match=r"perm must be a permutation of 0..5"):
        random_batch_attention(q, k, v, 2, perm=torch.tensor([0, 0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match=r"perm must have shape \(6,\)"):
        random_batch_attention(q, k, v, 2, perm=torch.arange(5))
    with pytest.raises(TypeError, match="perm must be an int64 tensor"):
        random_batch_attention(q, k, v, 2, perm=torch.arange(6.0))
    with pytest.raises(ValueError, match="perm mixes graphs"):
        random_batch_attention(q, k, v, 2, segments=[3, 3], perm=torch.tensor([0, 1, 3, 2, 4, 5]))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        random_batch_attention(q, k, v, 2, generator=0)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\)"):
        random_batch_attention(q, k, v, 2, dropout_p=1.5)
    with pytest.raises(ValueError, match="q has no rows"):
        random_batch_attention(q[:0], k[:0], v[:0], 2)


def test_in_feats_pair_and_default_heads_follow_dgl():
    """Like DGL layers: in_feats may be a (src, dst) pair (equal here: attention runs over one
    node set), and num_heads defaults to 1 as in every layer of dgl_rbgt."""
    g, feat = dgl.rand_graph(9, 20), torch.randn(9, 5)
    assert RBAConv((5, 5), 4, group_size=4)(g, feat).shape == (9, 1, 4)
    assert FullAttentionConv((5, 5), 4)(g, feat).shape == (9, 1, 4)
    with pytest.raises(ValueError, match=r"in_feats must be an int or a pair of equal ints"):
        RBAConv((5, 3), 4)
    assert not isinstance(FullAttentionConv(5, 4), RBAConv)  # siblings, not a group_size trick
