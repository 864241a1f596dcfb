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

from dgl_rbgt._checks import check_feat, check_positive_int

__all__ = ["SpexphormerConv", "TableBlock"]


@dataclass
class TableBlock:
    """One layer's input of :class:`SpexphormerConv`: a neighbour table into a source node list.

    The destination nodes are the first ``num_dst`` nodes of the source list (the prefix
    convention of layer-wise mini-batches, see
    :class:`~dgl_rbgt.train.neighbour_tables.NeighbourTables`), so one feature tensor serves both.

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
    in-edges per node (:func:`~dgl_rbgt.transforms.sparsify.sparsify`): for destination ``i`` with
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
            if isinstance(clamp, bool) or not isinstance(clamp, (int, float)):
                raise TypeError(f"clamp must be a float or None, got {type(clamp).__name__} {clamp!r}")
            if not (clamp > 0 and math.isfinite(clamp)):
                raise ValueError(f"clamp must be a positive finite number or None, got {clamp}")
            clamp = float(clamp)
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
            check_feat(feat_src, "feat", last_dim=self._in_src_feats)
            if isinstance(table, torch.Tensor) and table.dim() == 2 and table.shape[0] > feat.shape[0]:
                raise ValueError(f"table has {table.shape[0]} destination rows but feat only "
                                 f"{feat.shape[0]} rows; the destinations must be the first rows of "
                                 f"feat (or pass a (source, destination) pair)")
            feat_dst = feat[: table.shape[0]] if isinstance(table, torch.Tensor) else feat
        check_feat(feat_src, "feat", rows=num_src, last_dim=self._in_src_feats)
        n_src = feat_src.shape[0]
        _check_index_table(table, "table", None, n_src, "rows of the source features")
        n, k = table.shape
        check_feat(feat_dst, "feat (destination)", rows=n, last_dim=self._in_dst_feats)
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
        h, d = self._num_heads, self._out_feats
        table = table.long()
        q = self.fc_q(feat_dst).view(n, h, d)  # (n, H, D)
        keys = self.fc_k(feat_src).view(n_src, h, d)[table]  # (n, k, H, D)
        values = self.fc_v(feat_src).view(n_src, h, d)[table]  # (n, k, H, D)
        if etype is None:
            edge = self.edge_emb.weight[0].view(1, 1, h, d)  # (1, 1, H, D) every entry type 0
        else:
            edge = self.edge_emb(etype.long()).view(n, k, h, d)  # (n, k, H, D)
        # Per head: sum_c q_c k_c e_c over that head's channels only (no head/neighbour mixing).
        logits = torch.einsum("nhd,nkhd->nkh", q, keys * edge) / math.sqrt(d)  # (n, k, H)
        if self.edge_bias is not None:
            bias = self.edge_bias[0].view(1, 1, h) if etype is None else self.edge_bias[etype.long()]
            logits = logits + bias  # (n, k, H)
        if self.clamp is not None:
            logits = logits.clamp(-self.clamp, self.clamp)
        if valid is None:
            att = torch.softmax(logits, dim=1)  # (n, k, H)
        else:
            # Masked entries get -inf; a row without any valid entry gets zeros (not NaN).
            any_valid = valid.any(dim=1, keepdim=True).unsqueeze(-1)  # (n, 1, 1)
            masked = logits.masked_fill(~valid.unsqueeze(-1), float("-inf"))
            masked = torch.where(any_valid, masked, torch.zeros_like(logits))
            att = torch.softmax(masked, dim=1) * any_valid  # (n, k, H)
        out = torch.einsum("nkh,nkhd->nhd", att, values)  # (n, H, D)
        return (out, att) if get_attention else out
