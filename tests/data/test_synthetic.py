"""Tests for dgl_rbgt/data/synthetic.py: the contextual stochastic block model."""
import math
import time

import pytest
import torch

from dgl_rbgt.data import csbm_graph, load_dataset


def _edge_homophily(g):
    src, dst = g.edges()
    y = g.ndata["label"]
    return (y[src] == y[dst]).double().mean().item()




@pytest.fixture(scope="module")
def million():
    start = time.perf_counter()
    g = csbm_graph(1_000_000, num_classes=5, avg_degree=10.0, homophily=0.8, seed=0)
    return g, time.perf_counter() - start


def test_million_nodes_laws(million, check_convention):
    g, seconds = million
    assert g.num_nodes() == 1_000_000
    # 5M undirected draws: homophily has standard error sqrt(0.8*0.2/5e6) ~ 2e-4; duplicates
    # (about avg_degree/N of the draws) and same-class self-loops (1/class size) are negligible.
    assert abs(_edge_homophily(g) - 0.8) < 0.002
    assert abs(g.num_edges() / g.num_nodes() - 10.0) < 0.01
    assert seconds < 60, f"1M-node CSBM took {seconds:.1f}s"
    assert torch.bincount(g.ndata["label"]).tolist() == [200_000] * 5  # balanced labels
    check_convention(g)


@pytest.mark.parametrize("homophily", [0.0, 0.3, 1.0])
def test_homophily_law(homophily):
    g = csbm_graph(20_000, num_classes=4, avg_degree=6.0, homophily=homophily, seed=1)
    m = g.num_edges() / 2
    tol = 6 * math.sqrt(max(homophily * (1 - homophily), 1e-12) / m) + 1e-3  # 6 standard errors
    assert abs(_edge_homophily(g) - homophily) < tol
    assert abs(g.num_edges() / 20_000 - 6.0) < 0.1


