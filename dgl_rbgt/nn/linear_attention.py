"""SGFormer's simple global attention: a normalised linear attention in O(N).

Re-implemented from the formula of Wu et al., "SGFormer: Simplifying and Empowering Transformers
for Large-Graph Representations" (NeurIPS 2023, https://arxiv.org/abs/2306.10759).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from dgl_rbgt._checks import check_feat, check_homogeneous, check_nonempty, check_positive_int
from dgl_rbgt.nn.rba import _as_counts, _check_param_dtype, _check_qkv, _graph_ids

__all__ = ["SGFormerAttention", "sgformer_attention"]

# Per-graph sums of outer products k_i v_i^T are built a slice of k's feature axis at a time so
# that no (N, H, M, D) tensor exists: at most this many elements per slice.
_CHUNK_ELEMENTS = 1 << 24


def _segment_sum(x: torch.Tensor, gid: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """(N, ...) -> (B, ...): sum of the rows of every graph."""
    return torch.zeros((num_graphs, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add(0, gid, x)


def _scale_to_unit_max(x: torch.Tensor, gid: torch.Tensor | None = None, num_graphs: int = 1) -> torch.Tensor:
    """``x`` divided by its largest absolute entry (per graph with ``gid``); all-zero stays zero.

    The scale is detached: the attention is invariant to it, so its gradient path adds nothing.
    """
    with torch.no_grad():
        if gid is None:
            low, high = torch.aminmax(x)  # one pass, no |x| temporary
            top = torch.maximum(-low, high)
        else:
            low, high = torch.aminmax(x.reshape(len(x), -1), dim=1)
            top = torch.zeros(num_graphs, dtype=x.dtype, device=x.device).scatter_reduce(
                0, gid, torch.maximum(-low, high), reduce="amax")[gid][:, None, None]  # (N, 1, 1)
        top = torch.where(top > 0, top, torch.ones_like(top))
    return x / top


def sgformer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    segments: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    r"""SGFormer's simple global attention on ``(N, H, M)`` queries/keys and ``(N, H, D)`` values.

    Per graph of ``n`` nodes and per head, with :math:`\tilde Q = Q/\|Q\|_F` and
    :math:`\tilde K = K/\|K\|_F` (Frobenius norms over the graph's nodes and all heads):

    .. math::
        \mathrm{out} = \frac{n V + \tilde Q (\tilde K^\top V)}
                            {n + \tilde Q (\tilde K^\top \mathbf{1})}

    (division row-wise). O(N H M D) time and O(N H (M + D)) memory; with ``segments`` the sums
    run per graph, so graphs of a batch never see each other. Heads are returned separately.

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.nn.linear_attention import sgformer_attention
    >>> q, k, v = torch.randn(3, 10, 2, 4).unbind(0)
    >>> sgformer_attention(q, k, v, segments=[4, 6]).shape
    torch.Size([10, 2, 4])
    """
    _check_qkv(q, k, v)
    num_nodes, heads, dim_k = q.shape
    dim_v = v.shape[-1]
    counts = _as_counts(segments, num_nodes)
    # The output does not change when Q or K is scaled, so both are first divided by their
    # largest entry per graph: the norms then lie in [1, sqrt(n H M)] whatever the scale of the
    # weights. Unscaled, float32 broke on small weights: with entries near 1e-11 the backward
    # of 1 / (|Q| |K|), which is -1 / x^2, overflowed to Inf (NaN gradients), and below ~1e-19
    # the norms themselves underflow to 0. An all-zero Q or K has norm 0; its all-pair term is
    # 0 anyway, so clamping the norm at 1 gives out = V.
    if counts is None:
        q, k = _scale_to_unit_max(q), _scale_to_unit_max(k)
        # Q and K enter linearly, so the normalisation by their norms is one scalar per graph,
        # folded into the small (H, M, D+1) summary.
        c = 1.0 / (torch.linalg.vector_norm(q).clamp_min(1.0) * torch.linalg.vector_norm(k).clamp_min(1.0))
        kv = torch.einsum("nhm,nhd->hmd", k, v)  # (H, M, D) = K^T V
        summary = torch.cat([kv, k.sum(0).unsqueeze(-1)], dim=-1) * c  # (H, M, D+1): [K^T V, K^T 1]
        y = torch.einsum("nhm,hme->nhe", q, summary)  # (N, H, D+1)
        num = y[..., :dim_v] + num_nodes * v  # (N, H, D)
        den = y[..., dim_v:] + num_nodes  # (N, H, 1)
        return num / den
    num_graphs = counts.numel()
    gid = _graph_ids(counts, q.device)  # (N,)
    q, k = _scale_to_unit_max(q, gid, num_graphs), _scale_to_unit_max(k, gid, num_graphs)
    n_node = counts.to(q.device, q.dtype)[gid]  # (N,) size of every node's graph
    q_norm = _segment_sum(q.square().sum((1, 2)), gid, num_graphs).sqrt().clamp_min(1.0)  # (B,)
    k_norm = _segment_sum(k.square().sum((1, 2)), gid, num_graphs).sqrt().clamp_min(1.0)  # (B,)
    c = (1.0 / (q_norm * k_norm))[:, None, None]  # (B, 1, 1)
    step = max(1, _CHUNK_ELEMENTS // max(1, num_nodes * heads * dim_v))
    num = n_node[:, None, None] * v  # (N, H, D)
    for m0 in range(0, dim_k, step):
        m1 = min(dim_k, m0 + step)
        outer = k[:, :, m0:m1, None] * v[:, :, None, :]  # (N, H, c, D)
        kv = _segment_sum(outer, gid, num_graphs) * c[..., None]  # (B, H, c, D) per-graph K^T V
        num = num + torch.einsum("nhc,nhcd->nhd", q[:, :, m0:m1], kv[gid])
    k_sum = _segment_sum(k, gid, num_graphs) * c  # (B, H, M) per-graph K^T 1
    den = (q * k_sum[gid]).sum(-1, keepdim=True) + n_node[:, None, None]  # (N, H, 1)
    return num / den


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
    graph the norms and sums run per graph. Like SGFormer the heads are averaged
    (``mean_heads=True``: output ``(N, out_feats)``); ``mean_heads=False`` returns
    ``(N, num_heads, out_feats)`` as :class:`~dgl.nn.GATConv` does. There is no
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
        Average the heads (SGFormer) or return them separately. Default: ``True``.

    Note
    ----
    Global attention ignores the edges, so zero in-degree nodes are fine. Blocks are rejected
    with a ``DGLError``; pass a full graph or the induced subgraph of a node batch.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.nn.linear_attention import SGFormerAttention
    >>> g = dgl.rand_graph(10, 30)
    >>> SGFormerAttention(5, 8, num_heads=2)(g, torch.randn(10, 5)).shape
    torch.Size([10, 8])
    """

    def __init__(self, in_feats: int, out_feats: int, num_heads: int = 1, bias: bool = True,
                 mean_heads: bool = True):
        super().__init__()
        self._in_feats = check_positive_int(in_feats, "in_feats")
        self._out_feats = check_positive_int(out_feats, "out_feats")
        self._num_heads = check_positive_int(num_heads, "num_heads")
        self.mean_heads = bool(mean_heads)
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
        """``(N, out_feats)`` (or ``(N, num_heads, out_feats)`` without ``mean_heads``).

        Raises ``TypeError``/``ValueError`` for a bad ``feat`` (type, dtype, shape, NaN/Inf) and
        ``DGLError`` for a block, a heterograph or an empty graph.
        """
        check_homogeneous(graph, "graph", allow_block=False)
        check_nonempty(graph, "graph")
        num_nodes = graph.num_nodes()
        check_feat(feat, "feat", rows=num_nodes, last_dim=self._in_feats, ndim=2)
        _check_param_dtype(feat, self.fc_q.weight)
        with graph.local_scope():
            shape = (num_nodes, self._num_heads, self._out_feats)
            q = self.fc_q(feat).view(shape)  # (N, H, D)
            k = self.fc_k(feat).view(shape)  # (N, H, D)
            v = self.fc_v(feat).view(shape)  # (N, H, D)
            out = sgformer_attention(q, k, v, segments=graph.batch_num_nodes())  # (N, H, D)
            return out.mean(1) if self.mean_heads else out
