"""SGFormer's simple global attention: a normalised linear attention in O(N).

Re-implemented from the formula of Wu et al., "SGFormer: Simplifying and Empowering Transformers
for Large-Graph Representations" (NeurIPS 2023, https://arxiv.org/abs/2306.10759).
"""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_bool, check_global_input, check_output_finite, check_positive_int
from .functional.linear import sgformer_attention

__all__ = ["SGFormerAttention"]

class SGFormerAttention(nn.Module):
    r"""Simple global attention from `SGFormer: Simplifying and Empowering Transformers for
    Large-Graph Representations <https://arxiv.org/abs/2306.10759>`__ (Wu et al., NeurIPS 2023).

    A single-layer normalised linear attention, O(N):

    .. math::
        Q = W_Q X + b_Q,\ K = W_K X + b_K,\ V = W_V X + b_V, \quad
        \tilde Q = \frac{Q}{\|Q\|_F},\ \tilde K = \frac{K}{\|K\|_F}

        \mathrm{out}^{h} = \frac{N V^{h} + \tilde Q^{h} (\tilde K^{h\top} V^{h})}
                               {N + \tilde Q^{h} (\tilde K^{h\top} \mathbf{1})}

    The all-pair term weighs :math:`O(1/N)` against the self term :math:`N V`. With a batched
    graph the norms and sums run per graph. Like every layer here (and
    :class:`~dgl.nn.GATConv`) it returns ``(N, num_heads, out_feats)``; ``mean_heads=True``
    averages the heads as SGFormer does (output ``(N, out_feats)``). There is no
    ``get_attention``: the implied weights form an N x N matrix.

    Parameters
    ----------
    in_feats : int
        Input feature size.
    out_feats : int
        Feature size per head.
    num_heads : int, optional
        Number of heads. Default: ``1``.
    bias : bool, optional
        Biases in the Q, K, V projections. Default: ``True``.
    mean_heads : bool, optional
        Average the heads (SGFormer) instead of returning them separately. Default: ``False``.

    Note
    ----
    Global attention ignores the edges, so zero in-degree nodes are fine. Blocks are rejected
    with a ``DGLError``; pass a full graph or the induced subgraph of a node batch.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.nn import SGFormerAttention
    >>> g = dgl.rand_graph(10, 30)
    >>> SGFormerAttention(5, 8, num_heads=2)(g, torch.randn(10, 5)).shape
    torch.Size([10, 2, 8])
    >>> SGFormerAttention(5, 8, num_heads=2, mean_heads=True)(g, torch.randn(10, 5)).shape
    torch.Size([10, 8])
    """

    def __init__(self, in_feats: int, out_feats: int, num_heads: int = 1, bias: bool = True,
                 mean_heads: bool = False):
        super().__init__()
        self._in_feats = check_positive_int(in_feats, "in_feats")
        self._out_feats = check_positive_int(out_feats, "out_feats")
        self._num_heads = check_positive_int(num_heads, "num_heads")
        self.mean_heads = check_bool(mean_heads, "mean_heads")
        width = num_heads * out_feats
        self.fc_q = nn.Linear(in_feats, width, bias=bias)
        self.fc_k = nn.Linear(in_feats, width, bias=bias)
        self.fc_v = nn.Linear(in_feats, width, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reinitialise the projections (``nn.Linear``'s default, as SGFormer)."""
        for fc in (self.fc_q, self.fc_k, self.fc_v):
            fc.reset_parameters()

    def extra_repr(self) -> str:
        return (f"in_feats={self._in_feats}, out_feats={self._out_feats}, "
                f"num_heads={self._num_heads}, mean_heads={self.mean_heads}")

    def forward(self, graph, feat: torch.Tensor) -> torch.Tensor:
        """``(N, num_heads, out_feats)`` (``(N, out_feats)`` with ``mean_heads``).

        Raises ``TypeError``/``ValueError`` for a bad ``feat`` (type, dtype, shape, NaN/Inf) and
        ``DGLError`` for a block, a heterograph or an empty graph.
        """
        num_nodes = check_global_input(graph, feat, self._in_feats, self.fc_q.weight)
        with graph.local_scope():
            shape = (num_nodes, self._num_heads, self._out_feats)
            q = self.fc_q(feat).view(shape)  # (N, H, D)
            k = self.fc_k(feat).view(shape)  # (N, H, D)
            v = self.fc_v(feat).view(shape)  # (N, H, D)
            out = sgformer_attention(q, k, v, segments=graph.batch_num_nodes())  # (N, H, D)
            check_output_finite(out, feat)
            return out.mean(1) if self.mean_heads else out
