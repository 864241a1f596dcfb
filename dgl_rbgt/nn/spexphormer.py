"""Spexphormer's attention over fixed-degree neighbour tables (stage 2, the wide network).

Every destination node attends over exactly ``k`` sampled in-neighbours listed in a table, so the
layer works with dense gathers (``[n, k, H, D]``) and a softmax over the table's last axis: no
scatter, no graph object, and memory known in advance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dgl_rbgt._checks import (check_feat, check_nonnegative_float, check_output_finite, check_param_dtype,
                              check_positive_int)

__all__ = ["SpexphormerConv", "TableBlock"]


# Rows of destinations processed at a time by :class:`_TableAttention`: its gathered
# ``(rows * k, 2HD)`` keys/values fill about this many bytes per intra-op thread, so each thread's
# share stays in cache and the scratch buffers are reused (not fresh multi-megabyte allocations,
# whose page faults cost more than the arithmetic on CPU); with more threads, fewer and larger
# chunks (fewer parallel regions to synchronise).
_CHUNK_BYTES = 2 << 20


def _chunk_rows(k: int, width: int, itemsize: int) -> int:
    budget = _CHUNK_BYTES * max(1, torch.get_num_threads())
    return max(1, budget // max(1, k * 2 * width * itemsize))


class _TableAttention(torch.autograd.Function):
    """Fused attention over a neighbour table, forward and backward by hand.

    Inputs: ``q`` (n, H, D) queries, ``kv`` (N, 2HD) keys then values of the source rows,
    ``emb`` (T, H, D) edge-type vectors, ``bias`` (T, H) or None, ``table``/``etype`` (n, k)
    int64, ``valid`` (n, k) bool or None. Returns ``(out (n, H, D), att (n, k, H))``.

    The logit of entry ``m`` of node ``i`` in head ``h`` is ``sum_c (q_i * e_t)_c k_{j,c} * scale
    + b_{t,h}``: the ``T`` products ``q_i * e_t`` are formed per node (``(n, T, H, D)``) and
    picked per entry, so no keys-times-embedding tensor is formed. The per-head sums over the
    ``D`` channels are matrix-vector products with a ones vector, and the spreading of a per-head
    weight over them a product with the ``(HD, H)`` 0/1 head-membership matrix (BLAS calls instead
    of reductions and broadcasts over a short last axis).
    Destinations are processed in chunks of rows whose gathered keys/values fit small reused
    buffers; the backward gathers them again instead of keeping an ``(n, k, 2HD)`` tensor, so
    the saved state is the attention ``(n, k, H)`` and the clamp mask.
    """

    @staticmethod
    def forward(ctx, q, kv, emb, bias, table, etype, valid, clamp, scale):
        n, h, d = q.shape
        k = table.shape[1]
        t = emb.shape[0]
        width = h * d
        opts = dict(dtype=q.dtype, device=q.device)
        flat = table.reshape(-1)
        att = torch.empty(n, k, h, **opts)
        out = torch.empty(n, width, **opts)
        inside = None if clamp is None else torch.empty(n, k, h, dtype=torch.bool, device=q.device)
        member = _head_membership(h, d, opts)  # (HD, H)
        ones = torch.ones(d, **opts)  # per-head sums over D channels as a matrix-vector product
        step = _chunk_rows(k, width, q.element_size())
        rows = min(step, n)
        buf = torch.empty(rows * k, 2 * width, **opts)
        qbuf = torch.empty(rows * k, width, **opts)
        wide = torch.empty(rows * k, width, **opts)
        qe = torch.empty(rows, t, h, d, **opts)
        emb_scaled = (emb * scale).unsqueeze(0)  # (1, T, H, D)
        base = torch.arange(rows, device=q.device).mul_(t).unsqueeze(1)  # (rows, 1)
        q_flat = q.reshape(n, width)
        for a in range(0, n, step):
            b = min(a + step, n)
            c = b - a
            gathered = torch.index_select(kv, 0, flat[a * k:b * k], out=buf[: c * k])
            keys, values = gathered[:, :width], gathered[:, width:]
            # q_i * e_t * scale for the T types, picked per entry by type
            qe_c = torch.mul(q[a:b].unsqueeze(1), emb_scaled, out=qe[:c]).view(c * t, width)
            pick = (base[:c] + etype[a:b]).view(-1)
            qsel = torch.index_select(qe_c, 0, pick, out=qbuf[: c * k])
            logits = torch.mv(qsel.mul_(keys).view(c * k * h, d), ones).view(c, k, h)  # per-head sums
            if bias is not None:
                logits += bias.index_select(0, etype[a:b].reshape(-1)).view(c, k, h)
            if clamp is not None:
                torch.le(logits.abs(), clamp, out=inside[a:b])  # where the clamp passes gradients
                logits.clamp_(-clamp, clamp)  # |logits| <= clamp: exp cannot overflow
            if valid is not None:
                logits.masked_fill_(~valid[a:b].unsqueeze(-1), float("-inf"))
            if clamp is None:
                top = logits.amax(dim=1, keepdim=True)
                logits -= top.masked_fill_(top == float("-inf"), 0.0)  # rows without valid entries
            att_c = torch.exp(logits, out=att[a:b])
            total = att_c.sum(1, keepdim=True)  # (c, 1, H)
            if valid is not None:
                total.clamp_(min=torch.finfo(total.dtype).tiny)  # rows without valid entries: 0
            att_c.div_(total)
            spread = torch.mm(att_c.view(c * k, h), member.t(), out=wide[: c * k])  # (c*k, HD)
            torch.sum(spread.mul_(values).view(c, k, width), 1, out=out[a:b])
        ctx.save_for_backward(q, kv, emb, att, inside, table, etype, bias)
        ctx.scale = scale
        ctx.mark_non_differentiable(att)
        return out.view(n, h, d), att

    @staticmethod
    def backward(ctx, grad_out, _grad_att):
        q, kv, emb, att, inside, table, etype, bias = ctx.saved_tensors
        n, h, d = q.shape
        k = table.shape[1]
        t = emb.shape[0]
        width = h * d
        scale = ctx.scale
        grad_out = grad_out.reshape(n, width)
        need_q, need_kv, need_emb, need_bias = (ctx.needs_input_grad[i] for i in range(4))
        need_bias = need_bias and bias is not None
        flat = table.reshape(-1)
        opts = dict(dtype=q.dtype, device=q.device)
        member = _head_membership(h, d, opts)  # (HD, H)
        ones = torch.ones(d, **opts)  # per-head sums over D channels as a matrix-vector product
        g_kv = torch.zeros_like(kv) if need_kv else None
        g_q = torch.empty(n, width, **opts) if need_q else None
        g_emb = torch.zeros_like(emb) if need_emb else None
        g_bias = torch.zeros_like(bias) if need_bias else None
        step = _chunk_rows(k, width, q.element_size())
        rows = min(step, n)
        buf = torch.empty(rows * k, 2 * width, **opts)
        gbuf = torch.empty(rows * k, 2 * width, **opts)
        tmp = torch.empty(rows * k, width, **opts)
        wide = torch.empty(rows * k, width, **opts)
        qe = torch.empty(rows, t, h, d, **opts)
        g_qe = torch.empty(rows * t, width, **opts)
        prod = torch.empty(rows, t, h, d, **opts)
        emb_scaled = (emb * scale).unsqueeze(0)  # (1, T, H, D)
        base = torch.arange(rows, device=q.device).mul_(t).unsqueeze(1)
        for a in range(0, n, step):
            b = min(a + step, n)
            c = b - a
            entries = flat[a * k:b * k]
            gathered = torch.index_select(kv, 0, entries, out=buf[: c * k])
            keys, values = gathered[:, :width], gathered[:, width:]
            go = grad_out[a:b].unsqueeze(1)  # (c, 1, HD)
            att_c = att[a:b]  # (c, k, H)
            # d out / d att_m = <grad_out, v_m> per head; softmax backward (att 0 where masked)
            prod_v = torch.mul(values.view(c, k, width), go, out=tmp[: c * k].view(c, k, width))
            g_att = torch.mv(prod_v.view(c * k * h, d), ones).view(c, k, h)
            g_logits = g_att.sub_((att_c * g_att).sum(1, keepdim=True)).mul_(att_c)
            if inside is not None:
                g_logits.mul_(inside[a:b])
            if need_bias:
                g_bias.index_add_(0, etype[a:b].reshape(-1), g_logits.view(-1, h))
            g_spread = torch.mm(g_logits.view(c * k, h), member.t(), out=wide[: c * k])  # (c*k, HD)
            pick = (base[:c] + etype[a:b]).view(-1)
            if need_q or need_emb:
                # logit = <q_i * e_t * scale, k_j>: the gradient of the picked (q_i * e_t) row is
                # g * k_j, summed per (node, type), then split between q_i and e_t
                gq = g_qe[: c * t].zero_()
                gq.index_add_(0, pick, torch.mul(keys, g_spread, out=tmp[: c * k]))
                gq = gq.view(c, t, h, d)
                if need_q:
                    torch.sum(torch.mul(gq, emb_scaled, out=prod[:c]).view(c, t, width), 1, out=g_q[a:b])
                if need_emb:
                    g_emb += torch.mul(gq, q[a:b].unsqueeze(1), out=prod[:c]).sum(0).mul_(scale)
            if need_kv:
                grads = gbuf[: c * k]
                # keys: g * (q_i * e_t * scale); values: att * grad_out
                qe_c = torch.mul(q[a:b].unsqueeze(1), emb_scaled, out=qe[:c]).view(c * t, width)
                torch.index_select(qe_c, 0, pick, out=tmp[: c * k])
                torch.mul(tmp[: c * k], g_spread, out=grads[:, :width])
                spread = torch.mm(att_c.view(c * k, h), member.t(), out=wide[: c * k])
                torch.mul(spread.view(c, k, width), go, out=grads[:, width:].view(c, k, width))
                g_kv.index_add_(0, entries, grads)
        if g_q is not None:
            g_q = g_q.view(n, h, d)
        return g_q, g_kv, g_emb, g_bias, None, None, None, None, None


def _head_membership(h: int, d: int, opts: dict) -> torch.Tensor:
    """``(H*D, H)`` 0/1 matrix: channel ``c`` belongs to head ``c // D``."""
    return torch.eye(h, **opts).repeat_interleave(d, dim=0)


