"""RBTransformer: SGFormer's architecture with Random Batch Attention as its global attention.

SGFormer (Wu et al., NeurIPS 2023, https://arxiv.org/abs/2306.10759) runs two branches on the
raw features, a shallow transformer and a GCN, and mixes them as ``w * GNN + (1 - w) * Trans``;
the RBA paper (https://arxiv.org/abs/2511.06044) swaps SGFormer's linear attention for RBA.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import dgl
import torch
from dgl.nn import GraphConv
from torch import nn

from dgl_rbgt._checks import (
    check_choice,
    check_feat,
    check_homogeneous,
    check_nonempty,
    check_nonnegative_float,
    check_positive_int,
    check_probability,
)
from dgl_rbgt.nn.rba import EVAL_MODES
from dgl_rbgt.nn.sparse_features import SparseRows, dropout_values, sparse_apply

from .global_attention import ATTENTIONS, AttentionKind, attend, global_attention

__all__ = ["RBTransformer"]


class RBTransformer(nn.Module):
    r"""SGFormer with a choice of global attention; RBA by default.

    .. math::
        x^{(0)} = \mathrm{ReLU}(\mathrm{LN}(W_{in} x)), \quad
        x^{(l)} = \mathrm{LN}\Big(\tfrac{1}{2}\big(\mathrm{Attn}_l(x^{(l-1)}) + x^{(l-1)}\big)\Big)

        \mathrm{logits} = W_{out} \big(w \, \mathrm{GCN}(x) + (1 - w)\, x^{(L)}\big)

    The transformer branch: input ``Linear`` + ``LayerNorm`` + ReLU, then ``layers`` attention
    layers, each followed by SGFormer's residual ``(x + prev) / 2`` and a ``LayerNorm`` (dropout
    after each step). ``Attn`` averages its heads (each head has width ``hidden``, as SGFormer);
    with ``attn_gate=True`` its output is first scaled by a learnable :math:`g_l` that starts at 0.
    The GCN branch: ``gnn_layers`` :class:`dgl.nn.GraphConv` layers on the raw features (width
    ``hidden``; BatchNorm + ReLU + dropout between layers; ``gnn_layers=0`` removes the branch).

    Parameters
    ----------
    in_feats, num_classes : int
        Input feature size and number of output logits.
    hidden : int
        Width of both branches (and of every attention head).
    num_heads : int
        Attention heads per layer.
    layers : int
        Attention layers (SGFormer uses 1).
    group_size : int
        RBA group size :math:`p` (``attention="rba"`` only).
    attention : str
        ``"rba"`` (:class:`~dgl_rbgt.nn.rba.RBAConv`), ``"sgformer"`` (SGFormer's linear
        attention, :class:`~dgl_rbgt.nn.linear_attention.SGFormerAttention`), ``"full"`` (exact
        attention, :class:`~dgl_rbgt.nn.full_attention.FullAttentionConv`, small graphs only),
        ``"memory"`` (recurrent memory across segments, :class:`~dgl_rbgt.nn.MemoryTransformer`) or
        ``"none"`` (no attention layer: the branch is the input MLP).
    eval_mode : str
        RBA's evaluation grouping: ``"fixed"``, ``"mean"`` or ``"full"`` (see
        :class:`~dgl_rbgt.nn.rba.RBAConv`).
    eval_repeats : int
        Groupings averaged by ``eval_mode="mean"``.
    memory_tokens : int
        Memory tokens of ``attention="memory"`` (:class:`~dgl_rbgt.nn.MemoryTransformer`, segments
        of ``group_size`` nodes).
    memory_passes : int
        ``attention="memory"``: ``2`` (default) adds a read-out pass in which every segment reads
        the final memory; ``1`` keeps early segments blind to later ones.
    memory_chains : int
        ``attention="memory"``: independent recurrences per graph, stepping together (fewer,
        larger steps; see :class:`~dgl_rbgt.nn.MemoryTransformer`). Default: ``1``.
    gnn_layers : int
        GraphConv layers in the GCN branch (0 disables it).
    gnn_weight : float
        SGFormer's ``w`` in ``w * GNN + (1 - w) * Trans``, in [0, 1].
    dropout : float
        Dropout in the transformer branch, and in the GCN branch unless ``gnn_dropout`` is set.
    attn_dropout : float
        Dropout on RBA's / full attention's weights.
    use_ln : bool
        LayerNorm in the transformer branch (SGFormer's ``use_bn`` there).
    use_bn : bool
        BatchNorm between GCN layers.
    use_residual : bool
        SGFormer's ``(x + prev) / 2`` after each attention layer.
    self_loops : bool
        Replace the graph's self-loops by exactly one per node before the GCN branch (GCN's
        renormalisation; the subgraph of a node batch can have isolated nodes). With
        ``self_loops=False`` the GraphConvs run with ``allow_zero_in_degree=True``: an isolated
        node then gets only its bias from the GCN branch.
    gnn_dropout : float or None
        Dropout between the GCN branch's layers (SGFormer tunes it apart from the transformer's
        ``dropout``); ``None`` uses ``dropout``.
    gnn_input_dropout : bool
        Also apply the GCN branch's dropout to the raw features before its first GraphConv, as a
        plain GCN does (regularises the wide first layer on few labels, e.g. Planetoid).
    attn_gate : bool
        Multiply each attention layer's output by a learnable scalar that starts at 0 (ReZero,
        Bachlechner et al. 2021), so training decides how much global mixing the branch uses.
        Softmax attention (``rba``, ``full``) cannot switch its mixing off by itself: its
        weights sum to 1 over the group. SGFormer's attention hardly mixes anyway: its global
        term weighs about ``1/N`` against the node's own value.
    use_act : bool
        ReLU after each attention layer (after the residual and norm; SGFormer's
        ``--ours_use_act``).
    sparse_features : bool
        Compute the two projections of the raw features (the transformer's input ``Linear`` and
        the first GraphConv's weight) as sparse-dense products: the same function up to float
        rounding, and much faster on CPU for bag-of-words features that are mostly zeros (Cora,
        CiteSeer, Actor). Dropout on the features then drops their non-zero entries.
    trans_weight_decay : float or None
        Weight decay of the transformer branch (input projection, attention, its norms) when the
        training loop builds its optimiser from :meth:`param_groups`; the GCN branch and the
        head keep the recipe's ``train.weight_decay`` (SGFormer's ``--ours_weight_decay`` vs.
        ``--weight_decay``). ``None``: one weight decay for all.

    Note
    ----
    ``forward(graph, feat)`` takes the full graph or the induced subgraph of a random node batch
    (``batching = ("full", "node_batch")``, SGFormer's large-graph training); blocks are
    rejected. A batched graph keeps attention inside each graph.

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.models.rbtransformer import RBTransformer
    >>> g = dgl.rand_graph(50, 200)
    >>> RBTransformer(8, 3, hidden=16, group_size=16)(g, torch.randn(50, 8)).shape
    torch.Size([50, 3])
    """

    batching: ClassVar[tuple[str, ...]] = ("full", "node_batch")

    @classmethod
    def context_hops(cls, config) -> int:
        """Hops of neighbours a node's logits depend on (the GCN branch), for a recipe's ``model``
        section: evaluating part of a graph needs that much context around it."""
        return max(config.gnn_layers, 1)

    def __init__(
        self,
        in_feats: int,
        num_classes: int,
        *,
        hidden: int = 64,
        num_heads: int = 1,
        layers: int = 1,
        group_size: int = 256,
        attention: AttentionKind = "rba",
        eval_mode: Literal["fixed", "mean", "full"] = "fixed",
        eval_repeats: int = 8,
        memory_tokens: int = 16,
        memory_passes: int = 2,
        memory_chains: int = 1,
        gnn_layers: int = 2,
        gnn_weight: float = 0.5,
        dropout: float = 0.5,
        attn_dropout: float = 0.0,
        use_ln: bool = True,
        use_bn: bool = True,
        use_residual: bool = True,
        self_loops: bool = True,
        gnn_dropout: float | None = None,
        gnn_input_dropout: bool = False,
        trans_weight_decay: float | None = None,
        use_act: bool = False,
        sparse_features: bool = False,
        attn_gate: bool = False,
    ):
        super().__init__()
        check_positive_int(in_feats, "in_feats")
        check_positive_int(num_classes, "num_classes")
        check_positive_int(hidden, "hidden")
        check_positive_int(num_heads, "num_heads")
        check_positive_int(layers, "layers")
        check_positive_int(group_size, "group_size")
        check_choice(attention, "attention", ATTENTIONS)  # before the other checks, as always
        check_choice(eval_mode, "eval_mode", EVAL_MODES)
        check_positive_int(eval_repeats, "eval_repeats")
        check_positive_int(gnn_layers, "gnn_layers", minimum=0)
        self.gnn_weight = check_probability(gnn_weight, "gnn_weight", allow_one=True)
        check_probability(dropout, "dropout")
        check_probability(attn_dropout, "attn_dropout")
        if gnn_dropout is not None:
            check_probability(gnn_dropout, "gnn_dropout")
        if trans_weight_decay is not None:
            trans_weight_decay = check_nonnegative_float(trans_weight_decay, "trans_weight_decay")
        self.trans_weight_decay = trans_weight_decay
        self._in_feats = in_feats
        self.attention = attention
        self.use_residual = use_residual
        self.use_act = use_act
        self.sparse_features = sparse_features
        self._sparse_rows = SparseRows()  # the raw features as sparse rows, kept across full-graph calls
        self.self_loops = self_loops
        self.dropout = nn.Dropout(dropout)
        self.gnn_dropout = nn.Dropout(dropout if gnn_dropout is None else gnn_dropout)
        self.gnn_input_dropout = gnn_input_dropout

        # Transformer branch.
        self.fc_in = nn.Linear(in_feats, hidden)
        self.ln_in = nn.LayerNorm(hidden) if use_ln else nn.Identity()
        self.attns = nn.ModuleList()
        self.lns = nn.ModuleList()
        # One scale per attention layer; None (a buffer, so state dicts without it still load) when off.
        if attn_gate and attention != "none":
            self.attn_gates = nn.Parameter(torch.zeros(layers))
        else:
            self.register_buffer("attn_gates", None)
        for _ in range(layers):
            # Heads averaged, each ``hidden`` wide, as SGFormer.
            conv = global_attention(attention, hidden, num_heads=num_heads, merge="mean", group_size=group_size,
                                    attn_dropout=attn_dropout, eval_mode=eval_mode, eval_repeats=eval_repeats,
                                    memory_tokens=memory_tokens, memory_passes=memory_passes,
                                    memory_chains=memory_chains)
            if conv is None:
                break
            self.attns.append(conv)
            self.lns.append(nn.LayerNorm(hidden) if use_ln else nn.Identity())

        # GCN branch.
        self.gcns = nn.ModuleList()
        self.bns = nn.ModuleList()
        for i in range(gnn_layers):
            self.gcns.append(GraphConv(in_feats if i == 0 else hidden, hidden, allow_zero_in_degree=True))
            if i < gnn_layers - 1:
                self.bns.append(nn.BatchNorm1d(hidden) if use_bn else nn.Identity())

        self.fc_out = nn.Linear(hidden, num_classes)

    def reset_parameters(self) -> None:
        """Reinitialise every layer."""
        # Only the direct parts: a layer's own reset_parameters chooses its sublayers' init.
        parts = [self.fc_in, self.ln_in, *self.attns, *self.lns, *self.gcns, *self.bns, self.fc_out]
        for module in parts:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if self.attn_gates is not None:
            nn.init.zeros_(self.attn_gates)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser parameter groups: the transformer branch, then the GCN branch with the head.

        The transformer branch gets ``trans_weight_decay`` (``weight_decay`` when it is None),
        the rest ``weight_decay``; the training loop uses this instead of ``parameters()``.

        Example
        -------
        >>> from dgl_rbgt.models.rbtransformer import RBTransformer
        >>> m = RBTransformer(8, 3, hidden=16, group_size=16, trans_weight_decay=0.01)
        >>> [g["weight_decay"] for g in m.param_groups(5e-4)]
        [0.01, 0.0005]
        """
        trans = [self.fc_in, self.ln_in, *self.attns, *self.lns]
        trans_params = [p for m in trans for p in m.parameters()]
        if self.attn_gates is not None:
            trans_params.append(self.attn_gates)
        ids = {id(p) for p in trans_params}
        rest = [p for p in self.parameters() if id(p) not in ids]
        wd = weight_decay if self.trans_weight_decay is None else self.trans_weight_decay
        return [{"params": trans_params, "weight_decay": wd},
                {"params": rest, "weight_decay": weight_decay}]

    def _transformer(self, graph, feat: torch.Tensor, xs: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc_in(feat) if xs is None else sparse_apply(self.fc_in, xs)
        x = self.dropout(torch.relu(self.ln_in(h)))  # (N, hidden)
        for i, (attn, ln) in enumerate(zip(self.attns, self.lns)):
            h = attend(attn, graph, x, merge="mean")  # (N, hidden)
            if self.attn_gates is not None:
                h = self.attn_gates[i] * h
            if self.use_residual:
                h = (h + x) / 2
            h = ln(h)
            x = self.dropout(torch.relu(h) if self.use_act else h)
        return x

    def _gcn(self, graph, feat: torch.Tensor, xs: torch.Tensor | None = None) -> torch.Tensor:
        if self.self_loops:
            graph = dgl.add_self_loop(dgl.remove_self_loop(graph))
        # Dropout on the raw features before the first GraphConv, as in a plain GCN: with few
        # labels and wide sparse features (Cora: 1433 words, 140 labels) the first layer
        # otherwise memorises the training nodes.
        h = self.gnn_dropout(feat) if self.gnn_input_dropout and xs is None else feat
        if xs is not None and self.gnn_input_dropout:
            xs = dropout_values(xs, self.gnn_dropout)
        for i, conv in enumerate(self.gcns):
            if i == 0 and xs is not None:
                h = sparse_apply(conv, xs, graph)
            else:
                h = conv(graph, h)  # (N, hidden)
            if i < len(self.gcns) - 1:
                h = self.gnn_dropout(torch.relu(self.bns[i](h)))
        return h

    def forward(self, graph, feat: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for every node of ``graph``."""
        check_homogeneous(graph, "graph", allow_block=False)
        check_nonempty(graph, "graph")
        check_feat(feat, "feat", rows=graph.num_nodes(), last_dim=self._in_feats, ndim=2)
        xs = self._sparse_rows(feat) if self.sparse_features else None
        out = self._transformer(graph, feat, xs)
        if len(self.gcns):
            w = self.gnn_weight
            out = w * self._gcn(graph, feat, xs) + (1 - w) * out
        return self.fc_out(out)
