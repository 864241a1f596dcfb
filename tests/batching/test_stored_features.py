"""Every batching gives a model the same inputs whether the features are stored in half precision
or as float32 copies of the same half values: storage changes memory, never results."""
import dgl
import pytest
import torch

from dgl_rbgt.batching import FullGraph, NeighborSampling, NodeBatches, TableBatching
from dgl_rbgt.models import GCN, RBTransformer, SAGE
from dgl_rbgt.models.spexphormer import ScoreEstimator, Spexphormer
from dgl_rbgt.transforms import CastFeatures
from dgl_rbgt.transforms.edge_types import add_self_loops


def _pair(n=120, e=600, dtype="float16"):
    """The same graph twice: features stored as ``dtype``, and as float32 copies of those values."""
    torch.manual_seed(0)
    g = add_self_loops(dgl.rand_graph(n, e))
    g.ndata["feat"] = torch.randn(n, 6)
    half = CastFeatures(dtype)(g)
    g.ndata["feat"] = half.ndata["feat"].float()
    return g, half


def _outputs(batching, model, nodes):
    with torch.no_grad():
        return [(b.output_nodes, b.run(model)) for b in batching.eval_batches(nodes)]


def _same(a, b):
    assert len(a) == len(b)
    for (nodes_a, out_a), (nodes_b, out_b) in zip(a, b):
        assert torch.equal(nodes_a, nodes_b)
        torch.testing.assert_close(out_a, out_b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_node_batches(dtype):
    g, half = _pair(dtype=dtype)
    model = RBTransformer(6, 3, hidden=8, num_heads=1, group_size=4).eval()
    nodes = torch.arange(120)
    for big in (10, 10**6):  # parts of a large graph; the whole of a small one
        _same(_outputs(NodeBatches(g, batch_size=50, eval_full_graph_nodes=big), model, nodes),
              _outputs(NodeBatches(half, batch_size=50, eval_full_graph_nodes=big), model, nodes))
    batch = next(NodeBatches(half, batch_size=50).train_batches(nodes, epoch=0))
    assert batch.run(model.train()).dtype == torch.float32


def test_full_graph_casts_for_a_model_that_does_not_project_stored_features():
    g, half = _pair()
    nodes = torch.arange(120)
    gcn = GCN(6, 3, hidden=8).eval()
    _same(_outputs(FullGraph(g), gcn, nodes), _outputs(FullGraph(half), gcn, nodes))
    estimator = ScoreEstimator(6, 3, hidden=4, num_heads=1, layers=2).eval()
    seen = []
    estimator.register_forward_pre_hook(lambda m, args: seen.append(args[1].dtype))
    _same(_outputs(FullGraph(g), estimator, nodes), _outputs(FullGraph(half), estimator, nodes))
    assert seen == [torch.float32, torch.float16]  # the estimator got the stored features as they are
    torch.testing.assert_close(estimator.attention_scores(half, half.ndata["feat"]),
                               estimator.attention_scores(g, g.ndata["feat"]), rtol=1e-6, atol=1e-7)


def test_stage1_training_step_is_the_same():
    g, half = _pair()
    labels = torch.randint(0, 3, (120,))
    grads = []
    for graph in (g, half):
        torch.manual_seed(1)
        model = ScoreEstimator(6, 3, hidden=4, num_heads=1, layers=2, checkpoint=True)
        batch = next(FullGraph(graph).train_batches(torch.arange(120), epoch=0))
        torch.nn.functional.cross_entropy(batch.run(model), labels).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_neighbor_sampling():
    g, half = _pair()
    model = SAGE(6, 3, hidden=8, layers=2).eval()
    nodes = torch.arange(120)
    torch.manual_seed(3)
    a = _outputs(NeighborSampling(g, fanouts=[3, 3], batch_size=40), model, nodes)
    torch.manual_seed(3)
    b = _outputs(NeighborSampling(half, fanouts=[3, 3], batch_size=40), model, nodes)
    _same(a, b)


def test_table_batching_batches_and_whole_graph_evaluation():
    g, half = _pair()
    scores = torch.rand(2, g.num_edges())
    model = Spexphormer(6, 3, hidden=8, num_heads=2, layers=2).eval()
    nodes = torch.arange(120)
    for eval_batch_size in (30, 10**6):  # batches; one call on the whole graph
        _same(_outputs(TableBatching(g, scores=scores, ks=[3, 2], batch_size=40, eval_batch_size=eval_batch_size),
                       model, nodes),
              _outputs(TableBatching(half, scores=scores, ks=[3, 2], batch_size=40, eval_batch_size=eval_batch_size),
                       model, nodes))


def test_neighbor_sampling_layerwise_evaluation():
    """eval_layerwise: one call to the model's layer-wise inference, the full-graph logits' rows."""
    g, half = _pair()
    model = ScoreEstimator(6, 3, hidden=4, num_heads=2, layers=2).eval()
    nodes = torch.tensor([5, 0, 77, 119])
    full = _outputs(FullGraph(g), model, torch.arange(120))[0][1]
    for graph in (g, half):
        (batch_nodes, out), = _outputs(NeighborSampling(graph, fanouts=[2, 2], batch_size=40, eval_layerwise=True),
                                       model, nodes)
        assert torch.equal(batch_nodes, nodes)
        torch.testing.assert_close(out, full[nodes], rtol=1e-5, atol=1e-6)


def test_layerwise_evaluation_needs_a_model_that_has_it():
    g, _ = _pair()
    batching = NeighborSampling(g, fanouts=[2, 2], batch_size=40, eval_layerwise=True)
    (batch,) = batching.eval_batches(torch.arange(10))
    with pytest.raises(TypeError, match="eval_layerwise=True needs a model with layerwise_inference.*GCN has none"):
        batch.run(GCN(6, 3, hidden=8))
