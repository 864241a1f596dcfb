"""Synthetic graphs: the contextual stochastic block model (CSBM), the offline default dataset.

Fully vectorised int64 torch code (no Python loop over nodes or edges), so 10 million nodes at
average degree 10 build in about a minute on two cores (about 4 GB peak).
"""
from __future__ import annotations

import logging
from pathlib import Path

import dgl
import torch

from .._checks import check_nonnegative_float, check_positive_int, check_probability
from ..conventions import STORAGE_DTYPES
from .dataset import (DatasetSpec, NodeDataset, check_single_split, check_split_fractions, generated_spec, make_graph,
                      random_split_masks)

__all__ = ["csbm_graph", "load_csbm", "DEFAULT_NUM_NODES", "SPECS"]

logger = logging.getLogger(__name__)



def csbm_graph(
    num_nodes: int,
    num_classes: int = 5,
    avg_degree: float = 10.0,
    homophily: float = 0.8,
    feature_dim: int = 32,
    signal: float = 1.0,
    train_frac: float = 0.5,
    val_frac: float = 0.25,
    seed: int = 0,
    feature_dtype: str = "float32",
) -> dgl.DGLGraph:
    r"""Sample a contextual stochastic block model graph.

    Labels are balanced (a random permutation of ``arange(N) % C``). About
    ``N * avg_degree / 2`` undirected edges are drawn: each picks a uniform source node ``u``,
    then with probability ``homophily`` a partner uniform among the nodes of ``u``'s class, else
    uniform among the nodes of the other classes; edges are symmetrised, duplicates and
    self-loops dropped. So the expected edge homophily (fraction of edges joining same-class
    nodes) is ``homophily`` and the expected average degree ``avg_degree`` (both up to the few
    dropped duplicates and self-loops). Features:

    .. math::
        x_i = s\,\mu_{y_i} + \varepsilon_i,\qquad \varepsilon_i \sim \mathcal{N}(0, I_F),

    with :math:`\mu_c` independent uniform random unit vectors and :math:`s` = ``signal``.
    Masks: a random ``train_frac`` / ``val_frac`` / rest split. Everything comes from one
    ``torch.Generator`` seeded with ``seed``: the same arguments give the same graph.

    Parameters
    ----------
    num_nodes : int
        Number of nodes N (at least ``num_classes``).
    num_classes : int, default 5
        Number of classes C (at least 2).
    avg_degree : float, default 10.0
        Expected number of neighbours per node.
    homophily : float, default 0.8
        Expected fraction of edges whose endpoints share a class, in [0, 1].
    feature_dim : int, default 32
        Feature size F.
    signal : float, default 1.0
        Norm of the class mean vectors (0 makes features pure noise).
    train_frac, val_frac : float, default 0.5, 0.25
        Fractions of nodes in the training and validation sets; the rest is the test set.
    seed : int, default 0
        Seed of the generator.
    feature_dtype : str, default "float32"
        ``"float32"``, ``"float16"`` or ``"bfloat16"``: the features are drawn in float32 and
        stored in this type a chunk of rows at a time, so half-precision features equal the
        float32 ones cast (as :class:`~dgl_rbgt.transforms.CastFeatures` would) without a float32
        copy of all of them ever being held: at 10M nodes and 64 features that copy is 2.4 GB.

    Returns
    -------
    dgl.DGLGraph
        Homogeneous graph with ``ndata`` ``feat`` (N, F) of ``feature_dtype``, ``label`` int64 (N,)
        and bool ``train_mask``, ``val_mask``, ``test_mask``.

    Examples
    --------
    >>> from dgl_rbgt.data import csbm_graph
    >>> g = csbm_graph(1000, num_classes=4, avg_degree=8.0, homophily=0.9, seed=0)
    >>> g.num_nodes(), g.ndata["feat"].shape, g.ndata["label"].max().item()
    (1000, torch.Size([1000, 32]), 3)
    >>> src, dst = g.edges()
    >>> same = (g.ndata["label"][src] == g.ndata["label"][dst]).float().mean().item()
    >>> abs(same - 0.9) < 0.03
    True
    """
    check_positive_int(num_nodes, "num_nodes")
    check_positive_int(num_classes, "num_classes", minimum=2)
    if num_nodes < num_classes:
        raise ValueError(f"num_nodes must be >= num_classes ({num_classes}) so every class has a node, got {num_nodes}")
    avg_degree = check_nonnegative_float(avg_degree, "avg_degree")
    homophily = check_probability(homophily, "homophily", allow_one=True)
    check_positive_int(feature_dim, "feature_dim")
    signal = check_nonnegative_float(signal, "signal")
    train_frac, val_frac = check_split_fractions(train_frac, val_frac)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not isinstance(feature_dtype, str) or feature_dtype not in STORAGE_DTYPES:
        raise ValueError(f"feature_dtype must be one of {list(STORAGE_DTYPES)}, got {feature_dtype!r}")
    dtype = STORAGE_DTYPES[feature_dtype]

    n, c = num_nodes, num_classes
    _check_fits_in_memory(n, avg_degree, feature_dim, dtype.itemsize)
    gen = torch.Generator().manual_seed(seed)

    # Balanced labels: class sizes differ by at most one, so every class is non-empty.
    label = (torch.arange(n, dtype=torch.int64) % c)[torch.randperm(n, generator=gen)]  # (N,)
    # Nodes grouped by class: class k's nodes are by_class[start[k] : start[k] + count[k]].
    by_class = torch.argsort(label, stable=True)  # (N,)
    count = torch.bincount(label, minlength=c)  # (C,)
    start = torch.cumsum(count, 0) - count  # (C,)

    m = int(round(n * avg_degree / 2))  # undirected draws
    src = torch.randint(n, (m,), generator=gen, dtype=torch.int64)  # (M,)
    cls = label[src]  # (M,)
    same = torch.rand(m, generator=gen) < homophily  # (M,)
    u = torch.rand(m, generator=gen, dtype=torch.float64)  # (M,) one uniform per draw
    # Same class: uniform position among count[cls] nodes. Other class: uniform position among
    # the N - count[cls] nodes outside the class; positions at or after start[cls] skip the block.
    size = torch.where(same, count[cls], n - count[cls])  # (M,)
    pos = torch.clamp((u * size).to(torch.int64), max=size - 1)  # (M,) guard u*size rounding to size
    del u
    other = pos + torch.where(pos >= start[cls], count[cls], torch.zeros_like(pos))  # (M,)
    pos = torch.where(same, start[cls] + pos, other)
    dst = by_class[pos]  # (M,)
    del pos, other, same, size, cls

    mu = torch.randn(c, feature_dim, generator=gen, dtype=torch.float32)  # (C, F)
    mu = mu / mu.norm(dim=1, keepdim=True).clamp_min(1e-12)  # unit directions
    feat = torch.empty(n, feature_dim, dtype=dtype)  # (N, F)
    for start in range(0, n, _FEATURE_CHUNK):  # in chunks: no (N, F) temporaries (2 x 2.6 GB at 10M x 64)
        rows = slice(start, min(start + _FEATURE_CHUNK, n))
        # Successive draws continue one stream: the chunks' noise is one (N, F) draw's, cut up.
        noise = torch.randn(rows.stop - rows.start, feature_dim, generator=gen, dtype=torch.float32)
        noise.add_(signal * mu[label[rows]])
        if dtype == torch.float16 and bool(noise.abs().max() > _FLOAT16_MAX):
            raise ValueError(f"feature_dtype='float16' cannot hold these features: signal={signal} makes them "
                             f"exceed float16's {_FLOAT16_MAX:,.0f}; use 'bfloat16' or a smaller signal")
        feat[rows] = noise  # cast on the copy
    train, val, test = random_split_masks(n, train_frac, val_frac, gen)
    return make_graph(
        src, dst, n, feat=feat, label=label, train_mask=train, val_mask=val, test_mask=test,
        source="csbm_graph", check_finite=False, feat_dtype=dtype,
    )


