"""Exphormer for node tasks: GPS-style blocks of a local GCN and sparse expander attention."""
from __future__ import annotations

import dgl
import torch
from dgl.base import DGLError
from dgl.nn import GraphConv
from torch import nn

from dgl_rbgt._checks import check_bool, check_feat, check_homogeneous, check_positive_int, check_probability
from dgl_rbgt.conventions import ETYPE
from dgl_rbgt.nn.exphormer import ExphormerConv
from dgl_rbgt.nn.typed_csr import GraphCache

__all__ = ["Exphormer"]

GRAPH_EDGE = 0
IS_VIRTUAL = "is_virtual"  # node mask written by dgl_rbgt.transforms.virtual_nodes


def _local_graph(graph: dgl.DGLGraph) -> dgl.DGLGraph:
    """The input graph's own edges (etype 0) without loops, plus one self-loop per node.

    This is the graph a GCN with "remaining" self-loops (PyG's ``GCNConv``, used by the
    reference) sees: expander, virtual-node and typed self-loop edges are left to attention.
    """
    src, dst = graph.edges(order="eid")
    keep = (graph.edata[ETYPE] == GRAPH_EDGE) & (src != dst)
    local = dgl.graph((src[keep], dst[keep]), num_nodes=graph.num_nodes(), idtype=graph.idtype, device=graph.device)
    return dgl.add_self_loop(local)


class _ExphormerBlock(nn.Module):
    """h_loc = BN(h + Drop(GCN(h))); h_att = BN(h + Drop(Attn(h))); h = h_loc + h_att;
    h = BN(h + FFN(h)), FFN = Linear -> ReLU -> Drop -> Linear -> Drop (as the reference)."""

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        dropout: float,
        attn_dropout: float,
        num_edge_types: int,
        clamp: float | None,
        local_gcn: bool,
        attn_bias: bool,
    ):
        super().__init__()
        self.gcn = GraphConv(hidden, hidden, norm="both", allow_zero_in_degree=True) if local_gcn else None
        self.norm_local = nn.BatchNorm1d(hidden) if local_gcn else None
        self.attn = ExphormerConv(
            hidden,
            hidden // num_heads,
            num_heads,
            num_edge_types=num_edge_types,
            bias=attn_bias,
            attn_drop=attn_dropout,
            clamp=clamp,
        )
        self.norm_attn = nn.BatchNorm1d(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 2 * hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden, hidden),
            nn.Dropout(dropout),
        )
        self.norm_ffn = nn.BatchNorm1d(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, graph: dgl.DGLGraph, local: dgl.DGLGraph | None, h: torch.Tensor) -> torch.Tensor:
        h_att = self.attn(graph, h).flatten(1)  # (N, H, d) -> (N, H*d): heads concatenated
        h_att = self.norm_attn(h + self.dropout(h_att))
        if self.gcn is None:
            mixed = h_att
        else:
            h_loc = self.norm_local(h + self.dropout(self.gcn(local, h)))
            mixed = h_loc + h_att
        return self.norm_ffn(mixed + self.ffn(mixed))


