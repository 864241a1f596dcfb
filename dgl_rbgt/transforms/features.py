"""Feature preprocessing transforms (thin, typed wrappers over DGL's own)."""
from __future__ import annotations

import dgl
from dgl.transforms import BaseTransform, RowFeatNormalizer

from .._checks import check_homogeneous

__all__ = ["NormalizeFeatures"]


class NormalizeFeatures(BaseTransform):
    r"""Scale each node's ``ndata['feat']`` row to sum to one (DGL's ``RowFeatNormalizer``),
    as GCN does for bag-of-words features. Returns a new graph; the input is not modified.

    Parameters
    ----------
    subtract_min : bool
        Shift each row by its minimum first (for features that can be negative).

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms import NormalizeFeatures
    >>> g = dgl.graph(([0], [1]))
    >>> g.ndata["feat"] = torch.tensor([[1., 3.], [2., 2.]])
    >>> NormalizeFeatures()(g).ndata["feat"]
    tensor([[0.2500, 0.7500],
            [0.5000, 0.5000]])
    >>> g.ndata["feat"][0, 0].item()  # unchanged
    1.0
    """

    def __init__(self, subtract_min: bool = False):
        self.subtract_min = subtract_min
        self._dgl = RowFeatNormalizer(subtract_min=subtract_min, node_feat_names=["feat"])

    def __call__(self, g: dgl.DGLGraph) -> dgl.DGLGraph:
        check_homogeneous(g, allow_block=False)
        if "feat" not in g.ndata:
            raise KeyError("NormalizeFeatures needs graph.ndata['feat']")
        # DGL's normaliser writes into the feature tensor in place: hand it a copy.
        out = g.local_var()
        out.ndata["feat"] = g.ndata["feat"].clone()
        return self._dgl(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(subtract_min={self.subtract_min})"
