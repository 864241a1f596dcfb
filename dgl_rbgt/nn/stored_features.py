"""Input features stored in half precision, computed on in the parameters' precision.

A graph's ``ndata['feat']`` may be stored as float16 or bfloat16
(:class:`~dgl_rbgt.transforms.CastFeatures`): half the bytes of float32, which on a 10M-node graph
with 64 features is 1.3 GB. Nothing computes in half precision: batches cast the rows they gather
(:func:`compute_input`), and a model's input projection over all nodes casts one chunk of rows at a
time (:func:`project_stored`), so no float32 copy of the whole feature matrix is ever made, not
even for the backward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..conventions import STORAGE_DTYPES

__all__ = ["STORAGE_DTYPES", "is_half_stored", "compute_input", "whole_graph_input", "project_stored", "PROJECT_ROWS"]

_HALF = (torch.float16, torch.bfloat16)
#: Rows cast and projected at a time: 64 MB of float32 at 256 features.
PROJECT_ROWS = 65_536


def is_half_stored(feat) -> bool:
    """Whether ``feat`` is a dense tensor stored in float16 or bfloat16."""
    return isinstance(feat, torch.Tensor) and feat.dtype in _HALF and feat.layout == torch.strided


def compute_input(feat: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``feat`` as the model computes on it: half-precision storage cast to ``dtype`` (a copy, so
    call it on a batch's rows, not on a whole graph's features); anything else unchanged.

    Example
    -------
    >>> import torch
    >>> from dgl_rbgt.nn.stored_features import compute_input
    >>> compute_input(torch.ones(2, 3, dtype=torch.float16)).dtype
    torch.float32
    >>> x = torch.ones(2, 3)
    >>> compute_input(x) is x
    True
    """
    return feat.to(dtype) if is_half_stored(feat) else feat


def whole_graph_input(model, feat: torch.Tensor) -> torch.Tensor:
    """A whole graph's features for one call of ``model``: as stored when the model projects
    half-stored features in chunks itself (``model.projects_stored_features``), else cast."""
    return feat if getattr(model, "projects_stored_features", False) else compute_input(feat)


class _StoredLinear(torch.autograd.Function):
    """``F.linear`` of half-stored rows, cast chunk by chunk; saves the half input, not a cast copy.
    The stored features are data: no gradient flows into them."""

    @staticmethod
    def forward(ctx, feat, weight, bias, rows):
        out = feat.new_empty((feat.shape[0], weight.shape[0]), dtype=weight.dtype)
        for a in range(0, feat.shape[0], rows):
            out[a:a + rows] = F.linear(feat[a:a + rows].to(weight.dtype), weight, bias)
        ctx.save_for_backward(feat, weight)
        ctx.rows, ctx.has_bias = rows, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        feat, weight = ctx.saved_tensors
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight)
            for a in range(0, feat.shape[0], ctx.rows):
                grad_weight.addmm_(grad[a:a + ctx.rows].t(), feat[a:a + ctx.rows].to(weight.dtype))
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return None, grad_weight, grad_bias, None


def project_stored(linear: nn.Linear, feat: torch.Tensor, rows: int = PROJECT_ROWS) -> torch.Tensor:
    """``linear(feat)``; for half-stored ``feat`` computed in ``rows``-row chunks in the weights'
    precision, holding the ``(N, out)`` result and one chunk, never a cast copy of ``feat``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> from dgl_rbgt.nn.stored_features import project_stored
    >>> lin = nn.Linear(4, 2)
    >>> x = torch.randn(5, 4).half()
    >>> torch.allclose(project_stored(lin, x, rows=2), lin(x.float()))
    True
    """
    if not is_half_stored(feat):
        return linear(feat)
    if feat.requires_grad:
        raise ValueError("feat stored in half precision is data: it cannot require a gradient")
    return _StoredLinear.apply(feat, linear.weight, linear.bias, rows)
