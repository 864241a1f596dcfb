"""The Exphormer node-classification model."""
import inspect

import dgl
import pytest
import torch
from dgl.base import DGLError

from dgl_rbgt.models.exphormer import Exphormer, _local_graph
from dgl_rbgt.transforms.edge_types import EdgeType, add_self_loops
from dgl_rbgt.transforms.expander import AddExpanderEdges
from dgl_rbgt.transforms.virtual_nodes import AddVirtualNodes




def tiny_graph(num_nodes=40, num_classes=3, in_feats=8):
    """Two-community graph whose labels follow features and structure."""
    labels = torch.randint(num_classes, (num_nodes,))
    src = torch.randint(num_nodes, (4 * num_nodes,))
    dst = torch.randint(num_nodes, (4 * num_nodes,))
    keep = labels[src] == labels[dst]
    g = dgl.to_bidirected(dgl.graph((src[keep], dst[keep]), num_nodes=num_nodes))
    g.ndata["feat"] = torch.randn(num_nodes, in_feats) + labels.unsqueeze(1).float()
    g.ndata["label"] = labels
    return AddExpanderEdges(degree=2, seed=0)(g)


def test_output_shape_and_batching_attribute():
    g = tiny_graph()
    model = Exphormer(8, 3, hidden=16, num_heads=2, layers=2)
    out = model(g, g.ndata["feat"])
    assert out.shape == (40, 3) and torch.isfinite(out).all()
    assert Exphormer.batching == ("full",)


def test_signature_is_recipe_ready():
    params = list(inspect.signature(Exphormer.__init__).parameters.values())[1:]
    assert [p.name for p in params[:2]] == ["in_feats", "num_classes"]
    for p in params[2:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, p.name
        assert p.annotation is not inspect.Parameter.empty, p.name
        assert p.default is not inspect.Parameter.empty, p.name


def test_training_steps_reduce_the_loss():
    g = tiny_graph()
    model = Exphormer(8, 3, hidden=16, num_heads=2, layers=2, dropout=0.0, attn_dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(g, g.ndata["feat"]), g.ndata["label"])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_local_graph_is_graph_edges_plus_one_loop_each_and_cached():
    g = dgl.graph(([0, 1, 2, 2], [1, 2, 0, 2]), num_nodes=4)  # 2 -> 2 is the graph's own loop
    g = add_self_loops(AddExpanderEdges(degree=1, allow_duplicates=True, seed=0)(g))
    local = _local_graph(g)
    pairs = sorted(zip(*[t.tolist() for t in local.edges()]))
    assert pairs == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2), (3, 3)]
    model = Exphormer(5, 2, hidden=8, layers=1)
    x = torch.randn(4, 5)
    model(g, x)
    cached = model._local_cache._value
    model(g, x)
    assert model._local_cache._value is cached


def test_gcn_sees_only_graph_edges():
    """Moving an expander edge's type to GRAPH changes the GCN branch, not only attention."""
    g = tiny_graph()
    model = Exphormer(8, 3, hidden=16, layers=1, local_gcn=True).eval()
    base = model(g, g.ndata["feat"])
    g2 = g.clone()
    g2.edata["etype"] = torch.where(g.edata["etype"] == EdgeType.EXPANDER, 0, g.edata["etype"])
    attn_only = Exphormer(8, 3, hidden=16, layers=1, local_gcn=False).eval()
    attn_only.load_state_dict({k: v for k, v in model.state_dict().items() if "gcn" not in k and "norm_local" not in k})
    # with identical type embeddings (ones at init) attention cannot tell types apart ...
    assert torch.allclose(attn_only(g, g.ndata["feat"]), attn_only(g2, g2.ndata["feat"]), atol=1e-6)
    # ... so any change comes from the GCN graph
    assert not torch.allclose(model(g2, g2.ndata["feat"]), base, atol=1e-4)


def test_virtual_nodes_use_their_embedding():
    g = AddVirtualNodes(1)(tiny_graph())
    model = Exphormer(8, 3, hidden=16, layers=2, num_edge_types=5).eval()
    feat = g.ndata["feat"]
    out = model(g, feat)
    assert out.shape == (g.num_nodes(), 3)
    with torch.no_grad():
        model.virtual_emb.add_(1.0)
    real = ~g.ndata["is_virtual"]
    assert not torch.allclose(model(g, feat)[real], out[real])
    with pytest.raises(DGLError, match="num_edge_types=3"):
        Exphormer(8, 3, hidden=16, layers=1)(g, feat)


def test_errors():
    g = tiny_graph()
    with pytest.raises(ValueError, match="hidden must be divisible by num_heads"):
        Exphormer(8, 3, hidden=10, num_heads=3)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        Exphormer(8, 3, dropout=1.0)
    with pytest.raises(TypeError, match="local_gcn must be a bool"):
        Exphormer(8, 3, local_gcn="yes")
    model = Exphormer(8, 3, hidden=16, layers=1)
    with pytest.raises(ValueError, match="last dimension 8"):
        model(g, torch.randn(40, 7))
    plain = dgl.rand_graph(40, 100)
    with pytest.raises(DGLError, match="AddExpanderEdges"):
        model(plain, torch.randn(40, 8))
    block = dgl.to_block(dgl.sampling.sample_neighbors(g, torch.tensor([0, 1]), 2))
    with pytest.raises(DGLError, match="is a block"):
        model(block, torch.randn(block.num_src_nodes(), 8))


def test_blocks_share_one_cached_edge_layout():
    g = AddExpanderEdges(degree=2, seed=0)(dgl.rand_graph(30, 90))
    model = Exphormer(8, 3, hidden=16, layers=3)
    caches = {id(block.attn.structure_cache) for block in model.blocks}
    assert len(caches) == 1
    out = model(g, torch.randn(30, 8))
    assert out.shape == (30, 3) and torch.isfinite(out).all()
    assert model.blocks[0].attn.structure_cache._value is not None