@dataclass
class TableBlock:
    """One layer's input of :class:`SpexphormerConv`: a neighbour table into a source node list.

    The destination nodes are the first ``num_dst`` nodes of the source list (the prefix
    convention of layer-wise mini-batches, see
    :class:`~dgl_rbgt.batching.TableBatching`), so one feature tensor serves both.

    Attributes
    ----------
    table : Tensor
        ``(num_dst, k)`` int64 row indices into the source node list.
    etype : Tensor or None
        ``(num_dst, k)`` int64 edge-type codes (all 0 when None).
    valid : Tensor or None
        ``(num_dst, k)`` bool; False entries take no part in the softmax (None: all valid).
    num_src : int or None
        Length of the source node list (checked against the feature rows when given).
    """

    table: torch.Tensor
    etype: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    num_src: int | None = None

    @property
    def num_dst(self) -> int:
        return int(self.table.shape[0])

    @property
    def k(self) -> int:
        return int(self.table.shape[1])

    def to(self, device: torch.device | str) -> "TableBlock":
        move = (lambda t: None if t is None else t.to(device))
        return TableBlock(self.table.to(device), move(self.etype), move(self.valid), self.num_src)


def _check_index_table(value, name: str, shape: tuple[int, int] | None, upper: int, what: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an int64 or int32 tensor, got dtype {value.dtype}")
    if value.dim() != 2 or (shape is not None and tuple(value.shape) != shape):
        want = "2 dimensions" if shape is None else f"shape {shape}"
        raise ValueError(f"{name} must have {want}, got shape {tuple(value.shape)}")
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= upper):
        raise ValueError(f"{name} holds values in [{int(value.min())}, {int(value.max())}], "
                         f"but must lie in [0, {upper}) ({what})")


