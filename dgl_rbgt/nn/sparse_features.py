"""Wide, mostly-zero input features (bag-of-words: Coauthor CS has 6,805 columns, 0.9% non-zero)
through a model's first layer as sparse-dense products.

A first layer's cost on such features is its dense products with the raw rows: for a 512-wide
SAGE layer on CS, three ``18,333 x 6,805 x 512`` products forward and three more backward, several
seconds an epoch on two cores. Every first layer we use applies a weight to the raw rows and then
sums, averages or normalises, all linear, so the weight can meet the rows as a sparse-dense
product and the rest runs on the narrow result: the same function up to float rounding. (A GAT
layer's attention logits are functions of the projected rows too.) :func:`sparse_apply` does that
for ``nn.Linear``, ``nn.Identity``, ``dgl.nn.GraphConv`` (symmetric normalisation),
``dgl.nn.SAGEConv`` (mean) and ``dgl.nn.GATConv``, on a graph or a block.
"""
from __future__ import annotations

import weakref

import dgl.function as fn
import torch
from dgl.nn import GATConv, GraphConv, SAGEConv
from dgl.nn.functional import edge_softmax
from torch import nn

__all__ = ["sparse_rows", "SparseRows", "dropout_values", "leading_rows", "sparse_apply", "SPARSE_FIRST_LAYERS"]

#: The first layers :func:`sparse_apply` computes from sparse rows.
SPARSE_FIRST_LAYERS = (nn.Linear, nn.Identity, GraphConv, SAGEConv, GATConv)


def sparse_rows(feat: torch.Tensor) -> torch.Tensor:
    """``feat`` (2-D, dense) as a coalesced sparse COO tensor, detached: raw features take no
    gradient.

    Example
    -------
    >>> import torch
    >>> from dgl_rbgt.nn.sparse_features import sparse_rows
    >>> sparse_rows(torch.tensor([[0., 2.], [0., 0.]]))._nnz()
    1
    """
    if not (isinstance(feat, torch.Tensor) and feat.layout == torch.strided and feat.dim() == 2):
        raise ValueError(f"feat must be a 2-D dense tensor, got {type(feat).__name__} "
                         f"{getattr(feat, 'layout', '')} with shape {tuple(getattr(feat, 'shape', ()))}")
    return feat.detach().to_sparse().coalesce()


class SparseRows:
    """:func:`sparse_rows` that remembers its last result: a full-graph model is given the same
    feature tensor every epoch, and converting CS's 18,333 x 6,805 rows takes 0.6 s on one core.

    The result is reused only while the last tensor is alive, is the very object passed and has not
    been modified in place (its version counter); anything else is converted afresh. A model holds
    one as a plain attribute: it is not state, so copies and pickles start empty.

    Example
    -------
    >>> import torch
    >>> from dgl_rbgt.nn.sparse_features import SparseRows
    >>> rows, feat = SparseRows(), torch.eye(3)
    >>> rows(feat) is rows(feat)
    True
    >>> first = rows(feat); feat[0, 1] = 2.0
    >>> rows(feat) is first, rows(feat)._nnz()
    (False, 4)
    """

    def __init__(self):
        self._source = None
        self._version = -1
        self._rows = None

    def __call__(self, feat: torch.Tensor) -> torch.Tensor:
        if self._source is not None and self._source() is feat and feat._version == self._version:
            return self._rows
        rows = sparse_rows(feat)
        self._source, self._version, self._rows = weakref.ref(feat), feat._version, rows
        return rows

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def __deepcopy__(self, memo) -> "SparseRows":
        return SparseRows()


def dropout_values(xs: torch.Tensor, dropout: nn.Dropout) -> torch.Tensor:
    """``dropout`` on the non-zero entries of sparse ``xs``: the law of dropout on the dense rows
    (a zero stays zero), drawn only for the stored entries.

    Example
    -------
    >>> import torch
    >>> from dgl_rbgt.nn.sparse_features import dropout_values, sparse_rows
    >>> xs = sparse_rows(torch.eye(3))
    >>> dropout_values(xs, torch.nn.Dropout(0.0).eval()).to_dense().equal(torch.eye(3))
    True
    """
    _check_rows(xs)
    return torch.sparse_coo_tensor(xs.indices(), dropout(xs.values()), xs.shape, is_coalesced=True)


