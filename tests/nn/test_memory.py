"""Recurrent memory transformer: both schedules against a plain float64 recurrence, exactness
between schedules (values and gradients), step counts, orders, batched graphs, errors."""
import math
import subprocess
import sys
from pathlib import Path

import dgl
import pytest
import torch
import torch.nn.functional as F
from dgl.base import DGLError

from dgl_rbgt.nn.functional.memory import (
    MemoryWeights,
    memory_recurrence,
    num_steps,
    shuffle_within_graphs,
)
from dgl_rbgt.nn.functional import memory as memory_core
from dgl_rbgt.nn.memory import MemoryTransformer

# ----------------------------------------------------------------------------- references


def ref_layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ref_mha(x, w_qkv, b_qkv, heads):
    """Plain softmax multi-head attention of every row of x (T, d) over all rows, head by head."""
    d = x.shape[1]
    size = d // heads
    qkv = x @ w_qkv + b_qkv
    out = torch.empty_like(x)
    for h in range(heads):
        cols = slice(h * size, (h + 1) * size)
        q, k, v = qkv[:, cols], qkv[:, d:][:, cols], qkv[:, 2 * d:][:, cols]
        out[:, cols] = torch.softmax(q @ k.T / math.sqrt(size), dim=-1) @ v
    return out


def ref_layer(x, w, l, heads):
    """One post-norm transformer layer (layer l of the stacked weights) on tokens x (T, d)."""
    a = ref_layer_norm(x + ref_mha(x, w.w_qkv[l], w.b_qkv[l], heads) @ w.w_out[l], w.norm1_weight[l], w.norm1_bias[l])
    hidden = a @ w.w_ff1[l] + w.b_ff1[l]
    ff = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2))) @ w.w_ff2[l] + w.b_ff2[l]
    return ref_layer_norm(a + ff, w.norm2_weight[l], w.norm2_bias[l])


def ref_graph(x, w, heads, p, passes):
    """The recurrence for one graph whose rows x are already in order, with loops over s and l."""
    layers, m = w.memory.shape[:2]
    segments = [x[i:i + p] for i in range(0, x.shape[0], p)]
    memory = [w.memory[l] for l in range(layers)]
    outs = []
    for h in segments:
        for l in range(layers):
            y = ref_layer(torch.cat([memory[l], h]), w, l, heads)
            memory[l], h = y[:m], y[m:]
        outs.append(h)
    if passes == 2:  # every segment reads the final memories
        outs = []
        for h in segments:
            for l in range(layers):
                h = ref_layer(torch.cat([memory[l], h]), w, l, heads)[m:]
            outs.append(h)
    return torch.cat(outs), torch.stack(memory)


def ref_recurrence(x, w, heads, p, order, sizes, passes):
    """Reference over a batch: every graph on its own (no mixing, own memory)."""
    out = torch.full_like(x, float("nan"))
    memories, start = [], 0
    for n in sizes:
        nodes = order[start:start + n]
        out[nodes], mem = ref_graph(x[nodes], w, heads, p, passes)
        memories.append(mem)
        start += n
    return out, torch.stack(memories, 1)


def ref_chained(x, w, heads, p, order, sizes, passes, chains):
    """Reference with ``chains`` recurrences per graph: a graph's S segments in runs of
    ceil(S / chains), each run its own recurrence from the learned memory; the read-out pass
    reads all runs' final memories side by side."""
    layers, m = w.memory.shape[:2]
    out = torch.full_like(x, float("nan"))
    memories, start = [], 0
    for n in sizes:
        rows = x[order[start:start + n]]
        per_chain = math.ceil(math.ceil(n / p) / chains) * p
        outs, mems = [], []
        for c in range(chains):
            part = rows[c * per_chain:(c + 1) * per_chain]
            if len(part):
                o, mem = ref_graph(part, w, heads, p, passes=1)
                outs.append(o)
            else:  # an empty chain keeps the learned memory
                mem = w.memory
            mems.append(mem)
        joined = torch.cat(mems, 1)  # (L, chains * m, d)
        if passes == 2:
            outs = []
            for i in range(0, n, p):
                h = rows[i:i + p]
                for l in range(layers):
                    h = ref_layer(torch.cat([joined[l], h]), w, l, heads)[chains * m:]
                outs.append(h)
        out[order[start:start + n]] = torch.cat(outs)
        memories.append(joined)
        start += n
    return out, torch.stack(memories, 1)


