"""Message-passing baselines from ``dgl.nn`` (GCN, GraphSAGE, GAT): the peers the transformer
models are compared against, with the options that make classic GNNs strong.

Luo, Shi and Wu, "Classic GNNs are Strong Baselines: Reassessing GNNs for Node Classification"
(NeurIPS 2024, https://arxiv.org/abs/2406.08993, code LUOyk1999/tunedGNN) reach or beat graph
transformers with plain GCN/SAGE/GAT layers plus a residual connection around every layer,
normalisation after it, dropout, a depth searched per dataset, optionally jumping knowledge and a
linear classifier. Those are options here (``residual``, ``norm``, ``dropout``, ``layers``,
``jk``, ``head``); the defaults are the classic models (no residual, no norm, the last layer a
convolution to the classes).

The layer builders :func:`local_conv`, :func:`norm_layer` and :func:`residual_map` are shared with
the local part of :class:`~dgl_rbgt.models.GPSTransformer`.
"""
from __future__ import annotations

import math
import typing
from typing import Callable, ClassVar, Literal, Sequence

import dgl
import torch
from dgl.nn import GATConv, GraphConv, SAGEConv
from torch import nn

from .._checks import check_choice, check_positive_int, check_probability
from ..nn.sparse_features import SparseRows, dropout_values, leading_rows, sparse_apply

__all__ = ["GCN", "SAGE", "GAT", "LocalKind", "LOCAL_CONVS", "NormKind", "NORMS", "HeadKind", "HEADS",
           "ResidualKind", "RESIDUALS", "GATActivation", "GAT_ACTIVATIONS", "InitKind", "INITS", "local_conv",
           "norm_layer", "residual_map"]

#: A message-passing layer from ``dgl.nn``: ``GraphConv``, ``SAGEConv`` (mean) or ``GATConv``.
LocalKind = Literal["gcn", "sage", "gat"]
LOCAL_CONVS: tuple[str, ...] = typing.get_args(LocalKind)
#: Normalisation after a layer: none, ``BatchNorm1d`` or ``LayerNorm``.
NormKind = Literal["none", "batch", "layer"]
NORMS: tuple[str, ...] = typing.get_args(NormKind)
#: The classifier: the last convolution maps to the classes (``"conv"``, the classic models), or
#: every convolution is hidden and a ``Linear`` maps to the classes (``"linear"``, tunedGNN).
HeadKind = Literal["conv", "linear"]
HEADS: tuple[str, ...] = typing.get_args(HeadKind)
#: The residual branch of a hidden layer: none; the layer's input (``"identity"``, through a
#: bias-free linear map where the widths differ); or a learned ``Linear`` of it with a bias
#: (``"linear"``, tunedGNN's ``conv(x) + lin(x)``: a node's own features get their own weight,
#: which heterophilous graphs such as minesweeper need).
ResidualKind = Literal["none", "identity", "linear"]
RESIDUALS: tuple[str, ...] = typing.get_args(ResidualKind)
#: GAT's activation after every hidden layer: ELU (Velickovic et al.) or ReLU (tunedGNN).
GATActivation = Literal["elu", "relu"]
GAT_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"elu": nn.functional.elu, "relu": torch.relu}
#: A convolution's initial weights: ``dgl.nn``'s (``"dgl"``), or the distributions PyTorch
#: Geometric's ``GCNConv``/``SAGEConv``/``GATConv`` draw (``"pyg"``), for reproducing a number
#: published with PyG. They differ for SAGE (DGL: Glorot with ReLU gain, 2.4x PyG's bound at
#: width 64) and GAT (DGL's projection is sqrt(2) wider); GCN's are the same.
InitKind = Literal["dgl", "pyg"]
INITS: tuple[str, ...] = typing.get_args(InitKind)


def _glorot_pyg(tensor: torch.Tensor) -> None:
    """PyG's ``glorot``: uniform in +-sqrt(6 / (rows + columns)) of the last two dimensions."""
    bound = math.sqrt(6.0 / (tensor.size(-2) + tensor.size(-1)))
    nn.init.uniform_(tensor, -bound, bound)