class Exphormer(nn.Module):
    r"""Exphormer (`Shirzad et al., ICML 2023 <https://arxiv.org/abs/2303.06147>`__) for node
    classification on a whole graph augmented with expander (and optionally virtual-node) edges.

    Input ``Linear``, then ``layers`` GPS-style blocks, then an output ``Linear``; each block is

    .. math::
        h_{loc} &= \mathrm{BN}(h + \mathrm{Drop}(\mathrm{GCN}(h)))

        h_{att} &= \mathrm{BN}(h + \mathrm{Drop}(\mathrm{Attn}(h)))

        h &= \mathrm{BN}(h' + \mathrm{FFN}(h')),\quad h' = h_{loc} + h_{att}

    where GCN is a symmetric-normalised graph convolution over the input graph's own edges
    (``edata['etype'] == 0``) plus one self-loop per node, and Attn is
    :class:`~dgl_rbgt.nn.exphormer.ExphormerConv` over *all* edges (graph, expander, virtual),
    its heads concatenated. The GCN graph is built once and cached while the same graph object
    (with the same ``etype`` tensor) is passed again.

    The graph comes from the recipe's transforms, e.g.
    :class:`~dgl_rbgt.transforms.expander.AddExpanderEdges` (then ``num_edge_types=3`` covers
    it) and optionally :class:`~dgl_rbgt.transforms.virtual_nodes.AddVirtualNodes` (use
    ``num_edge_types=5``). Nodes marked by ``ndata['is_virtual']`` start from a learned embedding
    instead of the projection of their (zero) features; their logits are returned like the
    others and should be left out by the masks (which they are: their masks are False).

    Parameters
    ----------
    in_feats : int
        Input feature size.
    num_classes : int
        Number of classes (output size).
    hidden : int
        Width of every block; must be divisible by ``num_heads``.
    num_heads : int
        Attention heads (each ``hidden // num_heads`` wide).
    layers : int
        Number of blocks.
    dropout : float
        Dropout after the GCN, the attention and inside the feed-forward block.
    attn_dropout : float
        Dropout on the attention scores.
    num_edge_types : int
        Size of the attention's edge-type table (3: graph, expander, self-loop; 5 with virtual
        nodes).
    clamp : float or None
        Bound on the attention logits (None: no bound).
    local_gcn : bool
        Include the local GCN branch (False leaves attention alone, an ablation).
    attn_bias : bool
        Biases in the attention's Q, K, V projections (the reference has none).

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.models.exphormer import Exphormer
    >>> from dgl_rbgt.transforms.expander import AddExpanderEdges
    >>> g = AddExpanderEdges(degree=3, seed=0)(dgl.rand_graph(50, 200))
    >>> model = Exphormer(16, 4, hidden=32, layers=2)
    >>> model(g, torch.randn(50, 16)).shape
    torch.Size([50, 4])
    """

    batching = ("full",)
    #: Attention reads ``edata['etype']``: a recipe needs a transform that writes it (expander).
    needs_edge_types = True

    def __init__(
        self,
        in_feats: int,
        num_classes: int,
        *,
        hidden: int = 64,
        num_heads: int = 2,
        layers: int = 4,
        dropout: float = 0.4,
        attn_dropout: float = 0.2,
        num_edge_types: int = 3,
        clamp: float | None = 5.0,
        local_gcn: bool = True,
        attn_bias: bool = False,
    ):
        super().__init__()
        self.in_feats = check_positive_int(in_feats, "in_feats")
        check_positive_int(num_classes, "num_classes")
        check_positive_int(hidden, "hidden")
        check_positive_int(num_heads, "num_heads")
        check_positive_int(layers, "layers")
        check_probability(dropout, "dropout")
        check_probability(attn_dropout, "attn_dropout")
        if hidden % num_heads:
            raise ValueError(
                f"hidden must be divisible by num_heads, got hidden={hidden} and "
                f"num_heads={num_heads}; e.g. hidden={num_heads * max(1, round(hidden / num_heads))}"
            )
        check_bool(local_gcn, "local_gcn")
        check_bool(attn_bias, "attn_bias")
        self.local_gcn = local_gcn
        self.input = nn.Linear(in_feats, hidden)
        self.virtual_emb = nn.Parameter(torch.zeros(hidden))
        self.blocks = nn.ModuleList(
            _ExphormerBlock(hidden, num_heads, dropout, attn_dropout, num_edge_types, clamp, local_gcn, attn_bias)
            for _ in range(layers)
        )
        self.output = nn.Linear(hidden, num_classes)
        self._local_cache = GraphCache()
        # every block attends over the same graph: one cached edge layout for all of them
        # (ExphormerConv keeps index arrays of E entries per graph), not one per block
        shared = GraphCache()
        for block in self.blocks:
            block.attn.structure_cache = shared
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reinitialise all parameters (virtual-node embedding: N(0, 1))."""

        def reset(module: nn.Module) -> None:
            # a layer resets its own parts (ExphormerConv's edge table starts at ones, which
            # its nn.Embedding's own reset would undo), so do not descend into it
            for child in module.children():
                if hasattr(child, "reset_parameters"):
                    child.reset_parameters()
                else:
                    reset(child)

        reset(self)
        nn.init.normal_(self.virtual_emb)
        self._local_cache.clear()

    def forward(self, graph: dgl.DGLGraph, feat: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for all nodes of ``graph`` (virtual ones included)."""
        check_homogeneous(graph, allow_block=False)
        check_feat(feat, "feat", rows=graph.num_nodes(), last_dim=self.in_feats)
        if ETYPE not in graph.edata:
            raise DGLError(
                "graph has no edata['etype']: Exphormer needs typed edges; augment the graph with "
                "dgl_rbgt.transforms.expander.AddExpanderEdges first"
            )
        local = None
        if self.local_gcn:
            local = self._local_cache.get(graph, graph.edata[ETYPE], lambda: _local_graph(graph))
        h = self.input(feat)  # (N, hidden)
        if IS_VIRTUAL in graph.ndata:
            is_virtual = graph.ndata[IS_VIRTUAL].bool().unsqueeze(1)  # (N, 1)
            h = torch.where(is_virtual, self.virtual_emb.to(h.dtype), h)
        for block in self.blocks:
            h = block(graph, local, h)
        return self.output(h)  # (N, num_classes)
