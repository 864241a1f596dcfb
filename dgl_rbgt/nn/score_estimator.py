"""Spexphormer's attention score estimator layer (stage 1).

A narrow sparse-attention layer on the graph plus expander and self-loop edges whose normalised
attention scores drive the neighbour sampling of the wide network
(:func:`dgl_rbgt.sampling.sparsify`).
"""
from __future__ import annotations

import math

import dgl
import torch
import torch.nn.functional as F
from dgl.base import DGLError
from dgl.nn.functional import edge_softmax
from dgl.utils import expand_as_pair
from torch import nn

from dgl_rbgt._checks import (check_feat, check_homogeneous, check_nonempty, check_output_finite, check_param_dtype,
                              check_positive_int)
from dgl_rbgt.conventions import edge_type_codes

__all__ = ["ScoreEstimatorConv"]


class ScoreEstimatorConv(nn.Module):
    r"""Attention score estimator from `Even Sparser Graph Transformers (Spexphormer)
    <https://arxiv.org/abs/2411.16278>`__.

    Sparse softmax attention over the in-edges of every node, designed so that its attention
    scores say which edges matter rather than to be a strong predictor: values have unit length
    (times one learnable scale), so a node cannot steer its output through the norm of a value,
    only through where it attends; the edge type enters as a scalar gain on the query-key product
    plus a bias, and a temperature :math:`T` (annealed by
    :class:`~dgl_rbgt.models.spexphormer.ScoreEstimator`) sharpens the scores during training.

    .. math::
        z^{(h)}_{ij} = \mathrm{clamp}\Big(\big(g^{(h)}_{t_{ij}}\,
            \frac{\langle q^{(h)}_i, k^{(h)}_j\rangle}{\sqrt{D}} + b^{(h)}_{t_{ij}}\big) / T,
            -c, c\Big), \qquad
        \alpha^{(h)}_{ij} = \frac{\exp z^{(h)}_{ij}}{\sum_{j' \in \mathcal{N}(i)} \exp z^{(h)}_{ij'}},

    .. math::
        h^{(h)}_i = \sum_{j \in \mathcal{N}(i)} \alpha^{(h)}_{ij}\, s\,
            \frac{v^{(h)}_j}{\lVert v^{(h)}_j \rVert},

    with :math:`q = W_Q x_i`, :math:`k = W_K x_j`, :math:`v = W_V x_j` split into :math:`H` heads
    of size :math:`D`, :math:`t_{ij}` the edge type (``graph.edata['etype']``), per-type per-head
    gain :math:`g` (initialised to 1) and bias :math:`b` (initialised to 0), and the value scale
    :math:`s` (initialised to 0.25). The feed-forward block lives outside the layer.

    Parameters
    ----------
    in_feats : int or (int, int)
        Input feature size; a pair gives source and destination sizes (bipartite graphs, blocks).
    out_feats : int
        Size :math:`D` of each head.
    num_heads : int
        Number of heads :math:`H` (Spexphormer uses one).
    num_edge_types : int
        Size of the edge-type vocabulary; codes in ``graph.edata['etype']`` must be below it.
        Default 3: graph, expander and self-loop edges
        (:class:`~dgl_rbgt.transforms.edge_types.EdgeType`).
    bias : bool
        Whether the query, key and value projections have a bias (the reference has none).
    value_scale : float
        Initial value of the learnable value scale :math:`s`.
    clamp : float
        Logits are clipped to :math:`[-c, c]` after the temperature (8 in the reference).
    allow_zero_in_degree : bool
        If False (default), a destination node without in-edges raises
        :class:`~dgl.DGLError`; if True its output is 0.

    Attributes
    ----------
    temperature : Tensor
        Scalar buffer :math:`T` (1 at construction). Being a buffer it is saved with the model, so
        a checkpoint reproduces the scores of the epoch it was taken at.

    Note
    ----
    Zero in-degree nodes get no message and so an output of 0, which is usually a mistake; the
    layer raises unless ``allow_zero_in_degree=True``. Add self-loops with
    :func:`dgl_rbgt.transforms.edge_types.add_self_loops` (typed ``SELF_LOOP``), as Spexphormer
    does.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.nn.score_estimator import ScoreEstimatorConv
    >>> from dgl_rbgt.transforms.edge_types import add_self_loops
    >>> g = add_self_loops(dgl.graph(([0, 1, 2, 3], [1, 2, 3, 0])))
    >>> conv = ScoreEstimatorConv(5, 4, num_heads=1)
    >>> out, att = conv(g, torch.randn(4, 5), get_attention=True)
    >>> out.shape, att.shape
    (torch.Size([4, 1, 4]), torch.Size([8, 1, 1]))

    On a block built from a sampled frontier (destination nodes are the first source nodes):

    >>> block = dgl.to_block(dgl.in_subgraph(g, [0, 1]), dst_nodes=torch.tensor([0, 1]))
    >>> conv(block, torch.randn(block.num_src_nodes(), 5)).shape
    torch.Size([2, 1, 4])
    """

    def __init__(
        self,
        in_feats: int | tuple[int, int],
        out_feats: int,
        num_heads: int = 1,
        num_edge_types: int = 3,
        *,
        bias: bool = False,
        value_scale: float = 0.25,
        clamp: float = 8.0,
        allow_zero_in_degree: bool = False,
    ):
        super().__init__()
        src_feats, dst_feats = expand_as_pair(in_feats)
        check_positive_int(src_feats, "in_feats")
        check_positive_int(dst_feats, "in_feats")
        self._in_src_feats, self._in_dst_feats = src_feats, dst_feats
        self._out_feats = check_positive_int(out_feats, "out_feats")
        self._num_heads = check_positive_int(num_heads, "num_heads")
        self._num_edge_types = check_positive_int(num_edge_types, "num_edge_types")
        if isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not clamp > 0:
            raise ValueError(f"clamp must be a positive number, got {clamp!r}")
        if isinstance(value_scale, bool) or not isinstance(value_scale, (int, float)):
            raise TypeError(f"value_scale must be a float, got {type(value_scale).__name__}")
        self.clamp = float(clamp)
        self._value_scale_init = float(value_scale)
        self._allow_zero_in_degree = allow_zero_in_degree
        width = out_feats * num_heads
        self.fc_q = nn.Linear(dst_feats, width, bias=bias)
        self.fc_k = nn.Linear(src_feats, width, bias=bias)
        self.fc_v = nn.Linear(src_feats, width, bias=bias)
        self.value_scale = nn.Parameter(torch.empty(()))
        self.edge_gain = nn.Parameter(torch.empty(num_edge_types, num_heads))  # (T, H)
        self.edge_bias = nn.Parameter(torch.empty(num_edge_types, num_heads))  # (T, H)
        self.register_buffer("temperature", torch.ones(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform projections (as ExphormerConv), zero projection biases, the value scale at
        its initial value, unit gains and zero logit biases (a fresh layer is plain scaled
        dot-product attention for every edge type)."""
        for fc in (self.fc_q, self.fc_k, self.fc_v):
            nn.init.xavier_uniform_(fc.weight)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
        nn.init.constant_(self.value_scale, self._value_scale_init)
        nn.init.ones_(self.edge_gain)
        nn.init.zeros_(self.edge_bias)

    def extra_repr(self) -> str:
        return (f"in_feats=({self._in_src_feats}, {self._in_dst_feats}), out_feats={self._out_feats}, "
                f"num_heads={self._num_heads}, num_edge_types={self._num_edge_types}, clamp={self.clamp}")

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        """Set ``allow_zero_in_degree`` (as DGL's layers do)."""
        self._allow_zero_in_degree = bool(set_value)

    def set_temperature(self, value: float) -> None:
        """Set the softmax temperature :math:`T > 0`."""
        if not value > 0:
            raise ValueError(f"temperature must be positive, got {value}")
        self.temperature.fill_(float(value))

    def forward(self, graph: dgl.DGLGraph, feat, get_attention: bool = False):
        """Attend over the in-edges of every destination node.

        Parameters
        ----------
        graph : DGLGraph
            Homogeneous graph or block; ``edata['etype']`` holds the edge types (all 0 without it).
        feat : Tensor or (Tensor, Tensor)
            ``(N_src, in_feats)`` node features, or a (source, destination) pair. For a block
            given one tensor, the destination features are its first ``N_dst`` rows.
        get_attention : bool
            Also return the normalised scores.

        Returns
        -------
        Tensor
            ``(N_dst, H, D)`` outputs.
        Tensor, optional
            ``(E, H, 1)`` attention scores :math:`\\alpha`; they sum to 1 over each node's
            in-edges.
        """
        check_homogeneous(graph)
        check_nonempty(graph)
        with graph.local_scope():
            if not self._allow_zero_in_degree and bool((graph.in_degrees() == 0).any()):
                raise DGLError(
                    "There are 0-in-degree nodes in the graph, whose output would be 0; add "
                    "self-loops (dgl_rbgt.transforms.edge_types.add_self_loops) or pass "
                    "allow_zero_in_degree=True to accept that")
            if isinstance(feat, tuple):
                feat_src, feat_dst = feat
            else:
                feat_src = feat_dst = feat
                if graph.is_block:
                    feat_dst = feat[: graph.num_dst_nodes()]
            check_feat(feat_src, "feat", rows=graph.num_src_nodes(), last_dim=self._in_src_feats)
            check_feat(feat_dst, "feat (destination)", rows=graph.num_dst_nodes(),
                       last_dim=self._in_dst_feats)
            check_param_dtype(feat_src, self.fc_k.weight, "feat")
            check_param_dtype(feat_dst, self.fc_q.weight, "feat")
            etype = edge_type_codes(graph)
            if graph.num_edges() and int(etype.max()) >= self._num_edge_types:
                raise DGLError(
                    f"graph.edata['etype'] holds code {int(etype.max())} but the layer has "
                    f"num_edge_types={self._num_edge_types}; construct it with a larger "
                    f"num_edge_types")
            h, d = self._num_heads, self._out_feats
            q = self.fc_q(feat_dst).view(-1, h, d)  # (N_dst, H, D)
            k = self.fc_k(feat_src).view(-1, h, d)  # (N_src, H, D)
            # Unit-length values: the estimator expresses itself only through its scores.
            v = F.normalize(self.fc_v(feat_src).view(-1, h, d), p=2.0, dim=-1) * self.value_scale
            graph.srcdata.update({"k": k, "v": v})
            graph.dstdata["q"] = q
            graph.apply_edges(dgl.function.u_dot_v("k", "q", "qk"))  # (E, H, 1)
            logits = (graph.edata["qk"] / math.sqrt(d)) * self.edge_gain[etype].unsqueeze(-1) \
                + self.edge_bias[etype].unsqueeze(-1)  # (E, H, 1)
            logits = (logits / self.temperature).clamp(-self.clamp, self.clamp)
            att = edge_softmax(graph, logits)  # (E, H, 1)
            graph.edata["a"] = att
            graph.update_all(dgl.function.u_mul_e("v", "a", "m"), dgl.function.sum("m", "out"))
            out = graph.dstdata["out"]  # (N_dst, H, D)
            check_output_finite(out, feat_src)
            return (out, att) if get_attention else out
