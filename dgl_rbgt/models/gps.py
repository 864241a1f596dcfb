"""GPSTransformer: every layer runs local message passing and a global attention side by side.

GraphGPS (Rampasek et al., "Recipe for a General, Powerful, Scalable Graph Transformer",
NeurIPS 2022, https://arxiv.org/abs/2205.12454) with the local part of a tuned classic GNN (Luo,
Shi, Wu, "Classic GNNs are Strong Baselines", NeurIPS 2024, https://arxiv.org/abs/2406.08993) and
any global attention of :mod:`dgl_rbgt.models.global_attention` (random batch attention by
default), so that one recipe key, ``model.attention``, switches the global part.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import dgl
import dgl.function as fn
import torch
from torch import nn

from dgl_rbgt._checks import (check_bool, check_choice, check_feat, check_homogeneous, check_nonempty,
                              check_positive_int, check_probability)
from dgl_rbgt.nn.sparse_features import SparseRows, dropout_values, sparse_apply

from .baselines import INITS, InitKind, LocalKind, NormKind, local_conv, norm_layer
from .global_attention import AttentionKind, attend, global_attention

__all__ = ["GPSTransformer"]


class GPSTransformer(nn.Module):
    r"""GPS layers: local message passing plus global attention, then a feed-forward block.

    .. math::
        h^{(0)} = W_{in} \mathrm{Drop}(x), \qquad
        h_M = \mathrm{Norm}\big(h + \mathrm{Drop}(\mathrm{ReLU}(\mathrm{MPNN}(h)))\big), \qquad
        h_A = \mathrm{Norm}\big(h + \mathrm{Drop}(W_O\,\mathrm{Attn}(h))\big)

        h^{(l)} = \mathrm{Norm}\big(u + \mathrm{Drop}(\mathrm{FFN}(u))\big), \quad u = h_M + h_A,
        \qquad \mathrm{logits} = W_{out} h^{(L)}

    with :math:`h = h^{(l-1)}`, each norm its own module, ``FFN`` = Linear(d, 2d), ReLU, dropout,
    Linear(2d, d). ``MPNN`` is a ``GraphConv`` (``local="gcn"``), a mean ``SAGEConv``
    (``"sage"``) or a ``GATConv`` with ``num_heads`` heads of width ``hidden // num_heads``,
    concatenated (``"gat"``). ``Attn`` is multi-head attention with ``num_heads`` concatenated
    heads of width ``hidden // num_heads`` and an output projection :math:`W_O`, as GraphGPS's
    ``nn.MultiheadAttention``; ``attention="none"`` drops :math:`h_A` (a tuned local GNN with
    feed-forward blocks), ``ffn=False`` drops the feed-forward block (:math:`h^{(l)} = u`).

    ``block="tuned"`` sums the two branches inside the layer of a tuned classic GNN instead
    (Luo et al.'s ``Drop(ReLU(Norm(conv(h) + lin(h))))``, with the attention as a third term):

    .. math::
        u = \mathrm{Drop}\big(\mathrm{ReLU}(\mathrm{Norm}(\mathrm{MPNN}(h) + W_O\,\mathrm{Attn}(h)))\big)

    There is no identity path around the layer: with ``ego=True`` a node's own features reach the
    next layer through their own learned weight, as in the tuned baselines; with
    ``attention="none"``, ``ego=True`` and ``ffn=False`` the layer stack is a tuned GCN/SAGE/GAT,
    and with ``input_projection=False`` as well the whole model is one (its first layer
    convolves the raw features, :math:`h^{(0)} = \mathrm{Drop}(x)`).
    On minesweeper the GraphGPS form, with its two identity paths, fits the training nodes within
    a few hundred epochs and its validation ROC-AUC falls from there, while the tuned form keeps
    improving for well over a thousand (docs/results_gps.md).

    Parameters
    ----------
    in_feats, num_classes : int
        Input feature size and number of output logits.
    hidden : int
        Width of every layer.
    layers : int
        GPS layers (each one hop of message passing).
    local : str
        The message-passing layer: ``"gcn"``, ``"sage"`` or ``"gat"``.
    attention : str
        The global attention: ``"rba"`` (:class:`~dgl_rbgt.nn.RBAConv`), ``"sgformer"``,
        ``"full"`` (exact, small graphs), ``"memory"`` (recurrent memory) or ``"none"``; see
        :func:`~dgl_rbgt.models.global_attention.global_attention`.
    num_heads : int
        Heads of the attention and of a ``"gat"`` local layer; must divide ``hidden``.
    group_size : int
        RBA's group size :math:`p`.
    eval_mode : str
        RBA's evaluation grouping: ``"fixed"``, ``"mean"`` or ``"full"``.
    eval_repeats : int
        Groupings averaged by ``eval_mode="mean"``.
    attention_every : int
        Global attention in layers ``attention_every``, ``2 * attention_every``, ... only (every
        layer by default, as GraphGPS): a deep local stack (12 layers on minesweeper) needs
        message passing in every layer but not a global exchange, which costs several times a
        layer's message passing.
    memory_tokens : int
        Memory tokens of ``attention="memory"`` (:class:`~dgl_rbgt.nn.MemoryTransformer`, segments
        of ``group_size`` nodes).
    memory_passes : int
        ``attention="memory"``: ``2`` (default) adds a read-out pass in which every segment reads
        the final memory; ``1`` keeps early segments blind to later ones.
    memory_chains : int
        ``attention="memory"``: independent recurrences per graph, stepping together (fewer,
        larger steps; see :class:`~dgl_rbgt.nn.MemoryTransformer`). Default: ``1``.
    block : str
        ``"graphgps"`` (default): each branch with its own identity residual and norm, summed;
        ``"tuned"``: the branches summed before one norm and activation (see above).
    norm : str
        ``"batch"`` (GraphGPS's default), ``"layer"`` or ``"none"``, after every residual sum (of
        the branches' sum with ``block="tuned"``).
    dropout : float
        Dropout on each branch before its residual sum, and inside the feed-forward block.
    input_dropout : float
        Dropout on the raw features before the input projection, as a plain GCN's first dropout:
        it keeps a wide input layer from memorising few labels (Planetoid's 140).
    input_projection : bool
        ``True`` (default): :math:`W_{in}` maps the features to ``hidden`` before the first layer.
        ``False``: the first layer's message passing (and ego map) takes the raw features, as a
        tuned GNN's first convolution does; it then has no attention (``attention_every`` must
        be at least 2 when ``attention`` is not ``"none"``) and needs ``block="tuned"`` (the
        GraphGPS block adds its input to its output).
    attn_dropout : float
        Dropout on the attention weights (``rba``, ``full``) and on GAT's.
    ffn : bool
        The feed-forward block after the two branches.
    attn_gate : bool
        Multiply each attention layer's branch by a learnable scalar :math:`\alpha` that starts
        at 0 (:math:`W_O\,\mathrm{Attn}(h)` becomes :math:`\alpha\,W_O\,\mathrm{Attn}(h)`;
        ReZero, Bachlechner et al. 2021; the same option as :class:`RBTransformer`'s): the model
        starts as its local GNN and training decides how much attention enters. Ignored with
        ``attention="none"``, so a gated recipe and its local model differ by that one key.
    ego : bool
        Add a learned linear map of the layer's input to the message-passing output,
        :math:`\mathrm{MPNN}(h) = \mathrm{conv}(h) + W_e h + b_e` (tunedGNN's residual): a node's own
        features get a weight of their own instead of being averaged with its neighbours', which
        heterophilous graphs such as minesweeper need.
    self_loops : bool
        Replace the graph's self-loops by one per node before a ``"gcn"`` or ``"gat"`` local
        layer (GCN's renormalisation; a node batch's subgraph can have isolated nodes).
        ``"sage"`` has a weight for a node's own features and uses the graph as it is.
    sparse_features : bool
        Compute the input projection (without one: the first layer's convolution and ego map) as
        a sparse-dense product
        (:mod:`dgl_rbgt.nn.sparse_features`): the same function up to float rounding, much faster
        on CPU for wide bag-of-words features (Coauthor CS: 6,805 columns, 0.9% non-zero).
        ``input_dropout`` then drops non-zero entries only (the same law).
    propagation_steps : int
        ``K > 0`` smooths the logits over the graph by ``K`` steps of personalised PageRank,
        :math:`Z \leftarrow (1 - \alpha) \hat A Z + \alpha\,\mathrm{logits}` with
        :math:`\hat A` the symmetrically normalised adjacency with one self-loop per node
        (APPNP's "predict, then propagate", Gasteiger et al., ICLR 2019).
        No weights: every node's prediction also reads its ``K``-hop neighbourhood, which
        homophilous graphs with few labels (Planetoid's 20 per class) reward. ``0`` (default):
        the logits as they are.
    teleport : float
        :math:`\alpha` of ``propagation_steps``, in (0, 1]: the share of a node's own logits kept
        at every step (APPNP's 0.1).
    local_init : str
        The local convolutions' initial weights: ``"dgl"`` (``dgl.nn``'s) or ``"pyg"`` (PyTorch
        Geometric's), as :class:`~dgl_rbgt.models.GCN`'s ``init``.

    Note
    ----
    ``forward(graph, feat)`` takes the full graph or the induced subgraph of a random node batch
    (``batching = ("full", "node_batch")``); blocks are rejected. Attention stays inside each
    graph of a ``dgl.batch`` (it reads ``graph.batch_num_nodes()``).

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.models import GPSTransformer
    >>> g = dgl.rand_graph(50, 200)
    >>> model = GPSTransformer(8, 3, hidden=16, layers=2, local="sage", attention="rba", group_size=16)
    >>> model(g, torch.randn(50, 8)).shape
    torch.Size([50, 3])
    """

    batching: ClassVar[tuple[str, ...]] = ("full", "node_batch")

    @classmethod
    def context_hops(cls, config) -> int:
        """Hops of neighbours a node's logits depend on through message passing (one per layer,
        one per propagation step), for a recipe's ``model`` section."""
        return config.layers + config.propagation_steps

    def __init__(
        self,
        in_feats: int,
        num_classes: int,
        *,
        hidden: int = 64,
        layers: int = 2,
        local: LocalKind = "gcn",
        attention: AttentionKind = "rba",
        attention_every: int = 1,
        num_heads: int = 4,
        group_size: int = 256,
        eval_mode: Literal["fixed", "mean", "full"] = "fixed",
        eval_repeats: int = 8,
        memory_tokens: int = 16,
        memory_passes: int = 2,
        memory_chains: int = 1,
        block: Literal["graphgps", "tuned"] = "graphgps",
        norm: NormKind = "batch",
        dropout: float = 0.2,
        input_dropout: float = 0.0,
        attn_dropout: float = 0.0,
        ffn: bool = True,
        attn_gate: bool = False,
        ego: bool = False,
        self_loops: bool = True,
        sparse_features: bool = False,
        input_projection: bool = True,
        propagation_steps: int = 0,
        teleport: float = 0.1,
        local_init: InitKind = "dgl",
    ):
        super().__init__()
        self._in_feats = check_positive_int(in_feats, "in_feats")
        check_positive_int(num_classes, "num_classes")
        check_positive_int(hidden, "hidden")
        check_positive_int(layers, "layers")
        check_positive_int(num_heads, "num_heads")
        check_positive_int(attention_every, "attention_every")
        self.block = check_choice(block, "block", ("graphgps", "tuned"))
        check_probability(dropout, "dropout")
        self.input_dropout = nn.Dropout(check_probability(input_dropout, "input_dropout"))
        if local == "gat" and hidden % num_heads:
            raise ValueError(f"num_heads must divide hidden for local='gat' (heads are concatenated), got "
                             f"num_heads={num_heads} and hidden={hidden}")
        if not input_projection and block != "tuned":
            raise ValueError("input_projection=False needs block='tuned': the GraphGPS block adds a layer's "
                             f"input (width in_feats = {in_feats}) to its output (width hidden = {hidden})")
        if not input_projection and attention != "none" and attention_every == 1:
            raise ValueError("input_projection=False leaves the first layer on the raw features, without "
                             f"attention: attention_every must be >= 2 with attention={attention!r}, got 1")
        check_bool(attn_gate, "attn_gate")
        check_choice(local_init, "local_init", INITS)
        self.self_loops = self_loops and local != "sage"
        self.sparse_features = sparse_features
        self._sparse_rows = SparseRows()  # the raw features as sparse rows, kept across full-graph calls
        self.fc_in = nn.Linear(in_feats, hidden) if input_projection else None
        self.locals = nn.ModuleList()
        self.egos = nn.ModuleList()
        self.local_norms = nn.ModuleList()
        # Keyed by layer index: with attention_every > 1 only some layers have them.
        self.attns = nn.ModuleDict()
        self.attn_outs = nn.ModuleDict()
        self.attn_norms = nn.ModuleDict()
        self.attn_gates = nn.ParameterDict()
        self.ffns = nn.ModuleList()
        self.ffn_norms = nn.ModuleList()
        head_dim = hidden // num_heads if local == "gat" else hidden
        for i in range(layers):
            width_in = in_feats if i == 0 and not input_projection else hidden
            self.locals.append(local_conv(local, width_in, head_dim, num_heads=num_heads, attn_dropout=attn_dropout,
                                          init=local_init))
            if ego:
                self.egos.append(nn.Linear(width_in, hidden))
            self.local_norms.append(norm_layer(norm, hidden))
            attends = (i + 1) % attention_every == 0
            attn = global_attention(attention if attends else "none", hidden, num_heads=num_heads, merge="concat",
                                    group_size=group_size, attn_dropout=attn_dropout, eval_mode=eval_mode,
                                    eval_repeats=eval_repeats, memory_tokens=memory_tokens,
                                    memory_passes=memory_passes, memory_chains=memory_chains)
            if attn is not None:
                self.attns[str(i)] = attn
                self.attn_outs[str(i)] = nn.Linear(hidden, hidden)
                if attn_gate:
                    self.attn_gates[str(i)] = nn.Parameter(torch.zeros(()))
                if block == "graphgps":
                    self.attn_norms[str(i)] = norm_layer(norm, hidden)
            if ffn:
                self.ffns.append(nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Dropout(dropout),
                                               nn.Linear(2 * hidden, hidden)))
                self.ffn_norms.append(norm_layer(norm, hidden))
        self.dropout = nn.Dropout(dropout)
        self.fc_out = nn.Linear(hidden, num_classes)
        check_positive_int(propagation_steps, "propagation_steps", minimum=0)
        if isinstance(teleport, bool) or not isinstance(teleport, (int, float)) or not 0 < teleport <= 1:
            raise ValueError(f"teleport must be a float in (0, 1] (the share of a node's own logits kept at "
                             f"every propagation step), got {teleport!r}")
        self.propagation_steps = propagation_steps
        self.teleport = float(teleport)

    def reset_parameters(self) -> None:
        """Reinitialise every layer."""
        # Only the direct parts: a layer's own reset_parameters chooses its sublayers' init.
        # (fc_in is None without an input projection: no reset_parameters, skipped below)
        parts = [self.fc_in, *self.locals, *self.egos, *self.local_norms, *self.attns.values(),
                 *self.attn_outs.values(), *self.attn_norms.values(),
                 *(part for block in self.ffns for part in block), *self.ffn_norms, self.fc_out]
        for module in parts:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for gate in self.attn_gates.values():
            nn.init.zeros_(gate)

    def forward(self, graph, feat: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for every node of ``graph``."""
        check_homogeneous(graph, "graph", allow_block=False)
        check_nonempty(graph, "graph")
        check_feat(feat, "feat", rows=graph.num_nodes(), last_dim=self._in_feats, ndim=2)
        # Self-loops only for message passing: dgl.add_self_loop forgets a batch's graph sizes,
        # which attention needs.
        local_graph = dgl.add_self_loop(dgl.remove_self_loop(graph)) if self.self_loops else graph
        if self.sparse_features:
            h = dropout_values(self._sparse_rows(feat), self.input_dropout)  # sparse (N, in_feats)
        else:
            h = self.input_dropout(feat)
        if self.fc_in is not None:
            h = _apply(self.fc_in, h)  # (N, hidden)
        for i, (conv, local_norm) in enumerate(zip(self.locals, self.local_norms)):
            # Without an input projection the first layer reads the raw (maybe sparse) features.
            m = _apply(conv, h, local_graph).flatten(1)  # (N, hidden); GAT: (N, H, hidden / H) concatenated
            if len(self.egos):
                m = m + _apply(self.egos[i], h)
            a = (self.attn_outs[str(i)](attend(self.attns[str(i)], graph, h, merge="concat"))  # (N, hidden)
                 if str(i) in self.attns else None)
            if a is not None and str(i) in self.attn_gates:
                a = self.attn_gates[str(i)] * a
            if self.block == "tuned":
                u = self.dropout(torch.relu(local_norm(m if a is None else m + a)))
            else:
                u = local_norm(h + self.dropout(torch.relu(m)))
                if a is not None:
                    u = u + self.attn_norms[str(i)](h + self.dropout(a))
            if len(self.ffns):
                u = self.ffn_norms[i](u + self.dropout(self.ffns[i](u)))
            h = u
        logits = self.fc_out(h)
        if not self.propagation_steps:
            return logits
        # APPNP's propagation matrix has one self-loop per node, whatever the local layer uses.
        looped = local_graph if self.self_loops else dgl.add_self_loop(dgl.remove_self_loop(graph))
        return personalised_pagerank(looped, logits, self.propagation_steps, self.teleport)


def personalised_pagerank(graph, feat: torch.Tensor, steps: int, teleport: float) -> torch.Tensor:
    r"""``steps`` of :math:`Z \leftarrow (1 - \alpha) D^{-1/2} A D^{-1/2} Z + \alpha\,\mathrm{feat}`
    from :math:`Z = \mathrm{feat}`, with :math:`A` ``graph``'s adjacency as it is (APPNP's
    propagation). DGL's ``APPNPConv`` computes the same but builds float32 edge weights, which
    fail on float64 features."""
    with graph.local_scope():
        src_norm = graph.out_degrees().to(feat).clamp(min=1).rsqrt().unsqueeze(-1)
        dst_norm = graph.in_degrees().to(feat).clamp(min=1).rsqrt().unsqueeze(-1)
        z = feat
        for _ in range(steps):
            graph.srcdata["z"] = z * src_norm
            graph.update_all(fn.copy_u("z", "m"), fn.sum("m", "z"))
            z = (1.0 - teleport) * graph.dstdata["z"] * dst_norm + teleport * feat
        return z


def _apply(layer: nn.Module, h: torch.Tensor, graph=None) -> torch.Tensor:
    """``layer`` on rows ``h`` (with ``graph`` for a convolution), as sparse-dense products when
    ``h`` holds the raw features as sparse rows."""
    if h.is_sparse:
        return sparse_apply(layer, h, graph)
    return layer(h) if graph is None else layer(graph, h)
