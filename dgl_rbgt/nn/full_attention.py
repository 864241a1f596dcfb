"""Exact full multi-head attention over all nodes (per graph): the p >= N limit of RBA.

For small graphs, as a reference and as the ``attention="full"`` ablation of
:class:`~dgl_rbgt.models.rbtransformer.RBTransformer`. It shares :class:`RBAConv`'s parameters
(the same ``state_dict`` keys), so a trained RBA layer can be evaluated exactly.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from dgl_rbgt._checks import check_positive_int, check_probability
from dgl_rbgt.nn.rba import (
    FULL_ATTENTION_MAX_NODES,
    RBAConv,
    _as_counts,
    _attend,
    _check_qkv,
    _exact_plan,
)

__all__ = ["FullAttentionConv", "full_attention"]


def full_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    segments: torch.Tensor | Sequence[int] | None = None,
    dropout_p: float = 0.0,
    training: bool = True,
) -> torch.Tensor:
    r"""Exact softmax attention of every row over all rows of its graph, on ``(N, H, D)``.

    Equals :func:`~dgl_rbgt.nn.rba.random_batch_attention` with ``group_size >= N``. One graph
    runs as one fused SDPA call (O(N^2) time, O(N) memory); a batch of graphs of different
    sizes is padded to the largest with a key mask (O(B n_max^2) memory).

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.nn.full_attention import full_attention
    >>> q, k, v = torch.randn(3, 7, 2, 4).unbind(0)
    >>> full_attention(q, k, v, segments=[3, 4]).shape
    torch.Size([7, 2, 4])
    """
    _check_qkv(q, k, v)
    dropout_p = check_probability(dropout_p, "dropout_p")
    plan = _exact_plan(q.shape[0], _as_counts(segments, q.shape[0]), q.device)
    return _attend(q, k, v, plan, dropout_p if training else 0.0)


class FullAttentionConv(RBAConv):
    r"""Exact full multi-head attention over the nodes of each graph, in training and evaluation.

    .. math::
        h_i^{h} = \sum_{j \in \mathcal{G}(i)} \mathrm{softmax}_{j}
        \left(\frac{q_i^{h\top} k_j^{h}}{\sqrt{D}}\right) v_j^{h}

    with :math:`\mathcal{G}(i)` all nodes of node :math:`i`'s graph (of a ``dgl.batch``). The
    parameters and conventions are those of :class:`~dgl_rbgt.nn.rba.RBAConv` (which this is with
    :math:`p \geq N`); graphs larger than ``max_nodes`` raise a ``DGLError`` because the cost is
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
    >>> from dgl_rbgt.nn.full_attention import FullAttentionConv
    >>> conv = FullAttentionConv(5, 4, num_heads=2)
    >>> conv(dgl.rand_graph(10, 30), torch.randn(10, 5)).shape
    torch.Size([10, 2, 4])
    """

    def __init__(
        self,
        in_feats: int,
        out_feats: int,
        num_heads: int,
        feat_drop: float = 0.0,
        attn_drop: float = 0.0,
        bias: bool = True,
        residual: bool = False,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_nodes: int = FULL_ATTENTION_MAX_NODES,
    ):
        check_positive_int(max_nodes, "max_nodes")
        super().__init__(in_feats, out_feats, num_heads, group_size=1, feat_drop=feat_drop,
                         attn_drop=attn_drop, bias=bias, residual=residual, activation=activation,
                         eval_mode="full", full_max_nodes=max_nodes)

    def _mode(self) -> str:
        return "full"

    def extra_repr(self) -> str:
        return (f"in_feats={self._in_feats}, out_feats={self._out_feats}, "
                f"num_heads={self._num_heads}, max_nodes={self.full_max_nodes}, "
                f"attn_drop={self.attn_drop}")