@torch.no_grad()
def _pyg_initialisation(conv: nn.Module) -> None:
    """Redraw a ``dgl.nn`` convolution's weights from the distributions its PyG counterpart uses."""
    if isinstance(conv, GATConv):  # PyG: glorot on the projection and both attention vectors
        _glorot_pyg(conv.fc.weight)
        _glorot_pyg(conv.attn_l)
        _glorot_pyg(conv.attn_r)
    elif isinstance(conv, SAGEConv):  # PyG: two torch-default Linear maps (lin_l with the bias)
        fan_in = conv.fc_neigh.weight.shape[1]
        for fc in (conv.fc_neigh, conv.fc_self):
            nn.init.kaiming_uniform_(fc.weight, a=math.sqrt(5))
        if conv.fc_self.bias is not None:  # DGL keeps SAGEConv's bias in fc_self
            nn.init.uniform_(conv.fc_self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
    # GraphConv: Glorot-uniform weight and zero bias, as PyG's GCNConv.


def local_conv(kind: str, in_feats: int, out_feats: int, *, num_heads: int = 1, attn_dropout: float = 0.0,
               init: str = "dgl") -> nn.Module:
    """One message-passing layer from ``dgl.nn`` that accepts zero in-degree nodes.

    Parameters
    ----------
    kind : str
        ``"gcn"`` (``GraphConv``, symmetric normalisation), ``"sage"`` (``SAGEConv`` with the mean
        aggregator: a self weight plus a neighbour weight) or ``"gat"`` (``GATConv``).
    in_feats, out_feats : int
        Input size and output size (per head for ``"gat"``).
    num_heads, attn_dropout
        ``GATConv``'s heads and attention dropout (``"gat"`` only).
    init : str
        ``"dgl"``: the layer's own initial weights; ``"pyg"``: redrawn from the distributions
        of its PyTorch Geometric counterpart (:data:`InitKind`).

    Returns
    -------
    torch.nn.Module
        Called as ``conv(graph_or_block, feat)``: ``(N_dst, out_feats)``, or
        ``(N_dst, num_heads, out_feats)`` for ``"gat"``.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.models.baselines import local_conv
    >>> g = dgl.rand_graph(10, 30)
    >>> local_conv("sage", 4, 6)(g, torch.randn(10, 4)).shape
    torch.Size([10, 6])
    >>> local_conv("gat", 4, 3, num_heads=2)(g, torch.randn(10, 4)).shape
    torch.Size([10, 2, 3])
    """
    check_choice(kind, "local", LOCAL_CONVS)
    check_choice(init, "init", INITS)
    if kind == "gcn":
        conv = GraphConv(in_feats, out_feats, allow_zero_in_degree=True)
    elif kind == "sage":
        conv = SAGEConv(in_feats, out_feats, "mean")
    else:
        conv = GATConv(in_feats, out_feats, num_heads, attn_drop=attn_dropout, allow_zero_in_degree=True)
    if init == "pyg":
        _pyg_initialisation(conv)
    return conv


def norm_layer(kind: str, width: int) -> nn.Module:
    """``"none"``: identity, ``"batch"``: ``BatchNorm1d(width)``, ``"layer"``: ``LayerNorm(width)``.

    Examples
    --------
    >>> from dgl_rbgt.models.baselines import norm_layer
    >>> norm_layer("layer", 8)
    LayerNorm((8,), eps=1e-05, elementwise_affine=True)
    """
    check_choice(kind, "norm", NORMS)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    return nn.LayerNorm(width) if kind == "layer" else nn.Identity()


def residual_map(in_feats: int, out_feats: int, kind: str = "identity") -> nn.Module:
    """The residual branch of a layer. ``"identity"``: identity when the widths agree, else a
    bias-free linear map (as ``GATConv``'s ``residual=True``); ``"linear"``: a ``Linear`` with a
    bias whatever the widths (tunedGNN).

    Examples
    --------
    >>> from dgl_rbgt.models.baselines import residual_map
    >>> residual_map(8, 8), residual_map(4, 8)
    (Identity(), Linear(in_features=4, out_features=8, bias=False))
    >>> residual_map(8, 8, "linear")
    Linear(in_features=8, out_features=8, bias=True)
    """
    check_choice(kind, "residual", RESIDUALS[1:])
    if kind == "linear":
        return nn.Linear(in_feats, out_feats)
    return nn.Identity() if in_feats == out_feats else nn.Linear(in_feats, out_feats, bias=False)


def _layer_graphs(graph: dgl.DGLGraph | Sequence[dgl.DGLGraph], num_layers: int) -> list:
    """One graph per layer: the same full graph repeated, or the mini-batch's blocks."""
    if isinstance(graph, dgl.DGLGraph):
        return [graph] * num_layers
    blocks = list(graph)
    if len(blocks) != num_layers:
        raise ValueError(f"got {len(blocks)} blocks for a model with {num_layers} layers; "
                         f"set the sampler's fanouts to one entry per layer")
    return blocks


class _MessagePassingNet(nn.Module):
    """The layer loop of GCN, SAGE and GAT.

    Every hidden layer: dropout (not on the raw features unless ``input_dropout``), convolution,
    ``+ residual`` (of the layer's input), norm, activation. Then either the last convolution to
    the classes (``head="conv"``) or dropout and a ``Linear`` on the last hidden layer, or on the
    sum of all hidden layers with ``jk`` (``head="linear"``). ``conv_factory(in, out)`` builds a
    convolution; ``width`` is a hidden layer's output width.
    """

    batching: ClassVar[tuple[str, ...]] = ("full", "neighbor", "node_batch")

    def __init__(self, in_feats: int, num_classes: int, *, hidden: int, width: int, layers: int, dropout: float,
                 self_loops: bool, residual: str, norm: str, jk: bool, head: str, input_dropout: bool,
                 activation: Callable[[torch.Tensor], torch.Tensor],
                 conv_factory: Callable[[int, int], nn.Module], sparse_features: bool = False):
        super().__init__()
        check_positive_int(in_feats, "in_feats")
        check_positive_int(num_classes, "num_classes")
        check_positive_int(hidden, "hidden")
        check_positive_int(layers, "layers")
        check_probability(dropout, "dropout")
        check_choice(norm, "norm", NORMS)
        check_choice(residual, "residual", RESIDUALS)
        check_choice(head, "head", HEADS)
        if jk and head != "linear":
            raise ValueError("jk=True needs head='linear' (the sum of the hidden layers feeds a linear classifier), "
                             f"got head={head!r}")
        num_hidden = layers if head == "linear" else layers - 1
        sizes = [in_feats] + [width] * num_hidden
        # The convolutions first, in order, so that a default model draws its initial weights
        # exactly as the classic model did.
        self.convs = nn.ModuleList(conv_factory(sizes[i], hidden) for i in range(num_hidden))
        if head == "conv":
            self.convs.append(conv_factory(sizes[-1], num_classes))
        self.residuals = nn.ModuleList(residual_map(sizes[i], width, residual) for i in range(num_hidden)
                                       if residual != "none")
        self.norms = nn.ModuleList(norm_layer(norm, width) for _ in range(num_hidden))
        self.head = nn.Linear(width, num_classes) if head == "linear" else None
        self.num_hidden = num_hidden
        self.dropout = nn.Dropout(dropout)
        self.activation = activation
        self.self_loops = self_loops
        self.jk = jk
        self.input_dropout = input_dropout
        self.sparse_features = sparse_features
        self._sparse_rows = SparseRows()  # the raw features as sparse rows, kept across full-graph calls

    def forward(self, graph, feat: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of a full graph, or of the output nodes of a list of blocks
        (one per convolution)."""
        if self.self_loops and isinstance(graph, dgl.DGLGraph) and not graph.is_block:
            graph = dgl.add_self_loop(dgl.remove_self_loop(graph))
        h, summed = feat, None
        for i, (conv, g) in enumerate(zip(self.convs, _layer_graphs(graph, len(self.convs)))):
            if i == 0 and self.sparse_features:
                x = self._sparse_rows(feat)
                x = dropout_values(x, self.dropout) if self.input_dropout else x
                h = sparse_apply(conv, x, g)
            else:
                x = self.dropout(h) if i or self.input_dropout else h
                h = conv(g, x)
            if i == self.num_hidden:  # the last convolution of head="conv", to the classes
                return h.mean(1) if h.dim() == 3 else h  # GAT: (N, H, C) -> (N, C)
            if h.dim() == 3:
                h = h.flatten(1)  # GAT: (N, H, D) -> (N, H * D)
            if len(self.residuals):
                # A block's output nodes are the first rows of its input nodes.
                h = h + (sparse_apply(self.residuals[i], leading_rows(x, h.shape[0])) if x.is_sparse
                         else self.residuals[i](x[:h.shape[0]]))
            h = self.activation(self.norms[i](h))
            # Jumping knowledge: blocks shrink layer by layer, so earlier sums keep their first rows.
            summed = h if summed is None or not self.jk else summed[:h.shape[0]] + h
        return self.head(self.dropout(summed))


class GCN(_MessagePassingNet):
    """Kipf & Welling's graph convolutional network (https://arxiv.org/abs/1609.02907), with the
    options of a tuned classic GCN (Luo, Shi, Wu, NeurIPS 2024).

    Parameters
    ----------
    in_feats, num_classes : int
        Input feature size and number of output logits.
    hidden : int
        Width of the hidden layers.
    layers : int
        Number of graph convolutions (>= 1).
    dropout : float
        Dropout before every convolution (and before the linear head).
    self_loops : bool
        Add a self-loop to every node before the first layer of a full-graph call (GCN's
        renormalisation trick); isolated nodes then keep their own features.
    residual : str
        The residual branch added to every hidden convolution's output, before the norm:
        ``"none"``, ``"identity"`` (the layer's input; a bias-free linear map where the widths
        differ) or ``"linear"`` (a learned ``Linear`` of the layer's input, tunedGNN's
        ``conv(x) + lin(x)``).
    norm : str
        ``"none"``, ``"batch"`` or ``"layer"`` normalisation after every hidden convolution.
    jk : bool
        Jumping knowledge: the classifier reads the sum of all hidden layers (needs
        ``head="linear"``).
    head : str
        ``"conv"``: the last convolution outputs the logits. ``"linear"``: all ``layers``
        convolutions are hidden and a ``Linear`` outputs the logits (tunedGNN).
    input_dropout : bool
        Apply dropout to the raw features too (tunedGNN does not).
    sparse_features : bool
        Compute the first layer's products with the raw features (its convolution and residual)
        as sparse-dense products (:mod:`dgl_rbgt.nn.sparse_features`): the same function up to
        float rounding, much faster on CPU for wide bag-of-words features (Coauthor CS: 6,805
        columns, 0.9% non-zero). Dropout on the raw features then drops non-zero entries only.
    init : str
        ``"dgl"`` (``GraphConv``'s own) or ``"pyg"`` (PyG's ``GCNConv``'s, the same
        distributions): the convolutions' initial weights, :data:`InitKind`.

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.models import GCN
    >>> g = dgl.rand_graph(50, 200)
    >>> GCN(8, 3)(g, torch.randn(50, 8)).shape
    torch.Size([50, 3])
    >>> GCN(8, 3, layers=3, residual="linear", norm="layer", jk=True, head="linear")(g, torch.randn(50, 8)).shape
    torch.Size([50, 3])
    """

    def __init__(self, in_feats: int, num_classes: int, *, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.5, self_loops: bool = True, residual: ResidualKind = "none",
                 norm: NormKind = "none", jk: bool = False, head: HeadKind = "conv", input_dropout: bool = True,
                 sparse_features: bool = False, init: InitKind = "dgl"):
        super().__init__(in_feats, num_classes, hidden=hidden, width=hidden, layers=layers, dropout=dropout,
                         self_loops=self_loops, residual=residual, norm=norm, jk=jk, head=head,
                         input_dropout=input_dropout, activation=torch.relu,
                         conv_factory=lambda a, b: local_conv("gcn", a, b, init=init), sparse_features=sparse_features)


class SAGE(_MessagePassingNet):
    """GraphSAGE (Hamilton, Ying, Leskovec, https://arxiv.org/abs/1706.02216) with the mean
    aggregator, and the options of a tuned classic GraphSAGE (Luo, Shi, Wu, NeurIPS 2024).

    Parameters
    ----------
    in_feats, num_classes, hidden, layers, dropout, residual, norm, jk, head, input_dropout, sparse_features
        As in :class:`GCN`. SAGE has a weight for a node's own features, so it needs no self-loops.
    init : str
        ``"dgl"``: ``SAGEConv``'s Glorot weights with the ReLU gain; ``"pyg"``: PyG's
        ``SAGEConv``'s (PyTorch's default ``Linear`` initialisation, 2.4x narrower at width 64).

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.models import SAGE
    >>> g = dgl.rand_graph(50, 200)
    >>> SAGE(8, 3, residual="identity", norm="batch", head="linear")(g, torch.randn(50, 8)).shape
    torch.Size([50, 3])
    """

    def __init__(self, in_feats: int, num_classes: int, *, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.5, residual: ResidualKind = "none", norm: NormKind = "none", jk: bool = False,
                 head: HeadKind = "conv", input_dropout: bool = True, sparse_features: bool = False,
                 init: InitKind = "dgl"):
        super().__init__(in_feats, num_classes, hidden=hidden, width=hidden, layers=layers, dropout=dropout,
                         self_loops=False, residual=residual, norm=norm, jk=jk, head=head,
                         input_dropout=input_dropout, activation=torch.relu,
                         conv_factory=lambda a, b: local_conv("sage", a, b, init=init), sparse_features=sparse_features)


class GAT(_MessagePassingNet):
    """Graph attention network (https://arxiv.org/abs/1710.10903): heads concatenated in hidden
    layers and averaged in the last one, with the options of a tuned classic GAT.

    Parameters
    ----------
    in_feats, num_classes : int
        Input feature size and number of output logits.
    hidden : int
        Width of every head; a hidden layer is ``hidden * num_heads`` wide.
    num_heads : int
        Attention heads per layer.
    layers, dropout, self_loops, residual, norm, jk, head, input_dropout
        As in :class:`GCN`.
    attn_dropout : float
        Dropout on the attention weights.
    activation : str
        After every hidden layer's norm: ``"elu"`` (the GAT paper's) or ``"relu"`` (tunedGNN's
        tuned GAT, one head, ``conv(h) + W h + b``, norm, ReLU).
    sparse_features : bool
        As in :class:`GCN`: the first layer's projection of the raw features (its attention
        logits and messages both start from it) as sparse-dense products.
    init : str
        ``"dgl"``: ``GATConv``'s Glorot-normal weights with the ReLU gain; ``"pyg"``: PyG's
        ``GATConv``'s Glorot-uniform ones (the projection sqrt(2) narrower).

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.models import GAT
    >>> g = dgl.add_self_loop(dgl.rand_graph(50, 200))
    >>> GAT(8, 3, hidden=8, num_heads=2)(g, torch.randn(50, 8)).shape
    torch.Size([50, 3])
    >>> GAT(8, 3, hidden=16, num_heads=1, layers=3, residual="linear", norm="layer", head="linear",
    ...     activation="relu", attn_dropout=0.0, input_dropout=False)(g, torch.randn(50, 8)).shape
    torch.Size([50, 3])
    """

    def __init__(self, in_feats: int, num_classes: int, *, hidden: int = 8, num_heads: int = 8,
                 layers: int = 2, dropout: float = 0.6, attn_dropout: float = 0.6,
                 self_loops: bool = True, residual: ResidualKind = "none", norm: NormKind = "none", jk: bool = False,
                 head: HeadKind = "conv", input_dropout: bool = True, activation: GATActivation = "elu",
                 sparse_features: bool = False, init: InitKind = "dgl"):
        check_positive_int(num_heads, "num_heads")
        check_probability(attn_dropout, "attn_dropout")
        check_choice(activation, "activation", tuple(GAT_ACTIVATIONS))
        super().__init__(in_feats, num_classes, hidden=hidden, width=hidden * num_heads, layers=layers,
                         dropout=dropout, self_loops=self_loops, residual=residual, norm=norm, jk=jk, head=head,
                         input_dropout=input_dropout, activation=GAT_ACTIVATIONS[activation],
                         conv_factory=lambda a, b: local_conv("gat", a, b, num_heads=num_heads,
                                                              attn_dropout=attn_dropout, init=init),
                         sparse_features=sparse_features)
