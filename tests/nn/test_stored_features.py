"""Half-precision feature storage: the chunked projection against a float64 reference, its
gradients, and the transform that stores the features."""
import dgl
import pytest
import torch
from torch import nn

from dgl_rbgt.nn.stored_features import compute_input, project_stored
from dgl_rbgt.transforms import CastFeatures


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
def test_project_stored_equals_linear_of_the_cast_rows(dtype, rows):
    torch.manual_seed(rows)
    feat = torch.randn(50, 6).to(dtype)
    lin = nn.Linear(6, 4).double()
    want_lin = nn.Linear(6, 4).double()
    want_lin.load_state_dict(lin.state_dict())
    out = project_stored(lin, feat, rows=rows)
    want = want_lin(feat.double())  # half values are exact in float64
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    g = torch.randn_like(want)
    (out * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(lin.weight.grad, want_lin.weight.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(lin.bias.grad, want_lin.bias.grad, rtol=0, atol=1e-12)


def test_project_stored_saves_the_half_input_not_a_cast_copy():
    feat = torch.randn(100, 8).half()
    lin = nn.Linear(8, 3)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        project_stored(lin, feat, rows=16).sum().backward()
    assert any(t is feat for t in saved)
    assert not any(t.dtype == torch.float32 and t.shape == feat.shape for t in saved)


def test_project_stored_without_bias_and_for_float32_input():
    lin = nn.Linear(5, 2, bias=False)
    x = torch.randn(9, 5)
    assert torch.equal(project_stored(lin, x), lin(x))
    torch.testing.assert_close(project_stored(lin, x.half(), rows=4), lin(x.half().float()), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="cannot require a gradient"):
        project_stored(lin, x.half().requires_grad_())


def test_half_storage_predicate_and_whole_graph_input():
    from dgl_rbgt.models.spexphormer import ScoreEstimator
    from dgl_rbgt.nn.stored_features import is_half_stored, whole_graph_input

    x = torch.randn(3, 2)
    assert [is_half_stored(t) for t in (x, x.half(), x.bfloat16(), x.half().to_sparse(), "x")] == [
        False, True, True, False, False]
    assert whole_graph_input(ScoreEstimator(2, 2), x.half()).dtype == torch.float16  # projects it itself
    assert whole_graph_input(nn.Linear(2, 2), x.half()).dtype == torch.float32


def test_compute_input_casts_half_only():
    x = torch.randn(3, 2)
    assert compute_input(x) is x
    assert compute_input(x.double()).dtype == torch.float64
    assert torch.equal(compute_input(x.half()), x.half().float())
    assert compute_input(x.bfloat16()).dtype == torch.float32


def _graph():
    g = dgl.graph(([0, 1], [1, 2]))
    g.ndata["feat"] = torch.tensor([[0.1, 3.0], [2.0, -1.0], [1e-3, 7.0]])
    return g


def test_cast_features_stores_the_dtype_and_leaves_the_input():
    g = _graph()
    for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        out = CastFeatures(name)(g)
        assert out.ndata["feat"].dtype == dtype
        assert torch.equal(out.ndata["feat"], g.ndata["feat"].to(dtype))
    assert g.ndata["feat"].dtype == torch.float32
    assert repr(CastFeatures("bfloat16")) == "CastFeatures(dtype='bfloat16')"


def test_cast_features_errors():
    with pytest.raises(ValueError, match="dtype must be one of"):
        CastFeatures("float8")
    g = _graph()
    g.ndata["feat"][0, 0] = 1e6
    with pytest.raises(ValueError, match="beyond float16's 65,504.*bfloat16"):
        CastFeatures("float16")(g)
    assert CastFeatures("bfloat16")(g).ndata["feat"].dtype == torch.bfloat16
    g.ndata["feat"] = torch.ones(3, 2, dtype=torch.int64)
    with pytest.raises(TypeError, match="floating-point"):
        CastFeatures()(g)
    with pytest.raises(KeyError, match="ndata\\['feat'\\]"):
        CastFeatures()(dgl.graph(([0], [1])))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_memory_map_features_keeps_values_in_a_deleted_file(tmp_path, dtype):
    from dgl_rbgt.transforms import MemoryMapFeatures

    g = dgl.rand_graph(300_000, 10)
    g.ndata["feat"] = torch.randn(300_000, 7).to(dtype)
    out = MemoryMapFeatures(dir=str(tmp_path))(g)
    feat = out.ndata["feat"]
    assert feat.dtype == dtype and torch.equal(feat, g.ndata["feat"])
    assert list(tmp_path.iterdir()) == []  # the name is gone at once
    maps = open("/proc/self/maps").read()
    assert f"{tmp_path}/dgl-rbgt-feat-" in maps and "(deleted)" in maps  # file-backed pages
    feat[0, 0] = 42  # private: the input is untouched
    assert g.ndata["feat"][0, 0] != 42
    del out, feat


def test_memory_map_features_errors(tmp_path):
    from dgl_rbgt.transforms import MemoryMapFeatures

    with pytest.raises(ValueError, match="dir must be an existing folder"):
        MemoryMapFeatures(dir=str(tmp_path / "missing"))
    with pytest.raises(TypeError, match=r"dir must be a folder path \(str\) or None, got PosixPath"):
        MemoryMapFeatures(dir=tmp_path)
    g = dgl.graph(([0], [1]))
    with pytest.raises(KeyError, match="ndata\\['feat'\\]"):
        MemoryMapFeatures()(g)
    g.ndata["feat"] = torch.zeros(2, 0)
    with pytest.raises(ValueError, match="nothing to map"):
        MemoryMapFeatures()(g)
