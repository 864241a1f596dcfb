"""SGFormer's simple global attention, a normalised linear attention in O(N) (torch only).

Re-implemented from the formula of Wu et al., "SGFormer: Simplifying and Empowering Transformers
for Large-Graph Representations" (NeurIPS 2023, https://arxiv.org/abs/2306.10759).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .grouping import check_qkv, graph_ids, segment_counts

__all__ = ["sgformer_attention"]

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
    >>> from dgl_rbgt.nn.functional import sgformer_attention
    >>> q, k, v = torch.randn(3, 10, 2, 4).unbind(0)
    >>> sgformer_attention(q, k, v, segments=[4, 6]).shape
    torch.Size([10, 2, 4])
    """
    check_qkv(q, k, v)
    num_nodes, heads, dim_k = q.shape
    dim_v = v.shape[-1]
    counts = segment_counts(segments, num_nodes)
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
    gid = graph_ids(counts, q.device)  # (N,)
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
