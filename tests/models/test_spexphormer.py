"""ScoreEstimator and Spexphormer models: composition against plain references, the temperature
schedule, errors, and the two-stage pipeline through the training loop."""
import dgl
import pytest
import torch
import torch.nn.functional as F

from dgl_rbgt.models.spexphormer import ScoreEstimator, Spexphormer, table_blocks
from dgl_rbgt.nn.exphormer import ExphormerConv
from dgl_rbgt.nn.spexphormer import TableBlock
from dgl_rbgt.config import TrainSection
from dgl_rbgt.batching import FullGraph
from dgl_rbgt.train.loop import Trainer
from dgl_rbgt.train.metrics import get_metric
from dgl_rbgt.batching import TableBatching
from dgl_rbgt.transforms.edge_types import add_self_loops
from dgl_rbgt.transforms.expander import AddExpanderEdges
from dgl_rbgt.sampling import sparsify


def typed_graph(n: int = 60, e: int = 240) -> dgl.DGLGraph:
    g = add_self_loops(dgl.rand_graph(n, e))
    g.edata["etype"][: e // 4] = 1
    return g


def randomise(module: torch.nn.Module) -> None:
    """Random parameters and BatchNorm statistics, so the references test more than defaults."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)


def annealed_estimator():
    """A float64 estimator with random weights at an annealed temperature, in training mode, and a
    typed graph with features for it."""
    g = typed_graph()
    model = ScoreEstimator(5, 3, hidden=6, num_heads=2, layers=3).double()
    randomise(model)
    model.on_epoch_start(40)
    model.train()
    return model, g, torch.randn(60, 5, dtype=torch.float64)


def test_score_estimator_matches_plain_composition():
    model, g, feat = annealed_estimator()
    scores = model.attention_scores(g, feat)
    assert model.training  # mode restored
    model.eval()
    x = torch.relu(model.encoder[0](feat))
    want = []
    for layer in range(3):
        out, att = model.convs[layer](g, x, get_attention=True)
        want.append(att.mean(1).squeeze(-1))
        x = F.layer_norm(x + out.flatten(1), (6,), model.attn_norms[layer].weight, model.attn_norms[layer].bias)
        y = model.ffns[layer].net[3](torch.relu(model.ffns[layer].net[0](x)))
        x = F.layer_norm(x + y, (6,), model.ffn_norms[layer].weight, model.ffn_norms[layer].bias)
    torch.testing.assert_close(scores, torch.stack(want), rtol=0, atol=1e-12)
    torch.testing.assert_close(model(g, feat), model.head(x), rtol=0, atol=1e-12)
    # Each layer's scores sum to 1 over every node's in-edges.
    sums = torch.zeros(3, 60, dtype=torch.float64).index_add_(1, g.edges()[1], scores)
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-12)


def test_activation_checkpointing_changes_nothing():
    """checkpoint=True: the same loss and the same gradients (dropout included: the recomputed
    layer draws the same masks), one shared sparse layout for all layers, cleared on request."""
    g = typed_graph()
    feat = torch.randn(60, 5, dtype=torch.float64)
    labels = torch.randint(0, 3, (60,))
    plain = ScoreEstimator(5, 3, hidden=6, num_heads=2, layers=3, dropout=0.3).double()
    randomise(plain)
    ckpt = ScoreEstimator(5, 3, hidden=6, num_heads=2, layers=3, dropout=0.3, checkpoint=True).double()
    ckpt.load_state_dict(plain.state_dict())
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(7)
        loss = F.cross_entropy(model(g, feat), labels)
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    cache = ckpt.convs[0].structure_cache
    assert all(conv.structure_cache is cache for conv in ckpt.convs)
    assert cache.get(g, g.edata["etype"], lambda: None) is not None  # a hit: the layout is kept
    ckpt.clear_cache()
    assert cache.get(g, g.edata["etype"], lambda: "rebuilt") == "rebuilt"
    with pytest.raises(TypeError, match="checkpoint must be True or False"):
        ScoreEstimator(5, 3, checkpoint=1)


def test_temperature_schedule_and_checkpoint():
    model = ScoreEstimator(4, 2, layers=2, temperature_min=0.1, temperature_decay=0.5, temperature_wait=3)
    expected = {0: 1.0, 2: 1.0, 3: 1.0, 4: 0.5, 5: 0.25, 6: 0.125, 7: 0.1, 50: 0.1}
    for epoch, t in expected.items():
        model.on_epoch_start(epoch)
        assert model.temperature == pytest.approx(t)
        assert all(float(c.temperature) == pytest.approx(t) for c in model.convs)
    fresh = ScoreEstimator(4, 2, layers=2)
    fresh.load_state_dict(model.state_dict())  # the best checkpoint brings its temperature
    assert fresh.temperature == pytest.approx(0.1)


def test_spexphormer_full_graph_matches_exphormer_stack():
    """Spexphormer on full tables equals the same block built from ExphormerConv on the sampled
    graphs (eval mode, float64, parameters copied)."""
    g = typed_graph()
    nb = sparsify(g, torch.rand(2, g.num_edges()), [5, 3])
    model = Spexphormer(5, 4, hidden=6, num_heads=3, layers=2, edge_bias=False).double()
    randomise(model)
    model.eval()
    feat = torch.randn(60, 5, dtype=torch.float64)
    x = model.encoder(feat)
    for layer, sub in enumerate(nb.to_graphs()):
        ex = ExphormerConv(6, 2, 3, bias=False).double()
        ex.load_state_dict(model.convs[layer].state_dict())
        x = model.attn_norms[layer](x + ex(sub, x).flatten(1))
        x = model.ffn_norms[layer](x + model.ffns[layer](x))
    torch.testing.assert_close(model(nb, feat), model.head(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(model(table_blocks(nb), feat), model.head(x), rtol=0, atol=1e-12)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"hidden \(6\) must be divisible by num_heads \(4\)"):
        Spexphormer(5, 3, hidden=6, num_heads=4)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        Spexphormer(5, 3, dropout=1.0)
    with pytest.raises(ValueError, match="layers must be >= 1"):
        ScoreEstimator(5, 3, layers=0)
    with pytest.raises(ValueError, match=r"temperature_min must be a number in \(0, 1\]"):
        ScoreEstimator(5, 3, temperature_min=0.0)
    with pytest.raises(ValueError, match=r"temperature_decay must be a number in \(0, 1\]"):
        ScoreEstimator(5, 3, temperature_decay=1.5)
    with pytest.raises(ValueError, match="temperature_wait must be >= 0"):
        ScoreEstimator(5, 3, temperature_wait=-1)
    g = typed_graph()
    nb = sparsify(g, torch.rand(2, g.num_edges()), 3)
    model = Spexphormer(5, 3, hidden=4, layers=3)
    with pytest.raises(ValueError, match="got 2 table blocks for a model with 3 layers"):
        model(nb, torch.randn(60, 5))
    model = Spexphormer(5, 3, hidden=4, layers=2)
    with pytest.raises(TypeError, match=r"blocks\[1\] must be a TableBlock"):
        model([table_blocks(nb)[0], nb.tables[1]], torch.randn(60, 5))
    with pytest.raises(ValueError, match="feat must have 60 rows"):
        model(nb, torch.randn(59, 5))
    # Layer 0 keeps 10 destinations, so layer 1's table may only point at rows 0..9.
    bad = [TableBlock(nb.tables[0][:10], num_src=60), TableBlock(nb.tables[1][:10] + 10)]
    with pytest.raises(ValueError, match=r"table holds values in .* must lie in \[0, 10\)"):
        model(bad, torch.randn(60, 5))
    with pytest.raises(ValueError, match=r"feat must have 60 rows"):
        ScoreEstimator(5, 3)(g, torch.randn(59, 5))


def toy_graph(n=300, classes=3, seed=0):
    """Labels learnable from noisy one-hot features and same-class edges."""
    gen = torch.Generator().manual_seed(seed)
    label = torch.randint(0, classes, (n,), generator=gen)
    src = torch.randint(0, n, (n * 4,), generator=gen)
    same = torch.nonzero(label.unsqueeze(0) == label[src].unsqueeze(1))  # candidate partners
    pick = same[torch.randint(0, len(same), (len(src),), generator=gen)]
    dst = pick[:, 1]
    src = src[pick[:, 0]]
    g = dgl.to_bidirected(dgl.graph((src, dst), num_nodes=n))
    g.ndata["feat"] = F.one_hot(label, classes).float() + 1.0 * torch.randn(n, classes, generator=gen)
    g.ndata["label"] = label
    perm = torch.randperm(n, generator=gen)
    splits = {s: perm[i * n // 3:(i + 1) * n // 3] for i, s in enumerate(("train", "val", "test"))}
    return g, splits


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids OpenMP synchronisation costs on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_pipeline(g, splits, seed=0):
    torch.manual_seed(seed)  # model initialisation
    graph = add_self_loops(AddExpanderEdges(degree=2, seed=seed)(g))
    est = ScoreEstimator(3, 3, hidden=8, layers=2, temperature_wait=2, temperature_decay=0.8)
    cfg = TrainSection(epochs=30, lr=0.02, batching="full")
    Trainer(est, FullGraph(graph), graph.ndata["label"], splits, get_metric("accuracy"), cfg,
            seed=seed, progress=False).fit()
    scores = est.attention_scores(graph, graph.ndata["feat"])
    batching = TableBatching(graph, scores=scores, ks=[6, 4], batch_size=64, eval_repeats=2)
    model = Spexphormer(3, 3, hidden=16, num_heads=2, layers=2, dropout=0.1)
    cfg = TrainSection(epochs=40, lr=0.01, batching="neighbour_tables", batch_size=64)
    result = Trainer(model, batching, graph.ndata["label"], splits, get_metric("accuracy"), cfg,
                     seed=seed, progress=False).fit()
    return scores, result


def test_two_stage_pipeline_learns_and_repeats(one_thread):
    """estimator training -> attention_scores -> TableBatching (sparsify) -> Spexphormer, both
    stages through the one training loop; a second run with the same seed repeats exactly."""
    g, splits = toy_graph()
    scores, result = run_pipeline(g, splits)
    assert scores.shape[0] == 2
    # Chance is 1/3, the features alone give about 0.65, the neighbourhood mean about 0.97.
    assert result.summary["test_metric"] > 0.85, result.summary
    scores2, result2 = run_pipeline(g, splits)
    assert torch.equal(scores, scores2)
    assert result.summary["val_metric"] == result2.summary["val_metric"]


def test_sparse_csr_input_and_cached_projection():
    """A sparse CSR input gives the dense input's logits and gradients; without gradients the
    input projection is reused for the same tensor and recomputed when it or the weights change."""
    torch.manual_seed(0)
    g = add_self_loops(typed_graph())
    nb = sparsify(g, torch.rand(2, g.num_edges()), [3, 2])
    dense = torch.randn(g.num_nodes(), 80).double() * (torch.rand(g.num_nodes(), 80) < 0.05)
    model = Spexphormer(80, 3, hidden=8, layers=2, dropout=0.0).double()
    randomise(model)
    model.eval()
    out_dense = model(nb, dense)
    out_dense.square().sum().backward()
    grad_dense = model.encoder.weight.grad.clone()
    model.zero_grad()
    out_sparse = model(nb, dense.to_sparse_csr())
    out_sparse.square().sum().backward()
    torch.testing.assert_close(out_sparse, out_dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.encoder.weight.grad, grad_dense, rtol=0, atol=1e-12)
    with torch.no_grad():
        first = model(nb, dense)
        torch.testing.assert_close(model(nb, dense), first, rtol=0, atol=0)
        dense.mul_(2.0)  # in place: a new version of the same tensor
        torch.testing.assert_close(model(nb, dense), model(nb, dense.clone()), rtol=0, atol=1e-12)
        model.encoder.weight.mul_(0.5)  # the weights change: projected again
        torch.testing.assert_close(model(nb, dense), model(nb, dense.clone()), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="feat contains NaN or Inf"):
        model(nb, torch.full((g.num_nodes(), 80), float("nan"), dtype=torch.float64))


def test_full_graph_inference_in_chunks_matches_one_call(monkeypatch):
    """Evaluation on NeighbourTables runs layer by layer in chunks of destination rows: the same
    logits as the one-call full-graph path (blocks of all nodes), with compact tables too."""
    import dgl_rbgt.models.spexphormer as spex

    g = typed_graph(90, 400)
    nb = sparsify(g, torch.rand(2, g.num_edges()), [3, 2])
    model = Spexphormer(5, 3, hidden=8, num_heads=2, layers=2, dropout=0.0).double()
    randomise(model)
    model.eval()
    feat = torch.randn(90, 5, dtype=torch.float64)
    with torch.no_grad():
        want = model(table_blocks(nb), feat)
        monkeypatch.setattr(spex, "INFERENCE_ROWS", 16)  # 6 chunks, the last one short
        got = model(nb, feat)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    model.train()  # training-mode BatchNorm needs the whole batch: the one-call path
    with torch.no_grad():
        torch.testing.assert_close(model(nb, feat), model(table_blocks(nb), feat), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows", [1, 13, 60, 1000])
def test_layerwise_inference_equals_the_full_graph_pass(rows):
    """Scores and logits computed layer by layer in chunks of destinations equal the full-graph
    pass (float64, typed edges, chunks not dividing N, annealed temperature)."""
    model, g, feat = annealed_estimator()
    want = model.attention_scores(g, feat)
    got = model.attention_scores(g, feat, rows=rows)
    assert model.training  # mode restored
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.layerwise_inference(g, feat, rows=rows), model(g, feat), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="rows"):
        model.layerwise_inference(g, feat, rows=0)


def test_blocks_forward_with_full_neighbourhoods_equals_the_full_graph_rows():
    """On full L-hop neighbourhoods the block path is the full-graph forward, gradients included."""
    g = typed_graph()
    model = ScoreEstimator(5, 3, hidden=6, num_heads=2, layers=2).double()
    randomise(model)
    model.eval()
    feat = torch.randn(60, 5, dtype=torch.float64)
    seeds = torch.tensor([3, 17, 42, 5])
    input_nodes, output_nodes, blocks = dgl.dataloading.MultiLayerFullNeighborSampler(2).sample(g, seeds)
    out = model(blocks, feat[input_nodes])
    full = model(g, feat)
    torch.testing.assert_close(out, full[output_nodes], rtol=0, atol=1e-12)
    grads = torch.autograd.grad(out.sum(), list(model.parameters()), allow_unused=True)
    want = torch.autograd.grad(full[output_nodes].sum(), list(model.parameters()), allow_unused=True)
    for a, b in zip(grads, want):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="got 1 blocks for a model with 2 layers"):
        model(blocks[:1], feat[input_nodes])
    with pytest.raises(TypeError, match=r"blocks\[0\] must be a DGL block"):
        model([g, g], feat)
