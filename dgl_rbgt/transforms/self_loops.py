"""``AddSelfLoops``: one typed self-loop per node, as a recipe-usable transform."""
from __future__ import annotations

import dgl
from dgl.transforms import BaseTransform

from .edge_types import add_self_loops

__all__ = ["AddSelfLoops"]


class AddSelfLoops(BaseTransform):
    """Add one self-loop per node with ``edata['etype'] = EdgeType.SELF_LOOP`` (2); see
    :func:`~dgl_rbgt.transforms.edge_types.add_self_loops`. Returns a new graph.

    Example
    -------
    >>> import dgl
    >>> from dgl_rbgt.transforms import AddSelfLoops
    >>> g = AddSelfLoops()(dgl.graph(([0, 1], [1, 2])))
    >>> g.num_edges(), g.edata["etype"].tolist()
    (5, [0, 0, 2, 2, 2])
    """

    #: Marks its edges in ``edata['etype']`` (models that need typed edges check for one).
    writes_edge_types = True

    def __call__(self, g: dgl.DGLGraph) -> dgl.DGLGraph:
        return add_self_loops(g)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