#: Rows per chunk when the features are drawn.
_FEATURE_CHUNK = 1 << 20

_FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def _check_fits_in_memory(num_nodes: int, avg_degree: float, feature_dim: int, itemsize: int = 4) -> None:
    """Refuse a graph whose generation would exhaust this machine's memory, before allocating.

    About ``itemsize + 4`` bytes per feature entry (the features, and margin for the chunks'
    float32 draws and what the caller does next), 64 per node (labels, masks,
    orderings) and 80 per undirected draw (endpoints, their symmetric copies, temporaries): 7.2 GB
    for 10M nodes, 32 features, degree 10, where 6.7 GB were measured.
    """
    import psutil

    need = num_nodes * ((itemsize + 4) * feature_dim + 64) + num_nodes * avg_degree / 2 * 80
    have = psutil.virtual_memory().available
    if need > have:
        raise ValueError(f"num_nodes={num_nodes} (feature_dim={feature_dim}, avg_degree={avg_degree}) needs "
                         f"about {need / 2**30:.1f} GB to generate, but {have / 2**30:.1f} GB of memory are "
                         f"available; lower num_nodes")


#: ``num_nodes`` used by ``load_dataset("csbm")`` when the caller gives none.
DEFAULT_NUM_NODES = 10_000


def load_csbm(spec: DatasetSpec, root: Path, split: int, seed: int, **params) -> NodeDataset:
    """``load_dataset("csbm", seed=..., **params)``: :func:`csbm_graph` wrapped in a NodeDataset.

    ``params`` are forwarded to :func:`csbm_graph` (its defaults apply); ``num_nodes`` defaults
    to :data:`DEFAULT_NUM_NODES`.

    Examples
    --------
    >>> from dgl_rbgt.data import load_dataset
    >>> ds = load_dataset("csbm", num_nodes=500, num_classes=3, seed=1)
    >>> ds.graph.num_nodes(), ds.num_classes, ds.source
    (500, 3, 'generated')
    """
    check_single_split(spec.name, split)
    params.setdefault("num_nodes", DEFAULT_NUM_NODES)
    graph = csbm_graph(**params, seed=seed)
    num_classes = int(graph.ndata["label"].max()) + 1  # balanced labels: every class occurs
    return NodeDataset(name=spec.name, graph=graph, num_classes=num_classes, metric="accuracy", split=None, source="generated")


SPECS = [generated_spec("csbm", load_csbm, csbm_graph)]