def test_determinism_by_seed():
    a = csbm_graph(3000, seed=7)
    b = csbm_graph(3000, seed=7)
    c = csbm_graph(3000, seed=8)
    for key in ("feat", "label", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(a.ndata[key], b.ndata[key])
    assert all(torch.equal(x, y) for x, y in zip(a.edges(), b.edges()))
    assert not torch.equal(a.ndata["label"], c.ndata["label"])
    assert not torch.equal(a.ndata["feat"], c.ndata["feat"])
    # the global generator is untouched
    state = torch.get_rng_state()
    csbm_graph(100, seed=0)
    assert torch.equal(state, torch.get_rng_state())


def test_feature_signal():
    n, f, c, signal = 50_000, 16, 4, 2.0
    g = csbm_graph(n, num_classes=c, feature_dim=f, signal=signal, seed=3)
    x = g.ndata["feat"].double()
    y = g.ndata["label"]
    means = torch.stack([x[y == k].mean(0) for k in range(c)])  # (C, F)
    # each class mean is signal * (a unit vector) + noise of std 1/sqrt(n/c) per coordinate
    noise = math.sqrt(f / (n / c))
    assert torch.allclose(means.norm(dim=1), torch.full((c,), signal, dtype=torch.float64), atol=6 * noise / math.sqrt(f) + 0.05)
    dist = torch.cdist(means, means)
    assert float(dist[~torch.eye(c, dtype=torch.bool)].min()) > 0.5 * signal  # separated classes
    resid = x - means[y]
    assert abs(resid.var().item() - 1.0) < 0.02  # unit-variance noise
    g0 = csbm_graph(n, num_classes=c, feature_dim=f, signal=0.0, seed=3)
    x0 = g0.ndata["feat"].double()
    means0 = torch.stack([x0[g0.ndata["label"] == k].mean(0) for k in range(c)])
    assert float(means0.norm(dim=1).max()) < 3 * noise  # no signal: only noise


def test_split_fractions():
    g = csbm_graph(1000, train_frac=0.3, val_frac=0.2, seed=0)
    assert [int(g.ndata[k].sum()) for k in ("train_mask", "val_mask", "test_mask")] == [300, 200, 500]
    g = csbm_graph(1000, seed=0)
    assert [int(g.ndata[k].sum()) for k in ("train_mask", "val_mask", "test_mask")] == [500, 250, 250]


def test_load_dataset_forwards():
    ds = load_dataset("csbm", seed=5, num_nodes=800, num_classes=3, feature_dim=8)
    ref = csbm_graph(800, num_classes=3, feature_dim=8, seed=5)
    assert (ds.name, ds.num_classes, ds.metric, ds.split, ds.source) == ("csbm", 3, "accuracy", None, "generated")
    assert torch.equal(ds.graph.ndata["feat"], ref.ndata["feat"])
    assert load_dataset("csbm").graph.num_nodes() == 10_000  # DEFAULT_NUM_NODES


def test_load_dataset_unknown_param():
    with pytest.raises(TypeError, match=r"unexpected parameter\(s\) 'nodes' for dataset 'csbm'; allowed parameters: num_nodes, num_classes, avg_degree, homophily, feature_dim, signal, train_frac, val_frac, feature_dtype"):
        load_dataset("csbm", nodes=10)
    with pytest.raises(ValueError, match="split must be 0 for dataset 'csbm'"):
        load_dataset("csbm", split=1, num_nodes=10)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(num_nodes=0), ValueError, "num_nodes must be >= 1, got 0"),
        (dict(num_nodes=10.0), TypeError, "num_nodes must be an int, got float"),
        (dict(num_nodes=10, num_classes=1), ValueError, "num_classes must be >= 2, got 1"),
        (dict(num_nodes=3, num_classes=5), ValueError, r"num_nodes must be >= num_classes \(5\)"),
        (dict(num_nodes=10, homophily=1.5), ValueError, r"homophily must be in \[0, 1\], got 1.5"),
        (dict(num_nodes=10, avg_degree=-1.0), ValueError, "avg_degree must be a finite number >= 0, got -1.0"),
        (dict(num_nodes=10, signal=float("nan")), ValueError, "signal must be a finite number"),
        (dict(num_nodes=10, feature_dim=0), ValueError, "feature_dim must be >= 1"),
        (dict(num_nodes=10, train_frac=0.8, val_frac=0.3), ValueError, "train_frac \\+ val_frac must be at most 1"),
        (dict(num_nodes=10, seed="1"), TypeError, "seed must be an int, got str"),
        (dict(num_nodes=10, feature_dtype="half"), ValueError,
         r"feature_dtype must be one of \['float32', 'float16', 'bfloat16'\], got 'half'"),
        (dict(num_nodes=10, signal=1e6, feature_dtype="float16"), ValueError,
         "feature_dtype='float16' cannot hold these features: signal=1000000.0 .* use 'bfloat16'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        csbm_graph(**kwargs)


def test_tiny_graph_edge_cases():
    g = csbm_graph(2, num_classes=2, avg_degree=0.0, seed=0)
    assert g.num_nodes() == 2 and g.num_edges() == 0
    g = csbm_graph(2, num_classes=2, avg_degree=50.0, homophily=0.0, seed=0)
    assert sorted(zip(*[e.tolist() for e in g.edges()])) == [(0, 1), (1, 0)]  # only cross-class pairs exist


def test_half_features_are_the_float32_ones_cast_whatever_the_chunking(monkeypatch):
    import dgl_rbgt.data.synthetic as synthetic

    whole = csbm_graph(2500, feature_dim=8, seed=4)  # one chunk
    monkeypatch.setattr(synthetic, "_FEATURE_CHUNK", 1000)  # three chunks, the last one short
    chunked = csbm_graph(2500, feature_dim=8, seed=4)
    assert torch.equal(chunked.ndata["feat"], whole.ndata["feat"])
    for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        half = csbm_graph(2500, feature_dim=8, seed=4, feature_dtype=name)
        assert half.ndata["feat"].dtype == dtype
        assert torch.equal(half.ndata["feat"], whole.ndata["feat"].to(dtype))
        assert all(torch.equal(a, b) for a, b in zip(half.edges(), whole.edges()))
        assert torch.equal(half.ndata["label"], whole.ndata["label"])
