"""Exact full multi-head attention over all nodes (per graph): the p >= N limit of RBA.

For small graphs, as a reference and as the ``attention="full"`` ablation of
:class:`~dgl_rbgt.models.RBTransformer`. Its parameters are :class:`~dgl_rbgt.nn.RBAConv`'s (the
same ``state_dict`` keys), so a trained RBA layer can be evaluated exactly. The torch-only core is
:func:`dgl_rbgt.nn.functional.full_attention`.
"""
from __future__ import annotations

from typing import Callable

import torch

from .._checks import check_positive_int
from .functional.grouping import GroupPlan, exact_plan
from .grouped_attention import GroupedAttentionConv
from .rba import FULL_ATTENTION_MAX_NODES, check_full_attention_size

__all__ = ["FullAttentionConv"]


class FullAttentionConv(GroupedAttentionConv):
    r"""Exact full multi-head attention over the nodes of each graph, in training and evaluation.

    .. math::
        h_i^{h} = \sum_{j \in \mathcal{G}(i)} \mathrm{softmax}_{j}
        \left(\frac{q_i^{h\top} k_j^{h}}{\sqrt{D}}\right) v_j^{h}

    with :math:`\mathcal{G}(i)` all nodes of node :math:`i`'s graph (of a ``dgl.batch``). The
    parameters and conventions are those of :class:`~dgl_rbgt.nn.RBAConv` (the same
    ``state_dict`` keys; RBA with :math:`p \geq N` gives the same output); graphs larger than ``max_nodes`` raise a ``DGLError`` because the cost is
    quadratic.

    Parameters
    ----------
    in_feats, out_feats, num_heads, feat_drop, attn_drop, bias, residual, activation
        As in :class:`~dgl_rbgt.nn.rba.RBAConv`.
    max_nodes : int, optional
        Largest graph accepted. Default: :data:`~dgl_rbgt.nn.rba.FULL_ATTENTION_MAX_NODES`.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.nn import FullAttentionConv
    >>> conv = FullAttentionConv(5, 4, num_heads=2)
    >>> conv(dgl.rand_graph(10, 30), torch.randn(10, 5)).shape
    torch.Size([10, 2, 4])
    """

    def __init__(
        self,
        in_feats: int | tuple[int, int],
        out_feats: int,
        num_heads: int = 1,
        feat_drop: float = 0.0,
        attn_drop: float = 0.0,
        bias: bool = True,
        residual: bool = False,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_nodes: int = FULL_ATTENTION_MAX_NODES,
    ):
        self.max_nodes = check_positive_int(max_nodes, "max_nodes")
        super().__init__(in_feats, out_feats, num_heads, feat_drop=feat_drop, attn_drop=attn_drop, bias=bias,
                         residual=residual, activation=activation)

    def plans(self, num_nodes: int, counts: torch.Tensor | None, device: torch.device) -> list[GroupPlan]:
        check_full_attention_size(num_nodes, counts, self.max_nodes)
        return [exact_plan(num_nodes, counts, device)]

    def extra_repr(self) -> str:
        return (f"in_feats={self._in_feats}, out_feats={self._out_feats}, "
                f"num_heads={self._num_heads}, max_nodes={self.max_nodes}, attn_drop={self.attn_drop}")