def leading_rows(xs: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` rows of sparse ``xs``: a block's destination nodes are its first source
    nodes, so a layer's own-node term needs only these (``xs`` itself when ``n`` covers it).

    Example
    -------
    >>> import torch
    >>> from dgl_rbgt.nn.sparse_features import leading_rows, sparse_rows
    >>> leading_rows(sparse_rows(torch.eye(4)), 2).shape
    torch.Size([2, 4])
    """
    _check_rows(xs)
    if not 0 <= n <= xs.shape[0]:
        raise ValueError(f"n must be in [0, {xs.shape[0]}] (the rows of xs), got {n}")
    return xs if n == xs.shape[0] else xs.narrow_copy(0, 0, n)


def _check_rows(xs) -> None:
    if not (isinstance(xs, torch.Tensor) and xs.is_sparse and xs.dim() == 2):
        raise ValueError(f"xs must be a 2-D sparse COO tensor, got {type(xs).__name__} "
                         f"{getattr(xs, 'layout', '')} with {getattr(xs, 'ndim', 0)} dims")


def _product(xs: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    # A contiguous right factor: with a transposed view torch's COO product is several times
    # slower (CS rows times a 6,805 x 512 weight: 1.9 s against 0.27 s on one core).
    return torch.sparse.mm(xs, weight_t.contiguous())


def _graphconv(conv: GraphConv, graph, xs: torch.Tensor) -> torch.Tensor:
    # GraphConv with norm="both": D_dst^-1/2 A D_src^-1/2 X W + b; W goes first.
    if conv._norm != "both" or conv.weight is None:
        raise ValueError(f"sparse features need GraphConv(norm='both', weight=True), got norm={conv._norm!r}")
    with graph.local_scope():
        src_norm = graph.out_degrees().to(xs.dtype).clamp(min=1).pow(-0.5)
        graph.srcdata["h"] = _product(xs, conv.weight) * src_norm[:, None]
        graph.update_all(fn.copy_u("h", "m"), fn.sum("m", "h"))
        dst_norm = graph.in_degrees().to(xs.dtype).clamp(min=1).pow(-0.5)
        out = graph.dstdata["h"] * dst_norm[:, None]
    out = out if conv.bias is None else out + conv.bias
    return out if conv._activation is None else conv._activation(out)


def _sageconv(conv: SAGEConv, graph, xs: torch.Tensor) -> torch.Tensor:
    # SAGEConv(mean): fc_self(x_dst) + fc_neigh(mean of x_src over in-neighbours); the mean of
    # projected rows is the projection of the mean.
    if conv._aggre_type != "mean":
        raise ValueError(f"sparse features need SAGEConv's 'mean' aggregator, got {conv._aggre_type!r}")
    with graph.local_scope():
        graph.srcdata["h"] = _product(xs, conv.fc_neigh.weight.t())
        graph.update_all(fn.copy_u("h", "m"), fn.mean("m", "neigh"))
        neigh = graph.dstdata["neigh"]
    own = sparse_apply(conv.fc_self, leading_rows(xs, neigh.shape[0]))
    out = own + neigh
    if conv.activation is not None:
        out = conv.activation(out)
    return out if conv.norm is None else conv.norm(out)


def sparse_apply(layer: nn.Module, xs: torch.Tensor, graph=None) -> torch.Tensor:
    """``layer`` applied to the dense rows of sparse ``xs`` (``layer(xs.to_dense())``, or
    ``layer(graph, xs.to_dense())`` for a convolution), computed with sparse-dense products.

    Parameters
    ----------
    layer : torch.nn.Module
        ``nn.Linear``, ``nn.Identity``, ``dgl.nn.GraphConv`` (``norm="both"``),
        ``dgl.nn.SAGEConv`` (``"mean"``, no feature dropout) or ``dgl.nn.GATConv`` (one input
        size, no feature dropout, no residual).
    xs : torch.Tensor
        Sparse COO rows ``(N_src, D_in)`` (:func:`sparse_rows`).
    graph : DGLGraph, optional
        The graph or block of a convolution.

    Returns
    -------
    torch.Tensor
        Dense ``(N, D_out)``; ``(N_dst, D_out)`` for a convolution on a block; GATConv:
        ``(N_dst, heads, D_out)``.

    Example
    -------
    >>> import dgl, torch
    >>> from dgl.nn import SAGEConv
    >>> from dgl_rbgt.nn.sparse_features import sparse_apply, sparse_rows
    >>> g = dgl.rand_graph(20, 60)
    >>> x = (torch.rand(20, 100) < 0.05).float()
    >>> conv = SAGEConv(100, 8, "mean")
    >>> torch.allclose(sparse_apply(conv, sparse_rows(x), g), conv(g, x), atol=1e-5)
    True
    """
    _check_rows(xs)
    if isinstance(layer, nn.Identity):
        return xs.to_dense()
    if isinstance(layer, nn.Linear):
        out = _product(xs, layer.weight.t())
        return out if layer.bias is None else out + layer.bias
    if isinstance(layer, (GraphConv, SAGEConv, GATConv)):
        if graph is None:
            raise ValueError(f"a {type(layer).__name__} needs its graph")
        if isinstance(layer, (SAGEConv, GATConv)) and layer.feat_drop.p > 0:
            raise ValueError(f"sparse features need {type(layer).__name__}(feat_drop=0): apply dropout_values to "
                             "the rows instead")
        kernel = _graphconv if isinstance(layer, GraphConv) else _sageconv if isinstance(layer, SAGEConv) else _gatconv
        return kernel(layer, graph, xs)
    raise ValueError(f"sparse features are computed for {', '.join(c.__name__ for c in SPARSE_FIRST_LAYERS)}; "
                     f"got a first layer of type {type(layer).__name__}")


def _gatconv(conv: GATConv, graph, xs: torch.Tensor) -> torch.Tensor:
    # GATConv: the attention logits a_l . (x_u W) + a_r . (x_v W) and the messages x_u W are all
    # functions of the projected rows X W, so W goes first; the rest is DGL's GATConv.forward.
    if conv.res_fc is not None or hasattr(conv, "fc_src"):
        raise ValueError("sparse features need GATConv(residual=False) with one input size")
    heads, out_feats = conv.attn_l.shape[1:]
    src = _product(xs, conv.fc.weight.t()).view(-1, heads, out_feats)
    dst = src[:graph.num_dst_nodes()]  # a block's destination nodes are its first source nodes
    with graph.local_scope():
        graph.srcdata.update({"ft": src, "el": (src * conv.attn_l).sum(-1, keepdim=True)})
        graph.dstdata["er"] = (dst * conv.attn_r).sum(-1, keepdim=True)
        graph.apply_edges(fn.u_add_v("el", "er", "e"))
        graph.edata["a"] = conv.attn_drop(edge_softmax(graph, conv.leaky_relu(graph.edata.pop("e"))))
        graph.update_all(fn.u_mul_e("ft", "a", "m"), fn.sum("m", "ft"))
        out = graph.dstdata["ft"]
    if conv.has_explicit_bias:
        out = out + conv.bias.view(heads, out_feats)
    return out if conv.activation is None else conv.activation(out)
