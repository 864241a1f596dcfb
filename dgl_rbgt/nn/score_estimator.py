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

from dgl_rbgt._checks import (check_bool, check_choice, check_feat, check_homogeneous, check_nonempty,
                              check_nonnegative_float, check_output_finite, check_param_dtype, check_positive_int)
from dgl_rbgt.conventions import ETYPE, edge_type_codes
from dgl_rbgt.nn.typed_csr import GraphCache, TypedCSR, sampled_dot, spmm_sum

__all__ = ["ScoreEstimatorConv"]


class _FusedEstimatorAttention(torch.autograd.Function):
    """The layer's attention from its projections, on torch sparse-CSR products, saving per edge
    only what the backward pass cannot recompute cheaply.

    Inputs ``q (N_dst, H, D)``, ``k, v (N_src, H, D)`` (values already unit-length and scaled),
    per-type per-head ``gain`` and ``bias`` ``(T, H)``; logits
    ``z = clamp((gain_t <q_i, k_j> / sqrt(D) + bias_t) / T, -c, c)``. Per head and edge type: one
    sampled product writes ``<q_i * gain_t / (sqrt(D) T), k_j>`` into the weight buffer, the bias is
    one in-place add over the type's slice (the layout of :class:`~dgl_rbgt.nn.typed_csr.TypedCSR`
    is type-major), then clamp and ``exp`` in place (``|z| <= c`` bounds it, so no maximum is
    subtracted), and one sparse product against ``[v | 1]`` gives numerator and denominator. Autograd
    keeps the ``(H, E)`` weights and a one-byte clamp mask, where DGL's kernels keep several
    ``(E, H)`` tensors per step of the logit (about 5 bytes per edge and head instead of about 45:
    what lets the estimator train on a 10-million-node graph in bounded memory).
    """

    @staticmethod
    def _weights(fs, q_h, k_h, gains, biases, scale, inv_temp, clamp, out, keep):
        """Head ``h``'s ``exp(z)`` into ``out`` (type-major order) and its clamp mask into ``keep``."""
        out.zero_()
        for t, a, b in fs.types():
            sampled_dot(fs.in_ptr[t], fs.in_idx[a:b], out[a:b], q_h * (gains[t] * scale), k_h)
            out[a:b] += biases[t] * inv_temp
        torch.logical_and(out >= -clamp, out <= clamp, out=keep)
        out.clamp_(-clamp, clamp).exp_()
        return out

    @staticmethod
    def forward(ctx, fs, q, k, v, gain, bias, inv_temp, clamp):
        out, weights, keep, norm = _FusedEstimatorAttention.run(fs, q, k, v, gain, bias, inv_temp, clamp)
        ctx.fs, ctx.inv_temp, ctx.scale = fs, inv_temp, inv_temp / math.sqrt(q.shape[2])
        ctx.save_for_backward(q, k, v, gain, bias, weights, keep, norm, out)
        return out

    @staticmethod
    def run(fs, q, k, v, gain, bias, inv_temp, clamp):
        """The forward computation without autograd: ``(out, weights, keep, norm)``, the output,
        ``exp(z)`` per head in type-major order, the clamp masks and the softmax denominators."""
        n_src, n_dst, num_heads, width = k.shape[0], q.shape[0], q.shape[1], q.shape[2]
        scale = inv_temp / math.sqrt(width)
        gains, biases = gain.detach().t().tolist(), bias.detach().t().tolist()  # [h][t]
        weights = q.new_empty(num_heads, fs.num_edges)
        keep = torch.empty(num_heads, fs.num_edges, dtype=torch.bool, device=q.device)
        norm = q.new_empty(num_heads, n_dst)
        out = q.new_empty(n_dst, num_heads, width)
        ones = v.new_ones(n_src, 1)
        for h in range(num_heads):
            w = _FusedEstimatorAttention._weights(fs, q[:, h], k[:, h], gains[h], biases[h], scale, inv_temp, clamp,
                                                  weights[h], keep[h])
            v_aug = torch.cat([v[:, h], ones], 1)  # (N_src, D+1): numerator and denominator at once
            agg = spmm_sum((fs.in_csr(t, w[a:b]), v_aug) for t, a, b in fs.types())
            den = agg[:, width]
            norm[h] = den.masked_fill(den == 0, 1.0)
            torch.div(agg[:, :width], norm[h].unsqueeze(1), out=out[:, h])
        return out, weights, keep, norm

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        fs, inv_temp, scale = ctx.fs, ctx.inv_temp, ctx.scale
        q, k, v, gain, bias, weights, keep, norm, out = ctx.saved_tensors
        num_heads = q.shape[1]
        needs = ctx.needs_input_grad  # (fs, q, k, v, gain, bias, inv_temp, clamp)
        grad_q = torch.zeros_like(q) if needs[1] else None
        grad_k = torch.zeros_like(k) if needs[2] else None
        grad_v = torch.zeros_like(v) if needs[3] else None
        grad_gain = torch.zeros_like(gain) if needs[4] else None
        grad_bias = torch.zeros_like(bias) if needs[5] else None
        types = fs.types()

        for h in range(num_heads):
            w = weights[h]
            g = grad_out[:, h] / norm[h].unsqueeze(1)  # (N_dst, D): dL/d(numerator)
            c = torch.einsum("nd,nd->n", g, out[:, h])  # (N_dst,): -dL/d(denominator)
            if grad_v is not None:  # dL/dv_j = sum_i w_ij g_i
                values = torch.index_select(w, 0, fs.perm)
                grad_v[:, h] = spmm_sum((fs.out_csr(t, values[a:b]), g) for t, a, b in types)
                del values
            grad_w = w.new_zeros(fs.num_edges)  # zeros: sampled_addmm with beta=0 still reads it (0 * NaN)
            v_h = v[:, h]
            for t, a, b in types:  # dL/dz = w_ij (<g_i, v_j> - c_i), zero where clamped
                sampled_dot(fs.in_ptr[t], fs.in_idx[a:b], grad_w[a:b], g, v_h)
                grad_w[a:b] -= torch.repeat_interleave(c, fs.in_deg[t], output_size=b - a)
            grad_w.mul_(w).mul_(keep[h])
            del g, c
            q_h, k_h = q[:, h], k[:, h]
            for t, a, b in types:
                if grad_bias is not None:
                    grad_bias[t, h] = grad_w[a:b].sum() * inv_temp
                if grad_q is not None or grad_gain is not None:
                    m = fs.in_csr(t, grad_w[a:b]) @ k_h  # (N_dst, D): sum_j dL/dz_ij k_j
                    if grad_gain is not None:
                        grad_gain[t, h] = torch.einsum("nd,nd->", m, q_h) * scale
                    if grad_q is not None:
                        grad_q[:, h].add_(m, alpha=float(gain[t, h]) * scale)
            if grad_k is not None:  # dL/dk_j = sum_i dL/dz_ij gain_t scale q_i
                values = torch.index_select(grad_w, 0, fs.perm)
                grad_k[:, h] = spmm_sum((fs.out_csr(t, values[a:b]), q_h * (float(gain[t, h]) * scale))
                                        for t, a, b in types)
                del values
            del grad_w
        return None, grad_q, grad_k, grad_v, grad_gain, grad_bias, None, None


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
        Initial value of the learnable value scale :math:`s` (a finite number > 0).
    clamp : float
        Logits are clipped to :math:`[-c, c]` after the temperature (8 in the reference).
    allow_zero_in_degree : bool
        If False (default), a destination node without in-edges raises
        :class:`~dgl.DGLError`; if True its output is 0.
    backend : str
        ``"auto"`` (default): on CPU (with MKL, float32/64) the layer runs as one autograd function
        on torch sparse-CSR products that keeps about 5 bytes per edge and head for the backward
        pass; blocks, CUDA and scores needed with gradients use DGL's kernels. ``"dgl"`` or
        ``"torch"`` force one path. Both give the same result (tested to 1e-10 in float64).

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
        backend: str = "auto",
    ):
        super().__init__()
        self._backend = check_choice(backend, "backend", ("auto", "dgl", "torch"))
        self.structure_cache = GraphCache()  # the TypedCSR of the last graph (shared across layers by the model)
        src_feats, dst_feats = expand_as_pair(in_feats)
        check_positive_int(src_feats, "in_feats")
        check_positive_int(dst_feats, "in_feats")
        self._in_src_feats, self._in_dst_feats = src_feats, dst_feats
        self._out_feats = check_positive_int(out_feats, "out_feats")
        self._num_heads = check_positive_int(num_heads, "num_heads")
        self._num_edge_types = check_positive_int(num_edge_types, "num_edge_types")
        self.clamp = check_nonnegative_float(clamp, "clamp", positive=True)
        self._value_scale_init = check_nonnegative_float(value_scale, "value_scale", positive=True)
        self._allow_zero_in_degree = check_bool(allow_zero_in_degree, "allow_zero_in_degree")
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
                f"num_heads={self._num_heads}, num_edge_types={self._num_edge_types}, clamp={self.clamp}, "
                f"backend={self._backend!r}")

    def set_allow_zero_in_degree(self, set_value: bool) -> None:
        """Set ``allow_zero_in_degree`` (as DGL's layers do)."""
        self._allow_zero_in_degree = check_bool(set_value, "allow_zero_in_degree")

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
            fused = self._use_torch(graph, feat_src, get_attention)
            if fused:  # codes checked once per graph, when its structure is built
                structure = self._structure(graph)
                in_degrees = structure.in_degrees
            else:
                etype = self._edge_types(graph)
                in_degrees = graph.in_degrees()
            if not self._allow_zero_in_degree and bool((in_degrees == 0).any()):
                raise DGLError(
                    "There are 0-in-degree nodes in the graph, whose output would be 0; add "
                    "self-loops (dgl_rbgt.transforms.edge_types.add_self_loops) or pass "
                    "allow_zero_in_degree=True to accept that")
            h, d = self._num_heads, self._out_feats
            q = self.fc_q(feat_dst).view(-1, h, d)  # (N_dst, H, D)
            k = self.fc_k(feat_src).view(-1, h, d)  # (N_src, H, D)
            # Unit-length values: the estimator expresses itself only through its scores.
            v = F.normalize(self.fc_v(feat_src).view(-1, h, d), p=2.0, dim=-1) * self.value_scale
            if fused:
                args = (structure, q, k, v, self.edge_gain, self.edge_bias, 1.0 / float(self.temperature), self.clamp)
                if not get_attention:
                    out = _FusedEstimatorAttention.apply(*args)
                    check_output_finite(out, feat_src)
                    return out
                with torch.no_grad():  # the scores come from the same pass as the output
                    out, weights, _, norm = _FusedEstimatorAttention.run(*args)
                att = self._fused_scores(structure, weights, norm)
                if torch.is_grad_enabled():  # backend="torch" with gradients: the output needs autograd
                    out = _FusedEstimatorAttention.apply(*args)
                check_output_finite(out, feat_src)
                return out, att
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

    def _use_torch(self, graph: dgl.DGLGraph, like: torch.Tensor, get_attention: bool) -> bool:
        """Whether this call runs on :class:`_FusedEstimatorAttention` (see ``backend``)."""
        if self._backend != "auto":
            return self._backend == "torch"
        return (not graph.is_block and like.device.type == "cpu" and torch.backends.mkl.is_available()
                and like.dtype in (torch.float32, torch.float64)
                and not (get_attention and torch.is_grad_enabled()))  # fused scores carry no gradient

    def _edge_types(self, graph: dgl.DGLGraph, widen: bool = True) -> torch.Tensor:
        """The graph's edge-type codes (int64, or as stored), checked against ``num_edge_types``."""
        etype = edge_type_codes(graph, widen=widen)
        if graph.num_edges() and int(etype.max()) >= self._num_edge_types:
            raise DGLError(
                f"graph.edata['etype'] holds code {int(etype.max())} but the layer has "
                f"num_edge_types={self._num_edge_types}; construct it with a larger "
                f"num_edge_types")
        return etype

    def _structure(self, graph: dgl.DGLGraph) -> TypedCSR:
        """The graph's :class:`~dgl_rbgt.nn.typed_csr.TypedCSR`, built from its edge lists (no CSR or
        CSC format is added to the graph) and cached until another graph or ``etype`` comes."""
        def build() -> TypedCSR:
            return TypedCSR.from_graph(graph, self._edge_types(graph, widen=False), self._num_edge_types)

        field = graph.edata[ETYPE] if ETYPE in graph.edata else None
        return self.structure_cache.get(graph, field, build)

    @staticmethod
    @torch.no_grad()
    def _fused_scores(fs: TypedCSR, weights: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """The normalised scores ``(E, H, 1)`` in edge-id order, from the fused pass's ``exp(z)``
        (type-major order, overwritten) and softmax denominators."""
        num_heads = weights.shape[0]
        att = weights.new_empty(fs.num_edges, num_heads, 1)
        eid = fs.eid.long()
        for h in range(num_heads):
            w = weights[h]
            for t, a, b in fs.types():
                w[a:b] /= torch.repeat_interleave(norm[h], fs.in_deg[t], output_size=b - a)
            att[:, h, 0].index_copy_(0, eid, w)
        return att
