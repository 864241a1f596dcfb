"""NormalizeFeatures: rows sum to one, the input graph is untouched, bad input is named."""
import dgl
import pytest
import torch

from dgl_rbgt.transforms import NormalizeFeatures


def test_rows_sum_to_one_and_input_untouched():
    g = dgl.rand_graph(20, 60)
    g.ndata["feat"] = torch.rand(20, 7)
    before = g.ndata["feat"].clone()
    out = NormalizeFeatures()(g)
    expected = before / before.sum(1, keepdim=True)
    torch.testing.assert_close(out.ndata["feat"], expected)
    assert torch.equal(g.ndata["feat"], before)
    assert out.num_edges() == g.num_edges()


def test_missing_feat_and_heterograph():
    with pytest.raises(KeyError, match=r"ndata\['feat'\]"):
        NormalizeFeatures()(dgl.rand_graph(5, 5))
    hg = dgl.heterograph({("a", "x", "b"): ([0], [0]), ("b", "y", "a"): ([0], [0])})
    with pytest.raises(dgl.DGLError, match="homogeneous"):
        NormalizeFeatures()(hg)


def test_repr():
    assert repr(NormalizeFeatures(subtract_min=True)) == "NormalizeFeatures(subtract_min=True)"