def random_weights(layers, m, d, f, dtype=torch.float64, requires_grad=False):
    shapes = [(layers, m, d), (layers, d, 3 * d), (layers, 3 * d), (layers, d, d), (layers, d), (layers, d),
              (layers, d, f), (layers, f), (layers, f, d), (layers, d), (layers, d), (layers, d)]
    scales = [1.0, d ** -0.5, 0.5, d ** -0.5, 0.5, 0.5, d ** -0.5, 0.5, f ** -0.5, 0.5, 0.5, 0.5]
    w = MemoryWeights(*(s * torch.randn(shape, dtype=dtype) for shape, s in zip(shapes, scales)))
    with torch.no_grad():
        w.norm1_weight.add_(1.0)
        w.norm2_weight.add_(1.0)
    return MemoryWeights(*(t.requires_grad_(requires_grad) for t in w))


def randomize(layer):
    """Every parameter random, the ones that start at zero or one included, so memory matters."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() < 3 or name == "memory" else p.shape[1] ** -0.5))
    return layer


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def batch_order(sizes):
    return shuffle_within_graphs(sizes, torch.Generator().manual_seed(int(torch.randint(1000, ()))))


# cases: (graph sizes, p, L, m): S = 1, S < L, L = 1, m = 0, N % p != 0, batched graphs.
CASES = [
    ([7], 8, 3, 2),  # S = 1
    ([10], 4, 4, 3),  # S = 3 < L = 4, N % p != 0
    ([12], 4, 1, 2),  # L = 1
    ([11], 3, 3, 0),  # m = 0, N % p != 0
    ([9, 3, 14], 4, 3, 2),  # batched, different segment counts and remainders
    ([5, 1, 9], 4, 2, 0),  # batched with m = 0 (empty cells must not give NaN)
]


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("sizes,p,layers,m", CASES)
@pytest.mark.parametrize("passes", [1, 2])
@pytest.mark.parametrize("cells_per_call", [None, 1, 2])
def test_both_schedules_match_plain_reference(monkeypatch, sizes, p, layers, m, passes, cells_per_call):
    # cells_per_call: how many cells one batched call may take (None: all of a step; 1 and 2
    # force the chunked paths that long cells take).
    if cells_per_call is not None:
        monkeypatch.setattr(memory_core, "CELL_TOKENS", cells_per_call * len(sizes) * (m + p))
    d, heads = 8, 2
    w = random_weights(layers, m, d, 16)
    x = torch.randn(sum(sizes), d, dtype=torch.float64)
    order = batch_order(sizes)
    ref_out, ref_mem = ref_recurrence(x, w, heads, p, order, sizes, passes)
    for schedule in ("diagonal", "sequential"):
        for grad in (True, False):  # autograd path and the bounded no-grad path
            with torch.set_grad_enabled(grad):
                res = memory_recurrence(x, w, heads, p, order=order, graph_sizes=sizes, schedule=schedule,
                                        passes=passes)
            assert rel_err(res.out, ref_out) <= 1e-12, (schedule, grad)
            if m:
                assert rel_err(res.memory, ref_mem) <= 1e-12, (schedule, grad)


@pytest.mark.parametrize("sizes,p,layers,m", CASES)
@pytest.mark.parametrize("passes", [1, 2])
@pytest.mark.parametrize("chains", [2, 3])
def test_chains_match_plain_reference(sizes, p, layers, m, passes, chains):
    d, heads = 8, 2
    w = random_weights(layers, m, d, 16)
    x = torch.randn(sum(sizes), d, dtype=torch.float64)
    order = batch_order(sizes)
    ref_out, ref_mem = ref_chained(x, w, heads, p, order, sizes, passes, chains)
    for schedule in ("diagonal", "sequential"):
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                res = memory_recurrence(x, w, heads, p, order=order, graph_sizes=sizes, schedule=schedule,
                                        passes=passes, chains=chains)
            assert res.memory.shape == (layers, len(sizes), chains * m, d)
            assert rel_err(res.out, ref_out) <= 1e-12, (schedule, grad)
            if m:
                assert rel_err(res.memory, ref_mem) <= 1e-12, (schedule, grad)
    # The reference itself: one chain is the plain recurrence.
    one_out, one_mem = ref_chained(x, w, heads, p, order, sizes, passes, 1)
    plain_out, plain_mem = ref_recurrence(x, w, heads, p, order, sizes, passes)
    assert torch.equal(one_out, plain_out) and torch.equal(one_mem, plain_mem)


def test_chains_take_fewer_larger_steps():
    # 100 nodes in segments of 4: S = 25; 4 chains of 7, 7, 7, 4 segments run side by side.
    w = random_weights(3, 2, 8, 16)
    x = torch.randn(100, 8, dtype=torch.float64)
    res = memory_recurrence(x, w, 2, 4, chains=4)
    assert res.num_steps == 7 + 3 - 1
    assert memory_recurrence(x, w, 2, 4, chains=4, schedule="sequential").num_steps == 7 * 3
    assert memory_core.chain_sizes([100], 4, 4) == [28, 28, 28, 16]
    assert memory_core.chain_sizes([5, 0], 4, 3) == [4, 1, 0, 0, 0, 0]
    # More chains than segments: one segment per chain, the rest empty.
    assert memory_recurrence(x, w, 2, 4, chains=40).num_steps == 1 + 3 - 1


@pytest.mark.parametrize("sizes,p,layers,m", CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("cells_per_call", [None, 1, 2])
@pytest.mark.parametrize("chains", [1, 3])
def test_diagonal_equals_sequential_values_and_gradients(monkeypatch, sizes, p, layers, m, dtype, tol,
                                                         cells_per_call, chains):
    if cells_per_call is not None:
        monkeypatch.setattr(memory_core, "CELL_TOKENS", cells_per_call * len(sizes) * chains * (m + p))
    layer = randomize(MemoryTransformer(5, 8, 2, layers, p, m, passes=2, chains=chains)).to(dtype).eval()
    graph = dgl.batch([dgl.rand_graph(n, n) for n in sizes])
    feat = torch.randn(sum(sizes), 5, dtype=dtype)
    r_out = torch.randn(sum(sizes), 8, dtype=dtype)
    r_mem = torch.randn(layers, len(sizes), chains * m, 8, dtype=dtype)
    results = {}
    for schedule in ("diagonal", "sequential"):
        layer.zero_grad()
        layer.schedule = schedule
        out, memory = layer(graph, feat, get_memory=True)
        ((out * r_out).sum() + (memory * r_mem).sum()).backward()
        results[schedule] = out, memory, {n: p.grad.clone() for n, p in layer.named_parameters()}
    (out_d, mem_d, grad_d), (out_s, mem_s, grad_s) = results["diagonal"], results["sequential"]
    assert rel_err(out_d, out_s) <= tol
    if m:
        assert rel_err(mem_d, mem_s) <= tol
    for name, g in grad_s.items():
        if name == "memory" and not m:
            continue
        assert rel_err(grad_d[name], g) <= tol, name


def test_no_memory_one_pass_is_attention_within_groups():
    # m = 0, one pass: each layer is plain MHA (+ LayerNorm, FFN) inside the same groups of p.
    n, p, d, heads = 14, 4, 6, 3
    w = random_weights(2, 0, d, 12)
    x = torch.randn(n, d, dtype=torch.float64)
    order = torch.randperm(n)
    out = memory_recurrence(x, w, heads, p, order=order).out
    ref = torch.empty_like(x)
    for start in range(0, n, p):
        group = order[start:start + p]
        h = x[group]
        for l in range(2):
            a = ref_layer_norm(h + ref_mha(h, w.w_qkv[l], w.b_qkv[l], heads) @ w.w_out[l],
                               w.norm1_weight[l], w.norm1_bias[l])
            ff = F.gelu(a @ w.w_ff1[l] + w.b_ff1[l]) @ w.w_ff2[l] + w.b_ff2[l]
            h = ref_layer_norm(a + ff, w.norm2_weight[l], w.norm2_bias[l])
        ref[group] = h
    assert rel_err(out, ref) <= 1e-12


@pytest.mark.parametrize("schedule", ["diagonal", "sequential"])
@pytest.mark.parametrize("passes", [1, 2])
def test_gradcheck(schedule, passes):
    sizes, p, heads = [5, 3], 2, 2
    w = random_weights(2, 2, 4, 8, requires_grad=True)
    x = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    order = batch_order(sizes)

    def fn(x, *tensors):
        res = memory_recurrence(x, MemoryWeights(*tensors), heads, p, order=order, graph_sizes=sizes,
                                schedule=schedule, passes=passes)
        return res.out, res.memory

    assert torch.autograd.gradcheck(fn, (x, *w), fast_mode=True)


@pytest.mark.parametrize("sizes,p,layers", [([10], 4, 4), ([7], 8, 3), ([9, 3, 14], 4, 3), ([30], 2, 1)])
def test_step_counts_are_real(monkeypatch, sizes, p, layers):
    # Count the attention calls the recurrence makes: one per step (all active cells batched).
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(a[0].shape[0]) or sdpa(*a, **k))
    w = random_weights(layers, 2, 8, 16)
    x = torch.randn(sum(sizes), 8, dtype=torch.float64)
    segments = max(-(-n // p) for n in sizes)
    for schedule, expected in (("diagonal", segments + layers - 1), ("sequential", segments * layers)):
        calls.clear()
        res = memory_recurrence(x, w, 2, p, graph_sizes=sizes, schedule=schedule)
        assert len(calls) == res.num_steps == expected == num_steps(segments, layers, schedule)
    # Diagonal steps hold min(t + 1, L, S, ...) cells of B graphs each; together S * L cells.
    calls.clear()
    memory_recurrence(x, w, 2, p, graph_sizes=sizes, schedule="diagonal")
    assert sum(calls) == segments * layers * len(sizes)
    assert max(calls) == min(segments, layers) * len(sizes)


def test_readout_pass_lets_early_segments_see_later_ones():
    # d out[first segment] / d x[last segment]: zero with one pass, non-zero with the read-out.
    n, p = 12, 4
    w = random_weights(2, 2, 8, 16)
    x = torch.randn(n, 8, dtype=torch.float64, requires_grad=True)
    for passes, sees_later in ((1, False), (2, True)):
        out = memory_recurrence(x, w, 2, p, passes=passes).out
        (grad,) = torch.autograd.grad(out[:p].sum(), x, retain_graph=True)
        assert bool(grad[-p:].abs().max() > 1e-6) == sees_later
        (grad,) = torch.autograd.grad(out[-p:].sum(), x)
        assert float(grad[:p].abs().max()) > 1e-6  # the memory carries forward in both


# ----------------------------------------------------------------------------- orders, modes


def test_evaluation_is_seeded_and_schedule_independent():
    kwargs = dict(layers=3, segment_size=4, memory_tokens=2, seed=7)
    a = randomize(MemoryTransformer(5, 8, 2, **kwargs, schedule="diagonal"))
    b = MemoryTransformer(5, 8, 2, **kwargs, schedule="sequential")
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    g, feat = dgl.rand_graph(23, 40), torch.randn(23, 5)
    state = torch.get_rng_state()
    out = a(g, feat)
    assert torch.equal(out, a(g, feat))
    assert rel_err(b(g, feat), out) <= 1e-5
    assert torch.equal(torch.get_rng_state(), state)  # evaluation leaves the global generator alone
    b.seed = 8
    assert rel_err(b(g, feat), out) > 1e-3  # another seed, another order


def test_training_order_is_fresh_but_seeded():
    layer = randomize(MemoryTransformer(5, 8, 2, 2, 4, 2))
    g, feat = dgl.rand_graph(20, 40), torch.randn(20, 5)
    torch.manual_seed(1)
    first = layer(g, feat)
    assert rel_err(layer(g, feat), first) > 1e-3
    torch.manual_seed(1)
    assert torch.equal(layer(g, feat), first)


def test_eval_mean_is_mean_over_seeded_orders():
    layer = randomize(MemoryTransformer(5, 8, 2, 2, 4, 2, eval_mode="mean", eval_repeats=3, seed=3)).eval()
    g, feat = dgl.batch([dgl.rand_graph(9, 9), dgl.rand_graph(6, 6)]), torch.randn(15, 5)
    out, memory = layer(g, feat, get_memory=True)
    assert memory.shape == (3, 2, 2, 2, 8) and layer.last_num_steps == 3 * (3 + 2 - 1)
    gen = torch.Generator().manual_seed(3)
    h = layer.norm_in(layer.fc_in(feat))
    outs = [memory_recurrence(h, layer.memory_weights(), 2, 4, order=shuffle_within_graphs([9, 6], gen),
                              graph_sizes=[9, 6], passes=2).out for _ in range(3)]
    assert rel_err(out, sum(outs) / 3) <= 1e-6


def test_batch_equals_graphs_one_by_one():
    sizes, p = [9, 4, 13], 4
    w = random_weights(3, 2, 8, 16)
    x = torch.randn(sum(sizes), 8, dtype=torch.float64)
    orders = [torch.randperm(n) for n in sizes]
    offsets = [0, 9, 13]
    order = torch.cat([o + s for o, s in zip(orders, offsets)])
    res = memory_recurrence(x, w, 2, p, order=order, graph_sizes=sizes, passes=2)
    for b, (n, start) in enumerate(zip(sizes, offsets)):
        alone = memory_recurrence(x[start:start + n], w, 2, p, order=orders[b], passes=2)
        assert rel_err(res.out[start:start + n], alone.out) <= 1e-12
        assert rel_err(res.memory[:, b], alone.memory[:, 0]) <= 1e-12


@pytest.mark.parametrize("passes", [1, 2])
def test_memory_never_crosses_graphs(passes):
    layer = randomize(MemoryTransformer(5, 8, 2, 3, 4, 2, passes=passes)).eval()
    g = dgl.batch([dgl.rand_graph(10, 10), dgl.rand_graph(7, 7), dgl.rand_graph(12, 12)])
    feat = torch.randn(29, 5)
    out = layer(g, feat)
    changed = feat.clone()
    changed[10:17] = torch.randn(7, 5)  # graph 2 only
    out2 = layer(g, changed)
    assert torch.equal(out[:10], out2[:10]) and torch.equal(out[17:], out2[17:])
    assert not torch.allclose(out[10:17], out2[10:17])


def test_huge_finite_features_give_finite_output():
    layer = randomize(MemoryTransformer(5, 8, 2, 2, 4, 2))
    g, feat = dgl.rand_graph(10, 20), torch.randn(10, 5)
    for scale in (1e20, 1e36):
        huge = feat * scale
        out = layer(g, huge)
        assert torch.isfinite(out).all()
        out.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    # Only the huge rows are rescaled: LayerNorm makes the output scale-free (up to eps).
    layer.eval()
    assert rel_err(layer(g, feat * 1e20), layer(g, feat * 1e10)) <= 1e-4


def test_dropout_only_in_training():
    layer = randomize(MemoryTransformer(5, 8, 2, 2, 4, 2, dropout=0.3))
    g, feat = dgl.rand_graph(12, 20), torch.randn(12, 5)
    torch.manual_seed(0)
    a = layer(g, feat)
    torch.manual_seed(0)
    layer.schedule = "sequential"
    assert a.shape == layer(g, feat).shape and torch.isfinite(a).all()
    layer.eval()
    assert torch.equal(layer(g, feat), layer(g, feat))


def test_functional_core_does_not_import_dgl():
    path = Path(__file__).resolve().parents[2] / "dgl_rbgt" / "nn" / "functional" / "memory.py"
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('core', {str(path)!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print('dgl' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(segment_size=0), ValueError, "segment_size must be >= 1"),
    (dict(memory_tokens=-1), ValueError, "memory_tokens must be >= 0"),
    (dict(layers=0), ValueError, "layers must be >= 1"),
    (dict(hidden=10, num_heads=4), ValueError, "hidden must be divisible by num_heads"),
    (dict(schedule="wavefront"), ValueError, r"schedule must be one of \['diagonal', 'sequential'\]"),
    (dict(passes=3), ValueError, r"passes must be one of \[1, 2\]"),
    (dict(chains=0), ValueError, "chains must be >= 1"),
    (dict(eval_mode="full"), ValueError, r"eval_mode must be one of \['fixed', 'mean'\]"),
    (dict(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    (dict(segment_size=2.5), TypeError, "segment_size must be an int"),
])
def test_bad_arguments(kwargs, exc, match):
    args = dict(in_feats=5, hidden=8, num_heads=2, layers=2, segment_size=4, memory_tokens=2) | kwargs
    with pytest.raises(exc, match=match):
        MemoryTransformer(**args)


def test_bad_inputs():
    layer = MemoryTransformer(5, 8, 2, 2, 4, 2)
    g = dgl.rand_graph(6, 10)
    with pytest.raises(ValueError, match="schedule must be one of"):
        layer.schedule = "parallel"
    with pytest.raises(DGLError, match="no nodes"):
        layer(dgl.graph(([], []), num_nodes=0), torch.randn(0, 5))
    bad = torch.randn(6, 5)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(g, bad)
    hetero = dgl.heterograph({("a", "r", "b"): ([0], [1])})
    with pytest.raises(DGLError, match="homogeneous"):
        layer(hetero, torch.randn(2, 5))
    with pytest.raises(ValueError, match="last dimension 5"):
        layer(g, torch.randn(6, 4))
    with pytest.raises(ValueError, match="6 rows"):
        layer(g, torch.randn(7, 5))
    with pytest.raises(TypeError, match="torch.float64.*torch.float32"):
        layer(g, torch.randn(6, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        layer(g, torch.ones(6, 5, dtype=torch.int64))


def test_bad_functional_inputs():
    w = random_weights(2, 2, 8, 16)
    x = torch.randn(6, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="order must be a permutation"):
        memory_recurrence(x, w, 2, 4, order=torch.tensor([0, 1, 2, 3, 4, 4]))
    with pytest.raises(ValueError, match="order must be a permutation"):  # mixes the two graphs
        memory_recurrence(x, w, 2, 4, order=torch.tensor([5, 1, 2, 3, 4, 0]), graph_sizes=[3, 3])
    with pytest.raises(ValueError, match="graph_sizes must sum to the number of nodes 6"):
        memory_recurrence(x, w, 2, 4, graph_sizes=[3, 4])
    with pytest.raises(ValueError, match="weights.w_qkv must have 2 layers.*torch.float64"):
        memory_recurrence(x, w._replace(w_qkv=w.w_qkv.float()), 2, 4)
    with pytest.raises(ValueError, match="divisible by num_heads = 3"):
        memory_recurrence(x, w, 3, 4)
    with pytest.raises(ValueError, match="chains must be an int >= 1, got 0"):
        memory_recurrence(x, w, 2, 4, chains=0)
    with pytest.raises(ValueError, match="chains must be an int >= 1, got 0"):
        memory_core.chain_sizes([5], 4, 0)
    with pytest.raises(ValueError, match="segment_size must be an int >= 1, got 0"):
        memory_core.chain_sizes([5], 0, 2)
    with pytest.raises(ValueError, match="graph_sizes must be a non-empty sequence of ints >= 0"):
        memory_core.chain_sizes([5, -1], 4, 2)