class SpexphormerConv(nn.Module):
    r"""Sparse attention over neighbour tables, from `Even Sparser Graph Transformers
    (Spexphormer) <https://arxiv.org/abs/2411.16278>`__.

    The attention of :class:`~dgl_rbgt.nn.exphormer.ExphormerConv` restricted to ``k`` sampled
    in-edges per node (:func:`~dgl_rbgt.sampling.sparsify`): for destination ``i`` with
    table entries :math:`j_1, \dots, j_k` of edge types :math:`t_1, \dots, t_k`,

    .. math::
        z^{(h)}_{i,m} = \mathrm{clamp}\Big(\frac{\sum_c q^{(h)}_{i,c}\, k^{(h)}_{j_m,c}\,
            e^{(h)}_{t_m,c}}{\sqrt{D}} + b^{(h)}_{t_m}, -c, c\Big), \qquad
        h^{(h)}_i = \sum_{m=1}^{k} \frac{\exp z^{(h)}_{i,m}}{\sum_{m'} \exp z^{(h)}_{i,m'}}\,
            v^{(h)}_{j_m},

    with :math:`q = W_Q x_i`, :math:`k = W_K x_j`, :math:`v = W_V x_j` split into :math:`H` heads
    of size :math:`D`, :math:`e_t` a learned embedding of the edge type and :math:`b_t` an optional
    per-type per-head bias (the reference's ``E2``; off by default, which makes the layer equal to
    ``ExphormerConv`` on the graph of the table's edges: the parameter names are the same, so
    ``conv.load_state_dict(exphormer_conv.state_dict())`` carries weights over). Each head attends on its own: the
    reference implementation folds the head axis into the neighbour axis when :math:`H > 1`;
    here the heads are kept apart. Repeated table entries (draws with replacement) count as
    separate edges, as parallel edges do in a DGL graph.

    Parameters
    ----------
    in_feats : int or (int, int)
        Input feature size; a pair gives source and destination sizes.
    out_feats : int
        Size :math:`D` of each head.
    num_heads : int
        Number of heads :math:`H`.
    num_edge_types : int
        Size of the edge-type vocabulary (default 3: graph, expander, self-loop edges).
    bias : bool
        Whether the query, key and value projections have a bias (the reference's wide layer has
        none; ``ExphormerConv`` defaults to True).
    clamp : float or None
        Logits are clipped to :math:`[-c, c]` (5 as in Exphormer); None disables it.
    edge_bias : bool
        Add the per-type per-head logit bias :math:`b`.

    Note
    ----
    Every node sees exactly ``k`` entries, so there are no zero in-degree nodes; rows whose
    entries are all masked (``valid`` False, nodes without in-edges in the sampled graph) get an
    output of 0, as DGL's edge softmax gives a node without in-edges.

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.nn.spexphormer import SpexphormerConv, TableBlock
    >>> conv = SpexphormerConv(8, 4, num_heads=2)
    >>> feat = torch.randn(10, 8)                 # source node list; first 3 are destinations
    >>> table = torch.randint(0, 10, (3, 5))      # 5 neighbours per destination
    >>> out, att = conv(table, feat, get_attention=True)
    >>> out.shape, att.shape
    (torch.Size([3, 2, 4]), torch.Size([3, 5, 2]))

    With edge types and a mask, bundled in a :class:`TableBlock`:

    >>> block = TableBlock(table, etype=torch.randint(0, 3, (3, 5)),
    ...                    valid=torch.ones(3, 5, dtype=torch.bool), num_src=10)
    >>> conv(block, feat).shape
    torch.Size([3, 2, 4])
    """

    def __init__(
        self,
        in_feats: int | tuple[int, int],
        out_feats: int,
        num_heads: int = 1,
        num_edge_types: int = 3,
        *,
        bias: bool = False,
        clamp: float | None = 5.0,
        edge_bias: bool = False,
    ):
        super().__init__()
        src_feats, dst_feats = in_feats if isinstance(in_feats, tuple) else (in_feats, in_feats)
        self._in_src_feats = check_positive_int(src_feats, "in_feats")
        self._in_dst_feats = check_positive_int(dst_feats, "in_feats")
        self._out_feats = check_positive_int(out_feats, "out_feats")
        self._num_heads = check_positive_int(num_heads, "num_heads")
        self._num_edge_types = check_positive_int(num_edge_types, "num_edge_types")
        if clamp is not None:
            clamp = check_nonnegative_float(clamp, "clamp", positive=True)
        self.clamp = clamp
        width = out_feats * num_heads
        self.fc_q = nn.Linear(dst_feats, width, bias=bias)
        self.fc_k = nn.Linear(src_feats, width, bias=bias)
        self.fc_v = nn.Linear(src_feats, width, bias=bias)
        self.edge_emb = nn.Embedding(num_edge_types, width)
        if edge_bias:
            self.edge_bias = nn.Parameter(torch.empty(num_edge_types, num_heads))  # (T, H)
        else:
            self.register_parameter("edge_bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As :class:`~dgl_rbgt.nn.exphormer.ExphormerConv`: Glorot-uniform projections, zero
        biases, an all-ones edge-type table (a fresh layer is plain scaled dot-product attention
        for every edge type); zero logit biases."""
        for fc in (self.fc_q, self.fc_k, self.fc_v):
            nn.init.xavier_uniform_(fc.weight)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
        nn.init.ones_(self.edge_emb.weight)
        if self.edge_bias is not None:
            nn.init.zeros_(self.edge_bias)

    def extra_repr(self) -> str:
        return (f"in_feats=({self._in_src_feats}, {self._in_dst_feats}), out_feats={self._out_feats}, "
                f"num_heads={self._num_heads}, num_edge_types={self._num_edge_types}, "
                f"clamp={self.clamp}, edge_bias={self.edge_bias is not None}")

    def forward(self, table, feat, get_attention: bool = False, *,
                etype: torch.Tensor | None = None, valid: torch.Tensor | None = None):
        """Attend over the table entries of every destination node.

        Parameters
        ----------
        table : Tensor or TableBlock
            ``(n_dst, k)`` int64 indices into the source rows of ``feat``, or a
            :class:`TableBlock` carrying the table, its edge types and mask.
        feat : Tensor or (Tensor, Tensor)
            ``(n_src, in_feats)`` source features whose first ``n_dst`` rows are the destination
            nodes, or a (source, destination) pair.
        get_attention : bool
            Also return the attention weights.
        etype, valid : Tensor, optional
            ``(n_dst, k)`` edge-type codes (default all 0) and validity mask (default all valid);
            ignored when ``table`` is a :class:`TableBlock`.

        Returns
        -------
        Tensor
            ``(n_dst, H, D)`` outputs.
        Tensor, optional
            ``(n_dst, k, H)`` attention weights; they sum to 1 over ``k`` (0 on masked entries).
        """
        num_src = None
        if isinstance(table, TableBlock):
            table, etype, valid, num_src = table.table, table.etype, table.valid, table.num_src
        if isinstance(feat, tuple):
            feat_src, feat_dst = feat
        else:
            feat_src = feat
            check_feat(feat_src, "feat", rows=num_src, last_dim=self._in_src_feats)
            if isinstance(table, torch.Tensor) and table.dim() == 2 and table.shape[0] > feat.shape[0]:
                raise ValueError(f"table has {table.shape[0]} destination rows but feat only "
                                 f"{feat.shape[0]} rows; the destinations must be the first rows of "
                                 f"feat (or pass a (source, destination) pair)")
            feat_dst = feat[: table.shape[0]] if isinstance(table, torch.Tensor) else feat
        if isinstance(feat, tuple):
            check_feat(feat_src, "feat", rows=num_src, last_dim=self._in_src_feats)
        _check_index_table(table, "table", None, feat_src.shape[0], "rows of the source features")
        if isinstance(feat, tuple):
            check_feat(feat_dst, "feat (destination)", rows=table.shape[0], last_dim=self._in_dst_feats)
        check_param_dtype(feat_src, self.fc_k.weight, "feat")
        check_param_dtype(feat_dst, self.fc_q.weight, "feat")
        valid = self._check_entries(table, etype, valid)
        result = self._attend(table, feat_src, feat_dst, etype, valid, get_attention)
        check_output_finite(result[0] if get_attention else result, feat_src)
        return result

    def _check_entries(self, table: torch.Tensor, etype: torch.Tensor | None,
                       valid: torch.Tensor | None) -> torch.Tensor | None:
        """Check ``etype`` and ``valid`` against ``table``; returns ``valid``, or None when
        nothing is masked."""
        n, k = table.shape
        if etype is not None:
            _check_index_table(etype, "etype", (n, k), self._num_edge_types,
                               f"num_edge_types={self._num_edge_types}")
        if valid is not None:
            if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or tuple(valid.shape) != (n, k):
                raise ValueError(f"valid must be a bool tensor of shape {(n, k)}, got "
                                 f"{getattr(valid, 'dtype', type(valid).__name__)} "
                                 f"{tuple(getattr(valid, 'shape', ()))}")
            if bool(valid.all()):
                valid = None  # nothing masked: skip the masking work
        return valid

    def _attend(self, table: torch.Tensor, feat_src: torch.Tensor, feat_dst: torch.Tensor,
                etype: torch.Tensor | None, valid: torch.Tensor | None, get_attention: bool = False):
        """The layer without argument checks (``valid`` None or with at least one False entry).

        Keys and values come from one merged projection of the source rows, gathered once; the
        edge-type vectors are folded into the queries (``q * e_t`` for the ``T`` types, picked
        per entry), so no ``(n, k, H, D)`` keys-times-embedding tensor is formed;
        :class:`_TableAttention` has a hand-written backward that keeps one gathered tensor.
        """
        n, k = table.shape
        h, d = self._num_heads, self._out_feats
        if self.fc_k.bias is None:
            kv_bias = None
        else:
            kv_bias = torch.cat([self.fc_k.bias, self.fc_v.bias])
        kv = nn.functional.linear(feat_src, torch.cat([self.fc_k.weight, self.fc_v.weight]), kv_bias)  # (N, 2HD)
        q = self.fc_q(feat_dst)  # (n, HD)
        if etype is None:
            etype = torch.zeros(n, k, dtype=torch.long, device=table.device)  # every entry type 0
        out, att = _TableAttention.apply(
            q.view(n, h, d), kv, self.edge_emb.weight.view(-1, h, d), self.edge_bias, table.long(),
            etype.long(), valid, self.clamp, 1.0 / math.sqrt(d))
        return (out, att) if get_attention else out
