"""A generated long-range task: the label needs a statistic of far-apart nodes of the same graph.

Many small graphs, batched into one ``DGLGraph`` of disjoint components (``dgl.batch`` sizes are
kept, so global attention stays inside each component), each a ring with short-range edges.
Training, validation and test graphs are disjoint, so nothing about a test graph can be
memorised. Two tasks:

- ``"community"``: every graph draws its own random feature offset per hidden community; a
  node's label is its deviation from its community's offset. Its own features cannot tell the
  offset (it is large and new in every graph), its few ring neighbours are mostly of other
  communities, but the mean over the many same-community nodes of a random group of its graph
  estimates the offset well: what random batch attention sees.
- ``"needle"``: one node per graph holds the graph's label, every node must report it. Exact
  attention always sees that node; random batch attention with groups of ``p`` sees it with
  probability about ``p / nodes_per_graph``: where RBA fails by design.
"""
from __future__ import annotations

from pathlib import Path

import dgl
import torch

from .._checks import check_choice, check_nonnegative_float, check_positive_int
from .dataset import (DatasetSpec, NodeDataset, check_single_split, check_split_fractions, generated_spec, make_graph,
                      random_split_masks)

__all__ = ["longrange_graph", "load_longrange", "TASKS", "SPECS"]

#: The tasks of :func:`longrange_graph`.
TASKS = ("community", "needle")


