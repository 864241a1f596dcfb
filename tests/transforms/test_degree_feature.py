"""AddDegreeFeature: log(1 + in-degree) appended as the last column, input untouched, bad input named."""
import dgl
import pytest
import torch

from dgl_rbgt.transforms import AddDegreeFeature, AddSelfLoops


def test_appends_log_in_degree_per_node():
    torch.manual_seed(0)
    g = dgl.rand_graph(30, 120)
    g.ndata["feat"] = torch.rand(30, 5, dtype=torch.float64)
    before = g.ndata["feat"].clone()
    out = AddDegreeFeature()(g)
    src, dst = g.edges()
    counted = torch.zeros(30, dtype=torch.float64).index_add_(0, dst, torch.ones(len(dst), dtype=torch.float64))
    assert out.ndata["feat"].shape == (30, 6) and out.ndata["feat"].dtype == torch.float64
    torch.testing.assert_close(out.ndata["feat"][:, :5], before, rtol=0, atol=0)
    torch.testing.assert_close(out.ndata["feat"][:, 5], torch.log1p(counted), rtol=1e-12, atol=0)
    assert torch.equal(g.ndata["feat"], before) and g.ndata["feat"].shape == (30, 5)
    assert out.num_edges() == g.num_edges()


def test_counts_the_edges_earlier_transforms_added():
    g = dgl.graph(([0, 1], [1, 0]), num_nodes=3)
    g.ndata["feat"] = torch.zeros(3, 1)
    plain = AddDegreeFeature()(g).ndata["feat"][:, 1]
    looped = AddDegreeFeature()(AddSelfLoops()(g)).ndata["feat"][:, 1]
    torch.testing.assert_close(torch.expm1(plain), torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(torch.expm1(looped), torch.tensor([2.0, 2.0, 1.0]))


def test_bad_input_is_named():
    with pytest.raises(KeyError, match=r"ndata\['feat'\]"):
        AddDegreeFeature()(dgl.rand_graph(5, 5))
    g = dgl.rand_graph(5, 5)
    g.ndata["feat"] = torch.ones(5, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match="floating-point.*int64"):
        AddDegreeFeature()(g)
    g.ndata["feat"] = torch.ones(5)
    with pytest.raises(TypeError, match=r"shape \(5,\)"):
        AddDegreeFeature()(g)
    hg = dgl.heterograph({("a", "x", "b"): ([0], [0]), ("b", "y", "a"): ([0], [0])})
    with pytest.raises(dgl.DGLError, match="homogeneous"):
        AddDegreeFeature()(hg)
    assert repr(AddDegreeFeature()) == "AddDegreeFeature()"
