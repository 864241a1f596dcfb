"""Exphormer sparse attention layer (Shirzad et al., ICML 2023) for DGL."""
from __future__ import annotations

import math
from typing import Any, Literal

import dgl
import dgl.function as fn
import torch
from dgl.base import DGLError
from dgl.nn.functional import edge_softmax
from dgl.utils import expand_as_pair
from torch import nn

from dgl_rbgt._checks import (
    check_bool,
    check_choice,
    check_feat,
    check_homogeneous,
    check_nonempty,
    check_nonnegative_float,
    check_output_finite,
    check_param_dtype,
    check_positive_int,
    check_probability,
)
from dgl_rbgt.conventions import ETYPE
from dgl_rbgt.nn.typed_csr import GraphCache, TypedCSR, sampled_dot, spmm_sum

__all__ = ["ExphormerConv", "GraphCache"]  # GraphCache: where it was first documented



def _attention_keep_mask(shape: tuple[int, int], p: float, device: torch.device) -> torch.Tensor:
    """Bernoulli(1 - p) keep mask for attention dropout, ``bool`` (one byte per entry)."""
    return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(1.0 - p)


class _FusedAttention(torch.autograd.Function):
    """The whole layer ``h_i = sum_j softmax_j(clamp(<q_i * e_t, k_j>)) * drop * v_j``, from the
    input features and the Q/K/V weights (the projections are part of it).

    Works head by head and, inside a head, edge type by edge type on the type-major layout of
    :class:`TypedCSR`. Forward: the head's ``q, k, v`` (``(N, d)`` each), one sampled
    dense-dense product per type for the logits (against ``q * e_t``, written straight into the
    weight buffer), in-place clamp and ``exp``, one sparse-dense product per type against
    ``[v | 1]`` that gives the numerator and the softmax denominator together, and a division
    of the ``(N_dst, d)`` result: the normalised scores are never formed. Autograd keeps only
    the unnormalised weights ``(H, E)``, a one-byte clamp mask (and dropout mask), the
    denominators, the output and the inputs: not ``q, k, v`` (``3 N H d``), which the backward
    pass recomputes one head at a time (three ``(N, d_in) x (d_in, d)`` products). Backward, per
    head and type: one sampled product for ``<g_i / Z_i, v_j>``, three sparse-dense products
    (values, keys, queries) and two gathers into out-CSR order; the head's gradients go into the
    weight and input gradients at once, so every temporary is ``(E,)`` or ``(N, d)``.

    Without a clamp the per-destination maximum is subtracted before ``exp`` (as softmax does);
    with a clamp ``|logit| <= C`` bounds ``exp`` already, and the result is the same up to
    rounding (softmax does not change under a per-row shift).
    """

    @staticmethod
    def _head(x, weight, bias, h, width):
        rows = slice(h * width, (h + 1) * width)
        return nn.functional.linear(x, weight[rows], None if bias is None else bias[rows])

    @staticmethod
    def forward(ctx, fs, x_src, x_dst, w_q, b_q, w_k, b_k, w_v, b_v, table, clamp, drop_p):
        num_types, num_heads, width = table.shape
        n_src, n_dst, num_edges = x_src.shape[0], x_dst.shape[0], fs.num_edges
        head = _FusedAttention._head
        types = fs.types()
        weights = x_dst.new_empty(num_heads, num_edges)  # exp(logits), type-major in-CSR order
        keep_clamp = (
            torch.empty(num_heads, num_edges, dtype=torch.bool, device=x_dst.device) if clamp is not None else None
        )
        keep_drop = _attention_keep_mask((num_heads, num_edges), drop_p, x_dst.device) if drop_p > 0 else None
        scale = 1.0 / (1.0 - drop_p) if drop_p > 0 else 1.0
        norm = x_dst.new_empty(num_heads, n_dst)  # softmax denominators (1 where no in-edge)
        out = x_dst.new_empty(n_dst, num_heads, width)
        ones = x_src.new_ones(n_src, 1)

        for h in range(num_heads):
            w = weights[h].zero_()
            q_h, k_h = head(x_dst, w_q, b_q, h, width), head(x_src, w_k, b_k, h, width)
            for t, a, b in types:  # w = logits <q_i * e_t, k_j>
                sampled_dot(fs.in_ptr[t], fs.in_idx[a:b], w[a:b], q_h * table[t, h], k_h)
            del q_h, k_h
            if clamp is not None:
                torch.logical_and(w >= -clamp, w <= clamp, out=keep_clamp[h])
                w.clamp_(-clamp, clamp)
            else:  # subtract each destination's maximum over all types
                row_max = torch.stack(
                    [torch.segment_reduce(w[a:b], "max", lengths=fs.in_deg[t]) for t, a, b in types]
                ).amax(0)
                for t, a, b in types:
                    w[a:b] -= torch.repeat_interleave(row_max, fs.in_deg[t], output_size=b - a)
                del row_max
            w.exp_()
            v_h = head(x_src, w_v, b_v, h, width)
            if keep_drop is None:
                v_aug = torch.cat([v_h, ones], 1)  # (N_src, d+1): numerator and denominator
                del v_h
                agg = spmm_sum((fs.in_csr(t, w[a:b]), v_aug) for t, a, b in types)
                del v_aug
                num, den = agg[:, :width], agg[:, width]
            else:
                dropped = torch.where(keep_drop[h], w * scale, 0.0)
                num = spmm_sum((fs.in_csr(t, dropped[a:b]), v_h) for t, a, b in types)
                den = spmm_sum((fs.in_csr(t, w[a:b]), ones) for t, a, b in types).squeeze(1)
                del dropped, v_h
            norm[h] = den
            norm[h].masked_fill_(den == 0, 1.0)
            torch.div(num, norm[h].unsqueeze(1), out=out[:, h])
            del num, den
        ctx.fs, ctx.scale, ctx.same_input = fs, scale, x_src is x_dst
        ctx.save_for_backward(
            x_src, x_dst, w_q, b_q, w_k, b_k, w_v, b_v, table, weights, norm, out, keep_clamp, keep_drop
        )
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        fs, scale = ctx.fs, ctx.scale
        x_src, x_dst, w_q, b_q, w_k, b_k, w_v, b_v, table, weights, norm, out, keep_clamp, keep_drop = ctx.saved_tensors
        num_types, num_heads, width = table.shape
        n_src, n_dst, num_edges = x_src.shape[0], x_dst.shape[0], fs.num_edges
        head = _FusedAttention._head
        types = fs.types()
        needs = ctx.needs_input_grad
        same = ctx.same_input  # one tensor for sources and destinations: one input gradient
        dst_key = 1 if same else 2
        grad = {}  # input index -> gradient
        for i, like in ((1, x_src), (2, x_dst), (3, w_q), (4, b_q), (5, w_k), (6, b_k), (7, w_v), (8, b_v), (9, table)):
            if needs[i] and not (same and i == 2):
                grad[i] = torch.zeros_like(like)

        def back_project(g_h, x, w_key, b_key, x_key, weight, h):
            """Gradients of ``x @ weight[rows].T + bias[rows]`` from ``g_h`` (N, d)."""
            rows = slice(h * width, (h + 1) * width)
            if w_key in grad:
                grad[w_key][rows] = g_h.t() @ x
            if b_key in grad:
                grad[b_key][rows] = g_h.sum(0)
            if x_key in grad:
                grad[x_key].addmm_(g_h, weight[rows])


        for h in range(num_heads):
            w = weights[h]
            g = grad_out[:, h] / norm[h].unsqueeze(1)  # (N_dst, d): dL/d(numerator)
            c = torch.einsum("nd,nd->n", g, out[:, h])  # (N_dst,): -dL/d(denominator)
            grad_w = w.new_zeros(num_edges)  # <g_i, v_j> - c_i, then dL/dlogit
            v_h = head(x_src, w_v, b_v, h, width)
            for t, a, b in types:
                sampled_dot(fs.in_ptr[t], fs.in_idx[a:b], grad_w[a:b], g, v_h)
            del v_h
            if keep_drop is None:
                used = w  # the weights the numerator used
                for t, a, b in types:
                    grad_w[a:b] -= torch.repeat_interleave(c, fs.in_deg[t], output_size=b - a)
                grad_w *= w  # dL/dlogit = w * (<g_i, v_j> - c_i)
            else:
                used = torch.where(keep_drop[h], w * scale, 0.0)
                grad_w *= used
                for t, a, b in types:  # dL/dlogit = used * <g_i, v_j> - w * c_i
                    grad_w[a:b] -= torch.repeat_interleave(c, fs.in_deg[t], output_size=b - a).mul_(w[a:b])
            del c
            if keep_clamp is not None:
                grad_w *= keep_clamp[h]
            if needs[1] or needs[7] or needs[8]:  # dL/dv_j = sum_i used_ij g_i
                values = torch.index_select(used, 0, fs.perm)
                grad_h = spmm_sum((fs.out_csr(t, values[a:b]), g) for t, a, b in types)
                del values
                back_project(grad_h, x_src, 7, 8, 1, w_v, h)
                del grad_h
            del used, g
            q_h = head(x_dst, w_q, b_q, h, width)
            if dst_key in grad or needs[3] or needs[4] or needs[9]:
                # m_t[i] = sum_j grad_w_ij k_j;  dL/dq_i = sum_t m_t[i] * e_t;  dL/de_t = sum_i m_t[i] q_i
                k_h = head(x_src, w_k, b_k, h, width)
                grad_h = torch.zeros_like(q_h)
                for t, a, b in types:
                    m = fs.in_csr(t, grad_w[a:b]) @ k_h  # (N_dst, d)
                    if 9 in grad:
                        grad[9][t, h] = torch.einsum("nd,nd->d", m, q_h)
                    grad_h.addcmul_(m, table[t, h])
                    del m
                del k_h
                back_project(grad_h, x_dst, 3, 4, dst_key, w_q, h)
                del grad_h
            if needs[1] or needs[5] or needs[6]:  # dL/dk_j = sum_i grad_w_ij q_i * e_t
                values = torch.index_select(grad_w, 0, fs.perm)
                grad_h = spmm_sum((fs.out_csr(t, values[a:b]), q_h * table[t, h]) for t, a, b in types)
                del values
                back_project(grad_h, x_src, 5, 6, 1, w_k, h)
                del grad_h
            del q_h, grad_w
        return (None,) + tuple(grad.get(i) for i in range(1, 10)) + (None, None)


