"""The generated long-range task: convention, components, masks by graph, and where the label's
information lives (not in a node's own features, in its community's mean over the graph)."""
import dgl
import pytest
import torch

from dgl_rbgt.data import load_dataset
from dgl_rbgt.data.longrange import longrange_graph
from dgl_rbgt.nn import RBAConv

SMALL = dict(num_graphs=40, nodes_per_graph=64)


def components(g):
    return torch.repeat_interleave(torch.arange(g.batch_size), g.batch_num_nodes())


@pytest.mark.parametrize("task", ["community", "needle"])
def test_dataset_convention_and_components(task):
    g = longrange_graph(**SMALL, task=task, seed=1)
    assert g.ndata["feat"].dtype == torch.float32 and g.ndata["label"].dtype == torch.int64
    masks = [g.ndata[f"{s}_mask"] for s in ("train", "val", "test")]
    assert all(m.dtype == torch.bool for m in masks)
    assert torch.equal(sum(m.long() for m in masks), torch.ones(g.num_nodes(), dtype=torch.long))
    src, dst = g.edges()
    assert not (src == dst).any()
    keys = src * g.num_nodes() + dst
    assert len(keys.unique()) == len(keys)  # no duplicates
    assert torch.equal(keys.sort().values, (dst * g.num_nodes() + src).sort().values)  # symmetric
    # dgl.batch's bookkeeping: 40 components of 64 nodes, no edge between two of them
    comp = components(g)
    assert g.batch_size == 40 and g.batch_num_nodes().tolist() == [64] * 40
    assert torch.equal(comp[src], comp[dst]) and int(g.batch_num_edges().sum()) == g.num_edges()
    assert [c.num_nodes() for c in dgl.unbatch(g)] == [64] * 40
    assert g.in_degrees().unique().tolist() == [4]  # a ring, two neighbours per side


def test_same_seed_same_graph_other_seed_other_graph():
    a, b, c = (longrange_graph(**SMALL, seed=s) for s in (3, 3, 4))
    for key in ("feat", "label", "train_mask"):
        assert torch.equal(a.ndata[key], b.ndata[key])
    assert not torch.equal(a.ndata["feat"], c.ndata["feat"])


def test_masks_split_whole_graphs():
    g = longrange_graph(num_graphs=50, nodes_per_graph=32, train_frac=0.6, val_frac=0.2, seed=0)
    per_graph = {s: g.ndata[f"{s}_mask"].view(50, 32) for s in ("train", "val", "test")}
    for mask in per_graph.values():
        assert torch.equal(mask.all(1), mask.any(1))  # all or none of a graph's nodes
    assert [int(m[:, 0].sum()) for m in per_graph.values()] == [30, 10, 10]


def _r2(design, y, train, test):
    """Test R^2 of a least-squares probe fitted on the training graphs."""
    design = torch.cat([design, torch.ones(len(design), 1, dtype=design.dtype)], 1)
    coef = torch.linalg.lstsq(design[train], y[train, None], driver="gelsd").solution
    resid = design[test] @ coef - y[test, None]
    return 1 - float(resid.pow(2).mean() / y[test].var())


def test_label_needs_the_community_mean_not_the_own_features():
    g = longrange_graph(num_graphs=100, nodes_per_graph=128, communities=4, seed=0)
    feat = g.ndata["feat"].double()
    community, x = feat[:, :4].argmax(1), feat[:, 4:]
    y = g.ndata["label"].double()
    train, test = g.ndata["train_mask"], g.ndata["test_mask"]
    group = components(g) * 4 + community  # (graph, community) pairs
    sums = torch.zeros(int(group.max()) + 1, x.shape[1], dtype=torch.float64).index_add_(0, group, x)
    mean = (sums / torch.bincount(group)[:, None])[group]  # every node's community mean in its graph
    # x only: the one-hot code columns sum to the intercept column (a rank-deficient design).
    own = _r2(x, y, train, test)
    with_mean = _r2(torch.cat([x, mean], 1), y, train, test)
    assert own < 0.1 < 0.7 < with_mean
    assert torch.bincount(g.ndata["label"]).min() > 0.2 * g.num_nodes()  # balanced classes


def test_needle_one_node_per_graph_holds_every_label():
    g = longrange_graph(**SMALL, task="needle", num_classes=3, seed=2)
    feat = g.ndata["feat"]
    assert feat.shape == (40 * 64, 1 + 3 + 8)
    flag, code = feat[:, 0].view(40, 64), feat[:, 1:4].view(40, 64, 3)
    assert torch.equal(flag.sum(1), torch.ones(40))  # one needle per graph
    assert torch.equal(code.sum(2), flag)  # the value sits on the needle only
    value = code.sum(1).argmax(1)  # (40,)
    assert torch.equal(g.ndata["label"].view(40, 64), value[:, None].expand(40, 64))
    assert torch.equal(feat[:, 4:], torch.zeros(40 * 64, 8))  # no noise by default
    noisy = longrange_graph(**SMALL, task="needle", num_classes=3, noise=0.5, seed=2).ndata["feat"][:, 4:]
    assert 0.45 < float(noisy.std()) < 0.55


def test_random_batch_attention_stays_inside_each_component():
    g = load_dataset("longrange", **SMALL, seed=0).graph
    _, att = RBAConv(12, 4, group_size=16)(g, g.ndata["feat"], get_attention=True)
    comp = components(g)
    assert torch.equal(comp[att.members], comp[:, None].expand_as(att.members))


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "haystack"}, r"task must be one of \['community', 'needle'\]"),
    ({"nodes_per_graph": 3, "communities": 4}, r"nodes_per_graph must be >= 4, got 3"),
    ({"offset_scale": -1.0}, r"offset_scale must be a finite number >= 0"),
    ({"num_classes": 1}, r"num_classes must be >= 2"),
    ({"train_frac": 0.9, "val_frac": 0.2}, r"train_frac \+ val_frac must be at most 1"),
])
def test_bad_parameters_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        longrange_graph(**kwargs)


def test_registry_loads_it_with_its_parameters():
    ds = load_dataset("longrange", num_graphs=10, nodes_per_graph=20, num_classes=3, seed=5)
    assert (ds.num_classes, ds.metric, ds.graph.batch_size) == (3, "accuracy", 10)
    with pytest.raises(TypeError, match="num_nodes"):
        load_dataset("longrange", num_nodes=100)
