"""Message-passing baselines from ``dgl.nn`` (GCN, GAT), used to prove the pipeline end to end
before the transformer layers and as the peers those layers are compared against."""
from __future__ import annotations

from typing import ClassVar, Sequence

import dgl
import torch
from dgl.nn import GATConv, GraphConv
from torch import nn

from .._checks import check_positive_int, check_probability

__all__ = ["GCN", "GAT"]


def _layer_graphs(graph: dgl.DGLGraph | Sequence[dgl.DGLGraph], num_layers: int) -> list:
    """One graph per layer: the same full graph repeated, or the mini-batch's blocks."""
    if isinstance(graph, dgl.DGLGraph):
        return [graph] * num_layers
    blocks = list(graph)
    if len(blocks) != num_layers:
        raise ValueError(f"got {len(blocks)} blocks for a model with {num_layers} layers; "
                         f"set the sampler's fanouts to one entry per layer")
    return blocks


def _check_common(in_feats: int, num_classes: int, hidden: int, layers: int, dropout: float) -> None:
    check_positive_int(in_feats, "in_feats")
    check_positive_int(num_classes, "num_classes")
    check_positive_int(hidden, "hidden")
    check_positive_int(layers, "layers")
    check_probability(dropout, "dropout")


class GCN(nn.Module):
    """Kipf & Welling's graph convolutional network (https://arxiv.org/abs/1609.02907).

    Parameters
    ----------
    in_feats, num_classes : int
        Input feature size and number of output logits.
    hidden : int
        Width of the hidden layers.
    layers : int
        Number of graph convolutions (>= 1).
    dropout : float
        Dropout before every convolution.
    self_loops : bool
        Add a self-loop to every node before the first layer of a full-graph call (GCN's
        renormalisation trick); isolated nodes then keep their own features.

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.models import GCN
    >>> g = dgl.rand_graph(50, 200)
    >>> GCN(8, 3)(g, torch.randn(50, 8)).shape
    torch.Size([50, 3])
    """

    batching: ClassVar[tuple[str, ...]] = ("full", "neighbor", "node_batch")

    def __init__(self, in_feats: int, num_classes: int, *, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.5, self_loops: bool = True):
        super().__init__()
        _check_common(in_feats, num_classes, hidden, layers, dropout)
        sizes = [in_feats] + [hidden] * (layers - 1) + [num_classes]
        self.convs = nn.ModuleList(
            GraphConv(a, b, allow_zero_in_degree=True) for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = nn.Dropout(dropout)
        self.self_loops = self_loops

    def forward(self, graph, feat: torch.Tensor) -> torch.Tensor:
        if self.self_loops and isinstance(graph, dgl.DGLGraph) and not graph.is_block:
            graph = dgl.add_self_loop(dgl.remove_self_loop(graph))
        h = feat
        for i, (conv, g) in enumerate(zip(self.convs, _layer_graphs(graph, len(self.convs)))):
            h = conv(g, self.dropout(h))
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return h


class GAT(nn.Module):
    """Graph attention network (https://arxiv.org/abs/1710.10903): heads concatenated in hidden
    layers and averaged in the last one.

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.models import GAT
    >>> g = dgl.add_self_loop(dgl.rand_graph(50, 200))
    >>> GAT(8, 3, hidden=8, num_heads=2)(g, torch.randn(50, 8)).shape
    torch.Size([50, 3])
    """

    batching: ClassVar[tuple[str, ...]] = ("full", "neighbor", "node_batch")

    def __init__(self, in_feats: int, num_classes: int, *, hidden: int = 8, num_heads: int = 8,
                 layers: int = 2, dropout: float = 0.6, attn_dropout: float = 0.6,
                 self_loops: bool = True):
        super().__init__()
        _check_common(in_feats, num_classes, hidden, layers, dropout)
        check_positive_int(num_heads, "num_heads")
        check_probability(attn_dropout, "attn_dropout")
        self.convs = nn.ModuleList()
        size = in_feats
        for i in range(layers):
            last = i == layers - 1
            self.convs.append(GATConv(size, num_classes if last else hidden, num_heads,
                                      feat_drop=dropout, attn_drop=attn_dropout,
                                      activation=None if last else nn.functional.elu,
                                      allow_zero_in_degree=True))
            size = hidden * num_heads
        self.self_loops = self_loops

    def forward(self, graph, feat: torch.Tensor) -> torch.Tensor:
        if self.self_loops and isinstance(graph, dgl.DGLGraph) and not graph.is_block:
            graph = dgl.add_self_loop(dgl.remove_self_loop(graph))
        h = feat
        graphs = _layer_graphs(graph, len(self.convs))
        for i, (conv, g) in enumerate(zip(self.convs, graphs)):
            h = conv(g, h)  # (N, H, D)
            h = h.mean(1) if i == len(self.convs) - 1 else h.flatten(1)
        return h
