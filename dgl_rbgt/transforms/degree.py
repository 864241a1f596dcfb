"""A node's degree as one more input feature: the simplest structural encoding."""
from __future__ import annotations

import dgl
import torch
from dgl.transforms import BaseTransform

from .._checks import check_homogeneous

__all__ = ["AddDegreeFeature"]


class AddDegreeFeature(BaseTransform):
    r"""Append :math:`\log(1 + d_i)`, node ``i``'s in-degree, to ``ndata['feat']`` as a last column.

    A mean-aggregating layer (SAGE, a random group's attention) cannot see how many neighbours it
    averaged, and a batch norm removes the scale a GCN's sum would keep. Graphormer gives each node
    its degree as an input embedding (its centrality encoding, Ying et al., NeurIPS 2021); here it
    is one column, logarithmic because degrees are heavy-tailed. The value depends on the node's own
    edges only, so graphs seen in training and graphs seen later get the same encoding. Edges added
    by earlier transforms (self-loops, expander edges) are counted: put this one first to count the
    dataset's own. Returns a new graph; the input is not modified.

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms import AddDegreeFeature
    >>> g = dgl.graph(([0, 1, 2], [1, 2, 1]))
    >>> g.ndata["feat"] = torch.zeros(3, 2)
    >>> AddDegreeFeature()(g).ndata["feat"]
    tensor([[0.0000, 0.0000, 0.0000],
            [0.0000, 0.0000, 1.0986],
            [0.0000, 0.0000, 0.6931]])
    """

    def __call__(self, g: dgl.DGLGraph) -> dgl.DGLGraph:
        check_homogeneous(g, allow_block=False)
        if "feat" not in g.ndata:
            raise KeyError("AddDegreeFeature needs graph.ndata['feat']")
        feat = g.ndata["feat"]
        if feat.dim() != 2 or not torch.is_floating_point(feat) or feat.layout != torch.strided:
            raise TypeError(f"AddDegreeFeature appends a column to dense floating-point features of shape "
                            f"(N, D); ndata['feat'] is a {feat.layout} {feat.dtype} tensor of shape {tuple(feat.shape)}")
        degree = torch.log1p(g.in_degrees().to(torch.float64)).to(feat.dtype).to(feat.device)
        out = g.local_var()
        out.ndata["feat"] = torch.cat([feat, degree.unsqueeze(1)], dim=1)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