BACKENDS = ("auto", "dgl", "torch")


class ExphormerConv(nn.Module):
    r"""Sparse multi-head attention over typed edges, from `Exphormer: Sparse Transformers for
    Graphs <https://arxiv.org/abs/2303.06147>`__.

    Each node attends over its incoming edges only (graph edges, expander edges, virtual-node
    edges...), and the edge's type (or feature) scales the query-key product channel by channel:

    .. math::
        q_i = W_Q h_i,\quad k_j = W_K h_j,\quad v_j = W_V h_j,\quad
        e_{ij} = E[\tau_{ij}] \ \text{(or } W_E x_{ij}\text{)}

        a_{ij} = \mathrm{clamp}\Big(\frac{1}{\sqrt{d}} \sum_{c=1}^{d}
            q_{i,c}\, k_{j,c}\, e_{ij,c},\ -C,\ C\Big),\qquad
        s_{ij} = \frac{\exp(a_{ij})}{\sum_{j' \in \mathcal{N}(i)} \exp(a_{ij'})}

        h_i' = \sum_{j \in \mathcal{N}(i)} s_{ij}\, v_j

    separately for each of the :math:`H` heads (:math:`d` = ``out_feats`` channels each), where
    :math:`\tau_{ij}` = ``graph.edata['etype']`` (0 graph, 1 expander, 2 self-loop, 3/4 virtual
    in/out; see :class:`dgl_rbgt.transforms.edge_types.EdgeType`) and :math:`C` = ``clamp``.
    The normalisation uses :func:`dgl.nn.functional.edge_softmax`, which equals the reference's
    ``exp(clamp(.)) / sum exp(clamp(.))`` (the reference adds ``1e-6`` to the denominator).
    The output is ``(N, H, out_feats)``; like the reference there is no output projection (a
    model mixes the heads itself, e.g. with its feed-forward block).

    Cost: :math:`O(E H d)` time; no ``(E, H, d)`` tensor and no dense :math:`N \times N`
    tensor on the edge-type path. With the torch kernels (see ``backend``) and
    ``get_attention=False`` the whole layer (Q/K/V projections, logits, clamp, softmax,
    dropout, aggregation) is one fused autograd function that keeps the unnormalised weights
    (4 or 8 bytes per edge and head), a 1-byte clamp mask, the output and its inputs, not
    ``q, k, v`` (the backward pass recomputes them one head at a time), and works one head and
    one edge type at a time, so its temporaries are ``(E,)`` or ``(N, d)``. The edge type enters as the
    per-type vector ``e_t`` applied to the queries (:math:`\langle q_i \odot e_t, k_j\rangle`), over
    the edges of that type, which are stored type by type. The index arrays for this (two int32 and
    one int64 array of ``E`` entries) are cached for the last graph seen. The DGL kernels use an auxiliary graph
    whose destination ids encode the edge type (edge ``j -> i`` of type ``t`` goes to
    ``i * T + t``, against the typed queries ``q_i * e_t``), :math:`O(E H + N T H d)` memory.
    The ``edge_feat`` path needs :math:`O(E H d)` memory.

    Parameters
    ----------
    in_feats : int, or pair of ints
        Input feature size. A pair ``(src, dst)`` gives the key/value (source) and query
        (destination) sizes for a bipartite graph or block; an int is used for both.
    out_feats : int
        Output size per head, :math:`d`.
    num_heads : int
        Number of heads, :math:`H`.
    num_edge_types : int, optional
        Rows of the learned edge-type table :math:`E` (shape ``(num_edge_types, H * d)``);
        ``graph.edata['etype']`` must lie in ``[0, num_edge_types)``. Default: 3 (graph,
        expander, self-loop); use 5 with virtual nodes. Unused when ``edge_feats`` is given.
    edge_feats : int, optional
        If given, the edge term is :math:`W_E x_{ij}`, a linear map of the ``edge_feat`` tensor
        passed to :meth:`forward` (``(E, edge_feats)``), instead of the type table. Default: None.
    bias : bool, optional
        Whether the Q, K, V (and edge) projections have a bias. Default: True.
    attn_drop : float, optional
        Dropout on the normalised attention scores. Default: 0.
    allow_zero_in_degree : bool, optional
        If False, a destination node with no incoming edge raises :class:`~dgl.DGLError`. If
        True, such nodes get an all-zero output. Default: False.
    clamp : float or None, optional
        Bound :math:`C` on the attention logits (stabilises ``exp``); None disables it.
        Default: 5.0, as in the reference.
    backend : str, optional
        Sparse kernels. ``"dgl"``: DGL builtins only (``apply_edges`` with ``u_dot_v``,
        ``edge_softmax``, ``update_all(u_mul_e, sum)``). ``"torch"``: the whole layer as one
        autograd function on torch sparse-CSR products (MKL on CPU), with its backward written
        out by hand: the softmax is never normalised edge by edge; ``[v | 1]`` is aggregated with
        the weights ``exp(clamp(logit))``, which gives the numerator and the denominator in one
        product (about half the time of ``dgl.nn.GATConv`` at the same width and heads on CPU;
        see ``tools/bench_exphormer.py``). Without a clamp each row's maximum is subtracted
        first. With ``get_attention`` or ``edge_feats`` the layer runs DGL's builtins, as with
        ``"dgl"``: there is one hand-written backward, not one per variant.
        ``"auto"``: ``"torch"`` on CPU with MKL for float32/float64, ``"dgl"`` otherwise (CUDA).
        Both give the same result up to float rounding. Default: ``"auto"``.

    Note
    ----
    Zero in-degree nodes receive no message, so their output would be zero and carry no
    information; by default the layer raises instead. After
    :class:`~dgl_rbgt.transforms.expander.AddExpanderEdges` every node has ``2 * degree``
    incoming edges. Otherwise add self-loops, typed for the layer, with
    :func:`dgl_rbgt.transforms.edge_types.add_self_loops` (or ``dgl.add_self_loop`` and set
    their ``etype``), or set ``allow_zero_in_degree=True``.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.nn.exphormer import ExphormerConv
    >>> from dgl_rbgt.transforms.expander import AddExpanderEdges

    Case 1: a graph augmented with expander edges (``edata['etype']`` 0 and 1).

    >>> g = AddExpanderEdges(degree=2, seed=0)(dgl.graph(([0, 1, 2, 3], [1, 2, 3, 4]), num_nodes=6))
    >>> conv = ExphormerConv(10, 4, num_heads=2)
    >>> conv(g, torch.randn(6, 10)).shape
    torch.Size([6, 2, 4])
    >>> out, attn = conv(g, torch.randn(6, 10), get_attention=True)
    >>> attn.shape  # (E, H, 1); sums to 1 over each node's incoming edges
    torch.Size([28, 2, 1])

    Case 2: a block from a sampled frontier, features of all source nodes.

    >>> frontier = dgl.sampling.sample_neighbors(g, torch.tensor([0, 1]), 3)
    >>> block = dgl.to_block(frontier)
    >>> conv(block, torch.randn(block.num_src_nodes(), 10)).shape
    torch.Size([2, 2, 4])

    Case 3: edge features instead of edge types, on a bipartite graph.

    >>> bg = dgl.heterograph({("u", "e", "v"): ([0, 1, 2], [0, 1, 1])})
    >>> conv = ExphormerConv((5, 3), 4, num_heads=2, edge_feats=7)
    >>> conv(bg, (torch.randn(3, 5), torch.randn(2, 3)), edge_feat=torch.randn(3, 7)).shape
    torch.Size([2, 2, 4])
    """

    def __init__(
        self,
        in_feats: int | tuple[int, int],
        out_feats: int,
        num_heads: int,
        num_edge_types: int = 3,
        edge_feats: int | None = None,
        bias: bool = True,
        attn_drop: float = 0.0,
        allow_zero_in_degree: bool = False,
        clamp: float | None = 5.0,
        backend: Literal["auto", "dgl", "torch"] = "auto",
    ):
        super().__init__()
        self._backend = check_choice(backend, "backend", BACKENDS)
        in_src, in_dst = expand_as_pair(in_feats)
        self._in_src_feats = check_positive_int(in_src, "in_feats")
        self._in_dst_feats = check_positive_int(in_dst, "in_feats")
        self._out_feats = check_positive_int(out_feats, "out_feats")
        self._num_heads = check_positive_int(num_heads, "num_heads")
        self._num_edge_types = check_positive_int(num_edge_types, "num_edge_types")
        self._edge_feats = None if edge_feats is None else check_positive_int(edge_feats, "edge_feats")
        if clamp is not None:
            clamp = check_nonnegative_float(clamp, "clamp", positive=True)
        self._clamp = clamp
        self._allow_zero_in_degree = check_bool(allow_zero_in_degree, "allow_zero_in_degree")
        width = self._num_heads * self._out_feats
        self.fc_q = nn.Linear(self._in_dst_feats, width, bias=bias)
        self.fc_k = nn.Linear(self._in_src_feats, width, bias=bias)
        self.fc_v = nn.Linear(self._in_src_feats, width, bias=bias)
        if self._edge_feats is None:
            self.edge_emb = nn.Embedding(self._num_edge_types, width)
            self.fc_edge = None
        else:
            self.edge_emb = None
            self.fc_edge = nn.Linear(self._edge_feats, width, bias=bias)
        self.attn_drop = nn.Dropout(check_probability(attn_drop, "attn_drop"))
        #: Index arrays derived from the last graph seen (kept across calls on the same graph, never
        #: pickled or copied); layers that always see the same graph may share one.
        self.structure_cache = GraphCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reinitialise the parameters.

        Q, K, V (and the edge projection) get Glorot-uniform weights and zero biases. The
        edge-type table starts at all ones, so a fresh layer is plain scaled dot-product
        attention, the same for every edge type; training lets the types diverge.
        """
        for fc in (self.fc_q, self.fc_k, self.fc_v, self.fc_edge):
            if fc is None:
                continue
            nn.init.xavier_uniform_(fc.weight)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
        if self.edge_emb is not None:
            nn.init.ones_(self.edge_emb.weight)
        self.structure_cache.clear()

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        """Set ``allow_zero_in_degree`` (as DGL's layers do)."""
        self._allow_zero_in_degree = check_bool(set_value, "allow_zero_in_degree")

    def extra_repr(self) -> str:
        return (
            f"in_feats=({self._in_src_feats}, {self._in_dst_feats}), out_feats={self._out_feats}, "
            f"num_heads={self._num_heads}, num_edge_types={self._num_edge_types}, "
            f"edge_feats={self._edge_feats}, clamp={self._clamp}, backend={self._backend!r}"
        )

    def _check_codes(self, graph: dgl.DGLGraph) -> torch.Tensor:
        """The validated edge types of ``graph`` (int64, ``(E,)``)."""
        if ETYPE not in graph.edata:
            raise DGLError(
                "graph has no edata['etype'] (edge types): augment it with "
                "dgl_rbgt.transforms.expander.AddExpanderEdges, or set "
                "graph.edata['etype'] = torch.zeros(graph.num_edges(), dtype=torch.int64) "
                "for a graph with one edge type; or build the layer with edge_feats and pass edge_feat"
            )
        codes = graph.edata[ETYPE]
        if codes.dim() != 1 or codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise DGLError(
                f"graph.edata['etype'] must be a 1-D integer tensor, got dtype {codes.dtype} "
                f"and shape {tuple(codes.shape)}"
            )
        if codes.numel():
            lo, hi = int(codes.min()), int(codes.max())
            if lo < 0 or hi >= self._num_edge_types:
                raise DGLError(
                    f"graph.edata['etype'] holds values in [{lo}, {hi}], but the layer has "
                    f"num_edge_types={self._num_edge_types} (allowed 0..{self._num_edge_types - 1}); "
                    f"build it with num_edge_types={hi + 1} (5 covers all dgl_rbgt edge types)"
                )
        return codes.to(torch.int64)

    def _typed_graph(self, graph: dgl.DGLGraph) -> Any:
        """Structure for the typed logits, cached per graph.

        An auxiliary bipartite graph where edge ``j -> i`` of type ``t`` becomes
        ``j -> i * T + t``; its edge ids equal the graph's, so one ``u_dot_v`` against the typed
        queries ``q_i * e_t`` (row ``i * T + t``) gives every edge its typed logit.
        """
        codes = self._check_codes(graph)
        num_types = self._num_edge_types
        src, dst = graph.edges(order="eid")
        typed_dst = dst.to(torch.int64) * num_types + codes.to(dst.device)  # (E,)
        return dgl.create_block(
            (src.to(torch.int64), typed_dst),
            num_src_nodes=graph.num_src_nodes(),
            num_dst_nodes=graph.num_dst_nodes() * num_types,
            device=graph.device,
        )

    def forward(
        self,
        graph: dgl.DGLGraph,
        feat: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        edge_feat: torch.Tensor | None = None,
        get_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r"""Compute the attention layer.

        Parameters
        ----------
        graph : DGLGraph
            A homogeneous graph, a bipartite graph with one edge type, or a block. With the
            edge-type table (``edge_feats=None``) it needs ``edata['etype']`` (integer codes in
            ``[0, num_edge_types)``).
        feat : torch.Tensor or pair of torch.Tensor
            ``(N, D_in)`` node features, or a pair ``(N_src, D_src)``, ``(N_dst, D_dst)``.
            For a block a single tensor holds the source nodes' features; the destination nodes
            are its first ``num_dst_nodes`` rows (DGL's convention).
        edge_feat : torch.Tensor, optional
            ``(E, edge_feats)`` edge features; required if and only if the layer was built with
            ``edge_feats``.
        get_attention : bool, optional
            Also return the normalised attention scores ``(E, H, 1)`` (before ``attn_drop``).

        Returns
        -------
        torch.Tensor
            ``(N_dst, H, out_feats)``.
        torch.Tensor, optional
            ``(E, H, 1)`` attention scores, when ``get_attention`` is True.

        Raises
        ------
        DGLError
            On zero in-degree destination nodes (unless ``allow_zero_in_degree``), a missing or
            out-of-range ``edata['etype']``, a heterograph.
        TypeError, ValueError
            On features of the wrong type, dtype, shape, or with NaN/Inf values.
        """
        # A unidirectional bipartite graph with one relation is fine too (like GATConv);
        # _checks.check_homogeneous only lets blocks through, so test that case here.
        if not (graph.is_unibipartite and len(graph.canonical_etypes) == 1):
            check_homogeneous(graph)
        check_nonempty(graph)
        num_heads, out_feats = self._num_heads, self._out_feats
        with graph.local_scope():
            if not self._allow_zero_in_degree and bool((graph.in_degrees() == 0).any()):
                raise DGLError(
                    "There are 0-in-degree nodes in the graph, output for those nodes will be "
                    "invalid. This is harmful for some applications, causing silent performance "
                    "regression. Adding self-loop on the input graph by calling "
                    "`g = dgl_rbgt.transforms.edge_types.add_self_loops(g)` (typed loops; or "
                    "`g = dgl.add_self_loop(g)` and set their edata['etype']) will resolve the "
                    "issue. Setting ``allow_zero_in_degree`` to be `True` when constructing this "
                    "module will suppress the check and let the code run."
                )
            if isinstance(feat, (tuple, list)):
                if len(feat) != 2:
                    raise ValueError(f"feat must be a tensor or a (src, dst) pair, got {len(feat)} items")
                feat_src, feat_dst = feat
                check_feat(feat_src, "feat[0]", rows=graph.num_src_nodes(), last_dim=self._in_src_feats)
                check_feat(feat_dst, "feat[1]", rows=graph.num_dst_nodes(), last_dim=self._in_dst_feats)
            else:
                check_feat(feat, "feat", rows=graph.num_src_nodes(), last_dim=self._in_src_feats)
                feat_src = feat_dst = feat
                if graph.is_block:
                    feat_dst = feat[: graph.num_dst_nodes()]  # dst nodes come first in a block
                if self._in_dst_feats != self._in_src_feats:
                    raise ValueError(
                        f"the layer has different source/destination input sizes "
                        f"{(self._in_src_feats, self._in_dst_feats)}: pass feat as a (src, dst) pair"
                    )
            check_param_dtype(feat_src, self.fc_k.weight, "feat")
            check_param_dtype(feat_dst, self.fc_q.weight, "feat")

            if self.fc_edge is None:
                if edge_feat is not None:
                    raise ValueError(
                        "edge_feat was given, but the layer uses the edge-type table; build it "
                        "with edge_feats=<size> to use edge features"
                    )
                if self._use_torch(feat_dst, graph) and not get_attention and graph.num_edges() > 0:
                    rst = self._fused_attention(graph, feat_src, feat_dst)  # (N_dst, H, d)
                    check_output_finite(rst, feat_src)
                    return rst
            # Everything else (attention scores asked for, edge features, CUDA) runs on DGL's
            # built-in kernels, whose autograd needs no hand-written backward.
            q, k, v = self._project(feat_src, feat_dst)
            if self.fc_edge is None:
                logits = self._typed_logits(graph, q, k)  # (E, H, 1)
            else:
                if edge_feat is None:
                    raise ValueError(
                        f"the layer was built with edge_feats={self._edge_feats}: pass "
                        f"edge_feat of shape (E, {self._edge_feats})"
                    )
                check_feat(edge_feat, "edge_feat", rows=graph.num_edges(), last_dim=self._edge_feats)
                e = self.fc_edge(edge_feat).view(-1, num_heads, out_feats)  # (E, H, d)
                graph.srcdata["k"] = k
                graph.dstdata["q"] = q
                graph.edata["e"] = e
                graph.apply_edges(fn.e_mul_v("e", "q", "eq"))  # (E, H, d): e_ij * q_i
                graph.apply_edges(fn.e_dot_u("eq", "k", "logit"))  # (E, H, 1)
                logits = graph.edata.pop("logit") / math.sqrt(out_feats)

            if self._clamp is not None:
                logits = logits.clamp(-self._clamp, self._clamp)
            attn = edge_softmax(graph, logits)  # (E, H, 1), sums to 1 per destination and head
            graph.srcdata["v"] = v
            graph.edata["a"] = self.attn_drop(attn)
            graph.update_all(fn.u_mul_e("v", "a", "m"), fn.sum("m", "h"))  # fused gspmm
            rst = graph.dstdata["h"]  # (N_dst, H, d); zero rows for nodes without in-edges
            check_output_finite(rst, feat_src)
            if get_attention:
                return rst, attn
            return rst

    def _use_torch(self, like: torch.Tensor, graph: dgl.DGLGraph | None = None) -> bool:
        """Whether this call runs the weighted sums as torch sparse-dense products."""
        if self._backend != "auto":
            return self._backend == "torch"
        if graph is not None:
            formats = graph.formats()
            allowed = set(formats["created"]) | set(formats["not created"])
            if not {"csr", "csc"} <= allowed:  # a graph restricted to COO: stay with DGL
                return False
        return (
            like.device.type == "cpu"
            and torch.backends.mkl.is_available()
            and like.dtype in (torch.float32, torch.float64)
        )

    def _project(
        self, feat_src: torch.Tensor, feat_dst: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, each ``(N, H, d)`` (1/sqrt(d) is applied later, to the
        edge term or the logits, so no scaled copy of the queries is made)."""
        num_heads, out_feats = self._num_heads, self._out_feats
        q = self.fc_q(feat_dst).view(-1, num_heads, out_feats)  # (N_dst, H, d)
        k = self.fc_k(feat_src).view(-1, num_heads, out_feats)  # (N_src, H, d)
        v = self.fc_v(feat_src).view(-1, num_heads, out_feats)  # (N_src, H, d)
        return q, k, v

    def _cached_structure(self, graph: dgl.DGLGraph, mode: str) -> Any:
        """The per-graph structure for ``mode`` ("dgl" or "fused"), cached for the last graph
        (and ``etype`` tensor) seen; another mode on the same graph rebuilds it."""

        def build() -> tuple[str, Any]:
            if mode == "fused":
                return mode, TypedCSR.from_graph(graph, self._check_codes(graph), self._num_edge_types)
            return mode, self._typed_graph(graph)

        codes_field = graph.edata[ETYPE] if ETYPE in graph.edata else None
        cached_mode, value = self.structure_cache.get(graph, codes_field, build)
        if cached_mode != mode:  # same graph, other kernels (e.g. another dtype, get_attention)
            self.structure_cache.clear()
            cached_mode, value = self.structure_cache.get(graph, codes_field, build)
        return value

    def _fused_attention(self, graph: dgl.DGLGraph, feat_src: torch.Tensor, feat_dst: torch.Tensor) -> torch.Tensor:
        """The whole layer (projections included) as one :class:`_FusedAttention`."""
        num_types, num_heads, out_feats = self._num_edge_types, self._num_heads, self._out_feats
        table = self.edge_emb.weight.view(num_types, num_heads, out_feats) / math.sqrt(out_feats)
        structure = self._cached_structure(graph, "fused")
        drop_p = self.attn_drop.p if self.training else 0.0
        fq, fk, fv = self.fc_q, self.fc_k, self.fc_v
        return _FusedAttention.apply(
            structure, feat_src, feat_dst, fq.weight, fq.bias, fk.weight, fk.bias, fv.weight, fv.bias,
            table, self._clamp, drop_p,
        )

    def _typed_logits(self, graph: dgl.DGLGraph, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Logits ``sum_c q_i,c k_j,c e_t,c / sqrt(d)`` for every edge, no (E, H, d) tensor."""
        num_types = self._num_edge_types
        num_heads, out_feats = self._num_heads, self._out_feats
        # (T, H, d); 1/sqrt(d) folded into the small table instead of the queries
        table = self.edge_emb.weight.view(num_types, num_heads, out_feats) / math.sqrt(out_feats)
        if num_types == 1:
            self._check_codes(graph)
            graph.srcdata["k"] = k
            graph.dstdata["q"] = q * table[0]
            graph.apply_edges(fn.u_dot_v("k", "q", "logit"))  # (E, H, 1)
            return graph.edata.pop("logit")
        typed = self._cached_structure(graph, "dgl")
        typed_q = (q.unsqueeze(1) * table.unsqueeze(0)).reshape(-1, num_heads, out_feats)  # (N_dst*T, H, d)
        with typed.local_scope():
            typed.srcdata["k"] = k
            typed.dstdata["q"] = typed_q
            typed.apply_edges(fn.u_dot_v("k", "q", "logit"))  # (E, H, 1), edge ids as in graph
            return typed.edata["logit"]