def longrange_graph(
    num_graphs: int = 200,
    nodes_per_graph: int = 256,
    task: str = "community",
    communities: int = 4,
    num_classes: int = 4,
    feature_dim: int = 8,
    offset_scale: float = 4.0,
    noise: float = 0.0,
    ring_width: int = 2,
    train_frac: float = 0.6,
    val_frac: float = 0.2,
    seed: int = 0,
) -> dgl.DGLGraph:
    r"""Generate the long-range task: ``num_graphs`` ring graphs batched into one ``DGLGraph``.

    Every graph has ``n = nodes_per_graph`` nodes on a ring, each joined to the ``ring_width``
    nearest nodes on either side (degree ``2 * ring_width``). Features are
    ``[code | x]``: a ``K``-wide code, then ``x`` of ``feature_dim`` entries.

    ``task="community"``: each graph's nodes are split at random into ``communities`` equal hidden
    communities (``code`` is the one-hot community: visible, but not what the label is about);
    graph :math:`g` draws an offset :math:`o_{g,c} \sim \mathcal{N}(0, s^2 I)` per community
    (:math:`s` = ``offset_scale``), and

    .. math::
        x_i = o_{g, c(i)} + z_i + \sigma \varepsilon_i, \qquad
        y_i = \big\lfloor C\, \Phi(w^\top z_i) \big\rfloor,
        \qquad z_i, \varepsilon_i \sim \mathcal{N}(0, I),

    with :math:`w` a random unit vector (one per seed), :math:`\Phi` the normal CDF (so the
    :math:`C` = ``num_classes`` classes are balanced) and :math:`\sigma` = ``noise`` (feature noise
    the label does not see). The label is a node's deviation from its community's offset:
    :math:`x_i` alone predicts it barely (the offset dominates when :math:`s \gg 1`), while
    :math:`x_i - \bar x_{g,c(i)}` with :math:`\bar x` the mean over :math:`m` same-community nodes
    predicts it up to an error of standard deviation :math:`1/\sqrt{m}`. A random group of
    :math:`p` nodes of the graph holds about :math:`p / K` of them; the ring neighbourhood of a
    :math:`k`-layer message-passing model about :math:`2 k\,\mathrm{ring\_width} / K`.

    ``task="needle"``: one random node per graph, the needle, carries the graph's label
    :math:`v_g` (uniform over the classes). ``code`` is ``1 + num_classes`` wide: a flag that is 1
    on the needle only, then the one-hot :math:`v_g` on the needle and zeros elsewhere; ``x`` is
    label-free noise of standard deviation ``noise`` (zero by default); every node's label is
    :math:`v_g`. Finding the needle is easy for attention (its key is the only one with the flag),
    so the task measures reach alone: exact attention inside the graph can reach 100%, random
    batch attention with groups of ``p`` about :math:`q + (1 - q)/C` with :math:`q = p / n` the
    chance that a node's group holds the needle, and a ``k``-layer message-passing model about
    :math:`1/C` plus the few nodes within ``k`` ring hops of the needle.

    Masks: a random ``train_frac`` / ``val_frac`` / rest split of the graphs; every node has its
    graph's split. Everything comes from one ``torch.Generator`` seeded with ``seed``.

    Parameters
    ----------
    num_graphs : int, default 200
        Graphs in the batch.
    nodes_per_graph : int, default 256
        Nodes per graph (at least ``communities`` and 2).
    task : str, default "community"
        ``"community"`` or ``"needle"``.
    communities : int, default 4
        Hidden communities per graph (``"community"`` only).
    num_classes : int, default 4
        Classes (at least 2).
    feature_dim : int, default 8
        Width of ``x``.
    offset_scale : float, default 4.0
        Standard deviation :math:`s` of the community offsets (``"community"`` only).
    noise : float, default 0.0
        Standard deviation :math:`\sigma` of the label-free feature noise (``"community"``: added
        to :math:`x`; ``"needle"``: :math:`x` itself).
    ring_width : int, default 2
        Ring neighbours on each side (0: no edges).
    train_frac, val_frac : float, default 0.6, 0.2
        Fractions of graphs for training and validation; the rest are test graphs.
    seed : int, default 0
        Seed of the generator.

    Returns
    -------
    dgl.DGLGraph
        The dataset convention (``feat`` float32, ``label`` int64, bool masks, symmetric edges
        without duplicates or self-loops) with ``batch_num_nodes()`` and ``batch_num_edges()`` of
        the ``num_graphs`` components.

    Examples
    --------
    >>> from dgl_rbgt.data.longrange import longrange_graph
    >>> g = longrange_graph(num_graphs=10, nodes_per_graph=40, seed=0)
    >>> g.num_nodes(), g.batch_size, g.ndata["feat"].shape  # code (4) + x (8)
    (400, 10, torch.Size([400, 12]))
    >>> g.in_degrees().unique().tolist()  # a ring, 2 neighbours each side
    [4]
    >>> needle = longrange_graph(num_graphs=10, nodes_per_graph=40, task="needle", seed=0)
    >>> needle.ndata["feat"].shape, int(needle.ndata["feat"][:, 0].sum())  # flag (1) + value (4) + x (8); one per graph
    (torch.Size([400, 13]), 10)
    """
    check_positive_int(num_graphs, "num_graphs")
    check_choice(task, "task", TASKS)
    check_positive_int(communities, "communities")
    check_positive_int(nodes_per_graph, "nodes_per_graph", minimum=max(2, communities))
    check_positive_int(num_classes, "num_classes", minimum=2)
    check_positive_int(feature_dim, "feature_dim")
    check_positive_int(ring_width, "ring_width", minimum=0)
    check_nonnegative_float(offset_scale, "offset_scale")
    check_nonnegative_float(noise, "noise")
    train_frac, val_frac = check_split_fractions(train_frac, val_frac)
    check_positive_int(seed, "seed", minimum=0)

    gen = torch.Generator().manual_seed(seed)
    g_count, n = num_graphs, nodes_per_graph
    num_nodes = g_count * n
    graph_of = torch.arange(num_nodes) // n  # (N,) the component of every node

    # Ring edges inside each component: local position j -> j + 1 .. j + ring_width (mod n).
    node = torch.arange(num_nodes)
    steps = torch.arange(1, ring_width + 1)
    src = node.repeat_interleave(ring_width)  # (N * w,)
    dst = graph_of.repeat_interleave(ring_width) * n + (src % n + steps.repeat(num_nodes)) % n  # (N * w,)

    if task == "community":
        # Balanced communities: a random permutation of 0..n-1 per graph, mod K.
        community = torch.argsort(torch.rand(g_count, n, generator=gen), dim=1).reshape(-1) % communities  # (N,)
        offsets = offset_scale * torch.randn(g_count, communities, feature_dim, generator=gen)  # (G, K, F)
        deviation = torch.randn(num_nodes, feature_dim, generator=gen)  # (N, F) z
        direction = torch.randn(feature_dim, generator=gen)
        direction = direction / direction.norm().clamp_min(1e-12)  # (F,) w
        x = offsets[graph_of, community] + deviation + noise * torch.randn(num_nodes, feature_dim, generator=gen)
        quantile = torch.special.ndtr((deviation @ direction).double())  # (N,) in (0, 1)
        label = (quantile * num_classes).long().clamp_(max=num_classes - 1)
        code = torch.nn.functional.one_hot(community, communities).float()  # (N, K)
    else:
        value = torch.randint(num_classes, (g_count,), generator=gen)  # (G,) v_g
        needle = torch.arange(g_count) * n + torch.randint(n, (g_count,), generator=gen)  # (G,) node ids
        x = noise * torch.randn(num_nodes, feature_dim, generator=gen)
        label = value[graph_of]
        code = torch.zeros(num_nodes, 1 + num_classes)  # (N, 1 + C): flag, one-hot value
        code[needle, 0] = 1.0
        code[needle, 1 + value] = 1.0

    train, val, test = random_split_masks(g_count, train_frac, val_frac, gen)  # (G,) each
    graph = make_graph(src, dst, num_nodes, feat=torch.cat([code, x], 1), label=label, train_mask=train[graph_of],
                       val_mask=val[graph_of], test_mask=test[graph_of], source="longrange_graph", check_finite=False)
    # make_graph builds one graph; mark the components as dgl.batch would. Its edges are sorted by
    # source, and the components are consecutive node ranges, so edges are grouped by component.
    graph.set_batch_num_nodes(torch.full((g_count,), n, dtype=torch.int64))
    graph.set_batch_num_edges(torch.bincount(graph_of[graph.edges()[0]], minlength=g_count))
    return graph


def load_longrange(spec: DatasetSpec, root: Path, split: int, seed: int, **params) -> NodeDataset:
    """``load_dataset("longrange", seed=..., **params)``: :func:`longrange_graph` as a NodeDataset.

    Examples
    --------
    >>> from dgl_rbgt.data import load_dataset
    >>> ds = load_dataset("longrange", num_graphs=20, nodes_per_graph=50, task="needle", seed=1)
    >>> ds.graph.batch_size, ds.num_classes, ds.source
    (20, 4, 'generated')
    """
    check_single_split(spec.name, split)
    graph = longrange_graph(**params, seed=seed)
    num_classes = params.get("num_classes", spec.params["num_classes"].default)
    return NodeDataset(name=spec.name, graph=graph, num_classes=num_classes, metric="accuracy", split=None,
                       source="generated")


SPECS = [generated_spec("longrange", load_longrange, longrange_graph)]
