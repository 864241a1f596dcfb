"""SGFormer's node batches over a large graph: one sparse format held, the same subgraphs."""
import dgl
import pytest
import torch

from dgl_rbgt.batching import NodeBatches
from dgl_rbgt.batching.node_batches import induced_subgraph


def _graph(sizes=(60,)):
    g = dgl.batch([dgl.rand_graph(n, 6 * n) for n in sizes])
    g.ndata["feat"] = torch.randn(g.num_nodes(), 4)
    return g


def _edge_set(sub, nodes):
    u, v = sub.edges()
    return set(zip(nodes[u].tolist(), nodes[v].tolist()))


@pytest.mark.parametrize("sizes", [(60,), (25, 17, 30)])
def test_large_graph_is_kept_in_csc_only_and_gives_the_same_subgraphs(sizes):
    torch.manual_seed(0)
    g = _graph(sizes)
    n = g.num_nodes()
    small = NodeBatches(g, batch_size=20)
    large = NodeBatches(g, batch_size=20, eval_full_graph_nodes=10)
    assert small.graph is g
    assert large.graph.formats() == {"created": ["csc"], "not created": []}
    assert torch.equal(large.graph.ndata["feat"], g.ndata["feat"])
    assert large.graph.batch_num_nodes().tolist() == list(sizes)
    for seed in range(3):
        nodes = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:20]
        want, want_ids = induced_subgraph(g, nodes)
        got, got_ids = induced_subgraph(large.graph, nodes)
        assert torch.equal(got_ids, want_ids)
        assert _edge_set(got, got_ids) == _edge_set(want, want_ids) and got.num_edges() == want.num_edges()
        assert got.batch_num_nodes().tolist() == want.batch_num_nodes().tolist()
        assert got.batch_num_edges().tolist() == want.batch_num_edges().tolist()
        assert torch.equal(got.out_degrees(), want.out_degrees())  # GraphConv's normaliser works
    assert large.graph.formats()["created"] == ["csc"]  # extraction added no second format


def test_large_graph_batches_run_a_gcn_model():
    from dgl_rbgt.models import RBTransformer

    torch.manual_seed(0)
    g = _graph()
    model = RBTransformer(4, 3, hidden=8, num_heads=1, group_size=4)
    batching = NodeBatches(g, batch_size=20, eval_batch_size=25, eval_full_graph_nodes=10)
    outs = [b.run(model) for b in batching.train_batches(torch.arange(60), epoch=0)]
    assert [o.shape for o in outs] == [(20, 3)] * 3
    assert sum(len(b.output_nodes) for b in batching.eval_batches(torch.arange(60))) == 60


def test_the_pipeline_keeps_the_batchings_graph(monkeypatch, tmp_path):
    """The run holds the batching's CSC graph, not the loaded COO one beside it."""
    from dgl_rbgt.config import parse_recipe
    from dgl_rbgt.train import pipeline

    made = []
    original = NodeBatches.__init__

    def large(self, graph, device="cpu", **kw):
        original(self, graph, device, **{**kw, "eval_full_graph_nodes": 50})
        made.append(self)

    monkeypatch.setattr(NodeBatches, "__init__", large)
    seen = {}
    real_train = pipeline._train

    def spy(recipe, dataset, graph, *args):
        seen.update(dataset=dataset, graph=graph)
        return real_train(recipe, dataset, graph, *args)

    monkeypatch.setattr(pipeline, "_train", spy)
    recipe = parse_recipe({"name": "t", "dataset": {"name": "csbm", "params": {"num_nodes": 120}},
                           "model": {"name": "rbtransformer", "hidden": 8, "num_heads": 1, "group_size": 8},
                           "train": {"batching": "node_batch", "batch_size": 40, "epochs": 1},
                           "output": {"plot": False}})
    pipeline.run_recipe(recipe, tmp_path / "run", progress=False)
    assert seen["graph"] is made[0].graph is seen["dataset"].graph
    assert seen["graph"].formats()["created"] == ["csc"]
