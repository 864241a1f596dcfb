"""Every layer, given huge but finite features or features of another dtype than its weights,
raises an error that names the problem; none returns NaN from finite input."""
import dgl
import pytest
import torch

from dgl_rbgt._checks import NonFiniteError
from dgl_rbgt.nn import (ExphormerConv, FullAttentionConv, RBAConv, ScoreEstimatorConv, SGFormerAttention,
                         SpexphormerConv)
from dgl_rbgt.transforms import add_self_loops

N, D = 40, 6


def typed_graph():
    g = add_self_loops(dgl.rand_graph(N, 160))
    return g


def table():
    return torch.randint(0, N, (N, 5))


LAYERS = {
    "RBAConv": (lambda: RBAConv(D, 4, num_heads=2, group_size=8), lambda m, x: m(typed_graph(), x)),
    "FullAttentionConv": (lambda: FullAttentionConv(D, 4, num_heads=2), lambda m, x: m(typed_graph(), x)),
    "SGFormerAttention": (lambda: SGFormerAttention(D, 4, num_heads=2), lambda m, x: m(typed_graph(), x)),
    "ExphormerConv": (lambda: ExphormerConv(D, 4, num_heads=2), lambda m, x: m(typed_graph(), x)),
    "ExphormerConv(dgl)": (lambda: ExphormerConv(D, 4, num_heads=2, backend="dgl"), lambda m, x: m(typed_graph(), x)),
    "ScoreEstimatorConv": (lambda: ScoreEstimatorConv(D, 4, num_heads=2), lambda m, x: m(typed_graph(), x)),
    "SpexphormerConv": (lambda: SpexphormerConv(D, 4, num_heads=2), lambda m, x: m(table(), x)),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("scale", [1e20, 1e30])
def test_huge_finite_features_never_give_nan(name, scale):
    make, call = LAYERS[name]
    x = torch.randn(N, D) * scale
    try:
        out = call(make(), x)
    except NonFiniteError as exc:
        assert "overflow" in str(exc) and "largest |feat|" in str(exc)
        return
    out = out if isinstance(out, torch.Tensor) else out[0]
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", list(LAYERS))
def test_feature_dtype_must_match_the_weights(name):
    make, call = LAYERS[name]
    with pytest.raises(TypeError, match=r"feat has dtype torch.float64 but the layer's parameters are torch.float32"):
        call(make(), torch.randn(N, D, dtype=torch.float64))
