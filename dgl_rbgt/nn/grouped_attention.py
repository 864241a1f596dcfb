"""The shared body of the grouped-attention layers: Q/K/V projections, optional residual and
activation, multi-head softmax attention inside groups of nodes.

:class:`GroupedAttentionConv` is the base of :class:`~dgl_rbgt.nn.RBAConv` (random groups of
``p``) and :class:`~dgl_rbgt.nn.FullAttentionConv` (one group per graph); a subclass says only how
the nodes are grouped (:meth:`GroupedAttentionConv.plans`). Both keep the same parameters and
``state_dict`` keys, so a trained RBA layer can be evaluated with exact attention.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Callable

import torch
from dgl.utils import expand_as_pair
from torch import nn

from .._checks import check_global_input, check_output_finite, check_positive_int, check_probability
from .functional.grouping import (GroupPlan, RBAAttention, attend_in_groups, attend_permuted, group_weights,
                                  permute_rows, segment_counts)

__all__ = ["GroupedAttentionConv"]


class GroupedAttentionConv(nn.Module):
    r"""Multi-head softmax attention inside groups of nodes; subclasses choose the groups.

    .. math::
        h_i^{h} = \sum_{j \in \mathcal{B}(i)} \mathrm{softmax}_{j \in \mathcal{B}(i)}
        \left(\frac{q_i^{h\top} k_j^{h}}{\sqrt{D}}\right) v_j^{h}

    Parameters
    ----------
    in_feats : int or (int, int)
        Input feature size. A ``(src, dst)`` pair is accepted as in DGL layers, but attention runs
        over one node set, so both sizes must be equal.
    out_feats : int
        Feature size per head :math:`D`.
    num_heads : int
        Number of heads :math:`H`.
    feat_drop, attn_drop : float
        Dropout on the input features, on the attention weights (training only).
    bias : bool
        Biases in the Q, K, V projections.
    residual : bool
        Add a residual connection (identity when ``in_feats == num_heads * out_feats``, else a
        bias-free linear map).
    activation : callable or None
        Applied to the output.

    Examples
    --------
    A layer that attends inside consecutive blocks of 3 nodes:

    >>> import dgl, torch
    >>> from dgl_rbgt.nn import GroupedAttentionConv
    >>> from dgl_rbgt.nn.functional.grouping import plan_from_permutation
    >>> class BlockAttention(GroupedAttentionConv):
    ...     def plans(self, num_nodes, counts, device):
    ...         return [plan_from_permutation(torch.arange(num_nodes, device=device), 3, counts)]
    >>> BlockAttention(5, 4, num_heads=2)(dgl.rand_graph(7, 20), torch.randn(7, 5)).shape
    torch.Size([7, 2, 4])
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
    ):
        super().__init__()
        src_feats, dst_feats = expand_as_pair(in_feats)
        check_positive_int(src_feats, "in_feats")
        if dst_feats != src_feats:
            raise ValueError(f"in_feats must be an int or a pair of equal ints (attention runs over one "
                             f"node set), got {in_feats!r}")
        self._in_feats = src_feats
        self._out_feats = check_positive_int(out_feats, "out_feats")
        self._num_heads = check_positive_int(num_heads, "num_heads")
        self.attn_drop = check_probability(attn_drop, "attn_drop")
        self.feat_drop = nn.Dropout(check_probability(feat_drop, "feat_drop"))
        if activation is not None and not callable(activation):
            raise TypeError(f"activation must be callable or None, got {type(activation).__name__}")
        self.activation = activation
        width = self._num_heads * self._out_feats
        self.fc_q = nn.Linear(src_feats, width, bias=bias)
        self.fc_k = nn.Linear(src_feats, width, bias=bias)
        self.fc_v = nn.Linear(src_feats, width, bias=bias)
        if residual:
            self.res_fc = nn.Identity() if src_feats == width else nn.Linear(src_feats, width, bias=False)
        else:
            self.register_buffer("res_fc", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reinitialise: Glorot-uniform projection weights (as ``nn.MultiheadAttention``), zero
        biases."""
        for fc in (self.fc_q, self.fc_k, self.fc_v):
            nn.init.xavier_uniform_(fc.weight)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
        if isinstance(self.res_fc, nn.Linear):
            nn.init.xavier_uniform_(self.res_fc.weight)

    @abstractmethod
    def plans(self, num_nodes: int, counts: torch.Tensor | None, device: torch.device) -> list[GroupPlan]:
        """The groupings of one forward (their outputs are averaged); ``counts`` are the nodes per
        graph of a batch (None for one graph)."""

    def stacks_groupings(self) -> bool:
        """Whether ``get_attention`` returns one entry per grouping (a leading axis)."""
        return False

    def forward(self, graph, feat: torch.Tensor, get_attention: bool = False):
        r"""Attend inside the groups of :meth:`plans` over all nodes of ``graph``.

        Parameters
        ----------
        graph : DGLGraph
            A homogeneous graph, possibly batched (groups then stay inside each graph); only its
            node count and ``batch_num_nodes()`` are used.
        feat : torch.Tensor
            Node features ``(N, in_feats)``, finite, of the parameters' dtype.
        get_attention : bool, optional
            Also return the grouping and its attention weights as :class:`RBAAttention`.

        Returns
        -------
        torch.Tensor
            ``(N, num_heads, out_feats)``.
        RBAAttention, optional
            ``members (N, m)`` and ``weights (N, num_heads, m)`` (with a leading axis, one entry
            per grouping, when :meth:`stacks_groupings`), only with ``get_attention=True``.

        Raises
        ------
        TypeError
            ``graph`` is not a DGLGraph; ``feat`` is not a floating-point tensor or its dtype
            differs from the parameters'.
        ValueError
            ``feat`` has the wrong shape or holds NaN/Inf.
        DGLError
            ``graph`` is a block, a heterograph or has no nodes.
        """
        num_nodes = check_global_input(graph, feat, self._in_feats, self.fc_q.weight)
        with graph.local_scope():
            counts = segment_counts(graph.batch_num_nodes(), num_nodes)
            h = self.feat_drop(feat)
            heads, dim = self._num_heads, self._out_feats
            dropout_p = self.attn_drop if self.training else 0.0
            plans = self.plans(num_nodes, counts, feat.device)
            q = k = None
            if len(plans) == 1 and self._in_feats <= 3 * heads * dim:
                # Permute the input once instead of q, k and v: fewer rows of memory to move.
                blocks = permute_rows(h, plans[0])
                qs, ks, vs = ([fc(b).view(b.shape[0], heads, dim) for b in blocks]  # (n_b, H, D)
                              for fc in (self.fc_q, self.fc_k, self.fc_v))
                out = attend_permuted(qs, ks, vs, plans[0], dropout_p)
            else:
                q = self.fc_q(h).view(num_nodes, heads, dim)  # (N, H, D)
                k = self.fc_k(h).view(num_nodes, heads, dim)  # (N, H, D)
                v = self.fc_v(h).view(num_nodes, heads, dim)  # (N, H, D)
                out = attend_in_groups(q, k, v, plans[0], dropout_p)
                for plan in plans[1:]:
                    out = out + attend_in_groups(q, k, v, plan, dropout_p)
                if len(plans) > 1:
                    out = out / len(plans)
            if self.res_fc is not None:
                out = out + self.res_fc(h).view(num_nodes, heads, dim)
            if self.activation is not None:
                out = self.activation(out)
            check_output_finite(out, feat)
            if not get_attention:
                return out
            if q is None:
                q = self.fc_q(h).view(num_nodes, heads, dim)  # (N, H, D)
                k = self.fc_k(h).view(num_nodes, heads, dim)  # (N, H, D)
            atts = [group_weights(q, k, plan) for plan in plans]
            if self.stacks_groupings():
                att = RBAAttention(torch.stack([a.members for a in atts]),
                                   torch.stack([a.weights for a in atts]))
            else:
                att = atts[0]
            return out, att
